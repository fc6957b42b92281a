"""What the bench does differently on each broker, asked of one object per broker instead of
comparing broker names: how the raw ceiling is measured and which of its measurements is the
ceiling, how the queue is read, filled and its message captured, what the goals are.

``BENCH_VENDORS`` has one :class:`BenchVendor` per lab vendor (``lab.harness.vendors.VENDORS``,
itself one per profile of ``worker.brokers.PROFILES``), found by the broker's name in
:mod:`lab.experiments.bench.brokers` (``brokers/<broker>.py`` defines ``BENCH_VENDOR``); what is
not bench-specific (the transports a broker has) it asks the lab vendor. A new broker adds its
module there and no registry line: the bench hooks stay with the bench, which is the layer that
knows what a raw ceiling is (the harness below it cannot import them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Protocol

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


class _BenchVendors(Mapping[str, BenchVendor]):
    """broker name -> its bench vendor, in the order of ``VENDORS``. The modules are imported on
    first use: they import this one (BenchVendor), and the bench's own modules (e2e, resources)
    look their hooks up here."""

    def __init__(self) -> None:
        self._loaded: dict[str, BenchVendor] | None = None

    def _vendors(self) -> dict[str, BenchVendor]:
        if self._loaded is None:
            self._loaded = {name: _load(name) for name in VENDORS}
        return self._loaded

    def __getitem__(self, name: str) -> BenchVendor:
        return self._vendors()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._vendors())

    def __len__(self) -> int:
        return len(self._vendors())


def _load(name: str) -> BenchVendor:
    module = f"lab.experiments.bench.brokers.{name}"
    try:
        vendor = import_module(module).BENCH_VENDOR
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise LookupError(f"the bench has no hooks for broker {name!r}: add {module} with BENCH_VENDOR") from None
    if not isinstance(vendor, BenchVendor) or vendor.name != name:
        raise TypeError(f"{module}.BENCH_VENDOR must be the BenchVendor of {name!r}, not {vendor!r}")
    return vendor


#: broker name -> its bench vendor, one per lab vendor.
BENCH_VENDORS: Mapping[str, BenchVendor] = _BenchVendors()


def bench_vendor(broker: str) -> BenchVendor:
    try:
        return BENCH_VENDORS[broker]
    except KeyError:
        raise ValueError(f"the bench has no vendor for broker {broker!r} (has {', '.join(BENCH_VENDORS)})") from None


__all__ = ["BENCH_VENDORS", "REDIS_TRANSPORTS", "BenchVendor", "bench_vendor"]
