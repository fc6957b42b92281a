"""Settings for a brokerstack stack running on lab broker nodes."""

from __future__ import annotations

from typing import Any

from lab.harness.nodes import BrokerNode
from worker.settings import Settings, load_settings


def settings_for(broker: BrokerNode, results: BrokerNode | None = None, **overrides: Any) -> Settings:
    """Settings that point a stack at ``broker``, with results (and the outbox) in ``results``
    (a Redis node), or in the broker itself when it is Redis and no results node is given."""
    if broker.kind == "redis":
        urls = {"broker_profile": "redis", "redis_url": broker.url}
        if results is not None:
            urls["result_backend_url"] = results.url
    else:
        if results is None:
            raise ValueError("the rabbitmq profile keeps results in Redis: pass a Redis node as results")
        urls = {"broker_profile": "rabbitmq", "rabbitmq_url": broker.url, "redis_url": results.url}
    return load_settings(environment="test", **urls, **overrides)
