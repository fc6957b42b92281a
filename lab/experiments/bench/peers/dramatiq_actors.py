"""Dramatiq with its own defaults: the peer ``brokerstack bench`` runs beside brokerstack.

``python -m dramatiq lab.experiments.bench.peers.dramatiq_actors --processes 1`` runs it: one
process with Dramatiq's default thread count, Dramatiq's default middleware (no results: Dramatiq
stores none unless told to), acks after the actor ran. The broker is Dramatiq's own for the
bench's broker, named by a class path and a URL in the environment (``BROKER_CLASS_ENV``,
``BROKER_URL_ENV``), so this module knows no broker.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import dramatiq

#: Environment variables the worker process reads: the Dramatiq broker class ("module:Class") and its URL.
BROKER_CLASS_ENV = "BENCH_DRAMATIQ_BROKER_CLASS"
BROKER_URL_ENV = "BENCH_DRAMATIQ_BROKER_URL"
#: The queue of the bench's no-op: not one of brokerstack's, whose RabbitMQ arguments differ from
#: what Dramatiq declares (a second declaration with other arguments is refused).
QUEUE = "bench_dramatiq"
ACTOR = "noop"


def make_broker(class_path: str, url: str) -> Any:
    module, _, name = class_path.partition(":")
    return getattr(importlib.import_module(module), name)(url=url)


def noop() -> None:
    return None


def declare(broker: Any) -> Any:
    """The no-op actor on ``broker`` (the bench's publishing side declares its own)."""
    return dramatiq.actor(broker=broker, actor_name=ACTOR, queue_name=QUEUE)(noop)


if BROKER_CLASS_ENV in os.environ:
    # The worker process: Dramatiq's CLI uses the global broker, the one set here.
    dramatiq.set_broker(make_broker(os.environ[BROKER_CLASS_ENV], os.environ[BROKER_URL_ENV]))
    declare(dramatiq.get_broker())
