"""What the bench does differently on each broker, asked of one object per broker instead of
comparing broker names: how the raw ceiling is measured and which of its measurements is the
ceiling, how the queue is read, filled and its message captured, what the goals are.

``BENCH_VENDORS`` has one :class:`BenchVendor` per profile of ``worker.brokers.PROFILES`` (a fast
test checks the two lists agree); what is not bench-specific (the transports a broker has) it asks
the broker's lab vendor, ``lab.harness.vendors.VENDORS``. A new broker adds its bench vendor here,
next to its lab vendor in ``lab/harness/vendors/<broker>/``: the bench hooks stay with the bench,
which is the layer that knows what a raw ceiling is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lab.experiments.bench import e2e, raw, resources
from lab.experiments.bench.e2e import Depth
from lab.experiments.bench.raw import CapturedMessage, Tick
from lab.harness.vendors import VENDORS, LabVendor

#: The Redis transports an end-to-end run compares (REDIS_TRANSPORT, the lab vendor's): the first is
#: the one the record's top-level end_to_end.pools, API and resources sections were measured on.
REDIS_TRANSPORTS: tuple[str, ...] = VENDORS["redis"].transports


class RawParams(Protocol):
    """The BenchParams fields a raw run reads (the runner's dataclass has them)."""

    @property
    def raw_messages(self) -> int: ...
    @property
    def redis_batch(self) -> int: ...
    @property
    def raw_prefetch(self) -> int: ...
    @property
    def confirm_window(self) -> int: ...


#: One raw run: (broker URL, captured message, params, the profile's queue arguments, tick) -> section.
RawRun = Callable[[str, CapturedMessage, RawParams, dict[str, Any], Tick | None], dict[str, Any]]


@dataclass(frozen=True)
class BenchVendor:
    name: str
    #: The API runs: once per publisher-confirm mode where the broker has confirms, else once (None).
    api_confirm_modes: tuple[bool | None, ...]
    #: Whether the broker confirms publishes: the record then prices them (``raw_confirm_cost``,
    #: ``raw_pipelined_confirm_cost``, ``api_confirm_cost``).
    confirms: bool
    #: The raw client ceiling, the broker's best client at the setup's durability:
    #: (publish without confirms, publish with confirms, consume) measurement names.
    ceiling: tuple[str, str, str]
    #: What the ceiling was before it was the best client (records without ``ceiling[2]``):
    #: (publish without confirms, publish with confirms, consume).
    old_ceiling: tuple[str, str, str]
    #: Pairs of raw measurements whose difference the record judges against the noise (first,
    #: second): what confirms cost, what pipelining and batching gain.
    raw_pairs: tuple[tuple[str, str], ...]
    #: The issue's goal: the best end-to-end drain over the raw consume ceiling, set when that ceiling
    #: was the one-message client (``old_ceiling``), not the batched one.
    goal_e2e_vs_raw_consume: float
    measure_raw: RawRun
    queue_depth: Callable[[str, str], Depth]
    capture: Callable[[Any, str, str], CapturedMessage]
    #: Put ``count`` copies of the captured message on a queue the fast way: (url, message, count,
    #: queue, batch).
    fill: Callable[[str, CapturedMessage, int, str, int], None]
    #: The broker's own figure for the memory its data takes (None: it reports none).
    used_memory: Callable[[str], int | None] | None = None

    @property
    def lab(self) -> LabVendor:
        """What the rest of the lab knows about this broker (``lab.harness.vendors``)."""
        return VENDORS[self.name]

    @property
    def transports(self) -> tuple[str, ...]:
        """The transports an end-to-end run compares, alternated; empty: the broker has one client
        transport (the record's ``transport`` and ``transports`` are then null)."""
        return self.lab.transports

    def ceiling_keys(self, confirms: bool, *, measured: Any = None) -> tuple[str, str]:
        """(publish, consume): the raw measurements brokerstack is compared with. ``measured``: the
        names a record's raw section has; one from before the batched ceiling keeps its figures."""
        publish, publish_confirmed, consume = self.ceiling
        if measured is not None and consume not in measured:
            publish, publish_confirmed, consume = self.old_ceiling
        return (publish_confirmed if confirms else publish), consume


def _redis_raw(url: str, message: CapturedMessage, p: RawParams, _args: dict[str, Any], tick: Tick | None) -> Any:
    return raw.redis_raw(url, message, p.raw_messages, batch=p.redis_batch, tick=tick)


def _amqp_raw(url: str, message: CapturedMessage, p: RawParams, args: dict[str, Any], tick: Tick | None) -> Any:
    return raw.amqp_raw(url, message, p.raw_messages, args, prefetch=p.raw_prefetch, window=p.confirm_window, tick=tick)


BENCH_VENDORS: dict[str, BenchVendor] = {
    "redis": BenchVendor(
        name="redis",
        api_confirm_modes=(None,),
        confirms=False,
        # No confirms: the reply to LPUSH is the acknowledgement, so both publish keys are the pipelined one.
        ceiling=("publish_pipelined", "publish_pipelined", "consume_batched"),
        old_ceiling=("publish", "publish", "consume"),
        raw_pairs=(("publish_pipelined", "publish"), ("consume_batched", "consume")),
        goal_e2e_vs_raw_consume=0.5,
        measure_raw=_redis_raw,
        queue_depth=e2e.RedisQueueDepth,
        capture=e2e.capture_redis_message,
        fill=resources.fill_redis,
        used_memory=resources.redis_used_memory,
    ),
    "rabbitmq": BenchVendor(
        name="rabbitmq",
        api_confirm_modes=(True, False),
        confirms=True,
        ceiling=("publish", "publish_confirm_pipelined", "consume_batched"),
        old_ceiling=("publish", "publish_confirm", "consume"),
        raw_pairs=(
            ("publish", "publish_confirm"),
            ("publish", "publish_confirm_pipelined"),
            ("publish_confirm_pipelined", "publish_confirm"),
            ("consume_batched", "consume"),
            ("consume", "consume_prefetch1"),
        ),
        goal_e2e_vs_raw_consume=0.6,
        measure_raw=_amqp_raw,
        queue_depth=e2e.AmqpQueueDepth,
        capture=e2e.capture_amqp_message,
        fill=resources.fill_amqp,
    ),
}


def bench_vendor(broker: str) -> BenchVendor:
    try:
        return BENCH_VENDORS[broker]
    except KeyError:
        raise ValueError(f"the bench has no vendor for broker {broker!r} (has {', '.join(BENCH_VENDORS)})") from None


__all__ = ["BENCH_VENDORS", "REDIS_TRANSPORTS", "BenchVendor", "bench_vendor"]
