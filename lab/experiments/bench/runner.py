"""One bench run on one setup: start its nodes, measure every section, stop everything, write the record.

Cleanup is in a ``finally`` (success, failure, Ctrl-C, SIGTERM): the stack's nodes, every worker and
API process and the producer connections. A section that fails is recorded with its error and the
run goes on with the next one; the record's ``status`` is then "failed".
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.experiments.bench import api as api_bench
from lab.experiments.bench import e2e, raw, resources
from lab.experiments.bench.peers import SYSTEMS as PEER_SYSTEMS
from lab.experiments.bench.peers import PeersRun
from lab.experiments.bench.records import (
    READABLE_SCHEMAS,
    SCHEMA,
    ApiSection,
    BenchRecord,
    CodeVersion,
    EndToEnd,
    Machine,
    Model,
    PeersSection,
    Ratios,
    RawSection,
    ResourcesSection,
    SectionError,
)
from lab.experiments.bench.stats import compare, median_of_runs, ratio
from lab.experiments.bench.vendors import BENCH_VENDORS, REDIS_TRANSPORTS, BenchVendor, bench_vendor
from lab.harness.interrupts import no_interrupts, sigterm_raises
from lab.harness.nodes import proctree, resolve_driver
from lab.harness.nodes.factory import DriverChoice
from lab.harness.processes import ApiServer, CeleryWorker, ManagedProcess
from lab.harness.results import client_versions, machine, results_dir, write_record
from lab.harness.setups import Setup, get_setup
from lab.harness.stacks import Stack
from worker.brokers import profile_for
from worker.topology import DEFAULT_QUEUE, WORK_QUEUES

log = logging.getLogger(__name__)

CATEGORY = "bench"
POOLS = ("solo", "threads", "prefork", "gevent")
#: The sections of a run, in the order they run; ``peers`` (issue 17) is stock Celery and Dramatiq
#: beside brokerstack, alternated in the same run.
SECTIONS = ("raw", "end_to_end", "api", "resources", "peers")
#: The model each section of the record is read into.
SECTION_MODELS: dict[str, type[Model]] = {
    "raw": RawSection,
    "end_to_end": EndToEnd,
    "api": ApiSection,
    "resources": ResourcesSection,
    "peers": PeersSection,
}
#: The issue's goals: brokerstack's consume rate against the raw client ceiling (set when the ceiling
#: was the one-message client, BRPOP / one ack per message; against the batched ceiling measured now
#: ``meets_goal_e2e`` is stricter than the goal was meant), and what publisher confirms may cost
#: through the API (unconfirmed req/s over confirmed req/s).
GOALS: dict[str, Any] = {
    "e2e_vs_raw_consume": {name: vendor.goal_e2e_vs_raw_consume for name, vendor in BENCH_VENDORS.items()},
    "api_confirm_cost_max": 2.0,
}
#: The two drains of each pool: fire-and-forget with the throughput prefetch, and brokerstack's defaults.
CONFIGS = ("fire_and_forget", "defaults")
#: One drain: its enqueue rate, consume rate and resources.
Drain = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


def available_pools() -> tuple[str, ...]:
    """Every pool whose library is installed: gevent is an extra (``pip install -e '.[gevent]'``)."""
    return tuple(pool for pool in POOLS if pool != "gevent" or importlib.util.find_spec("gevent") is not None)


@dataclass(frozen=True)
class BenchParams:
    """Sizes of a run. ``quick()`` is for CI (checks the records, not the speeds)."""

    mode: str = "full"
    #: Messages per raw-client measurement.
    raw_messages: int = 10_000
    #: Backlog published then drained, per pool.
    tasks: int = 10_000
    pools: tuple[str, ...] = field(default_factory=available_pools)
    #: Worker processes/threads of the threads and prefork pools (solo is always 1).
    concurrency: int = 2
    #: Greenlets of the gevent pool: the walkthrough's ``--pool=gevent --concurrency=100``.
    gevent_concurrency: int = 100
    #: Redis only: the transports measured end to end, alternated in every repetition.
    transports: tuple[str, ...] = REDIS_TRANSPORTS
    #: Drains per pool, configuration and transport; rates are their median and range.
    repeats: int = 3
    #: Prefetch multiplier of the throughput drain, whose tasks are fire-and-forget (no result
    #: stored), like the raw ceiling. The second drain and the latency run use brokerstack's
    #: defaults (prefetch 1, STARTED and SUCCESS stored in the result backend).
    throughput_prefetch: int = 16
    #: Steady-load latency run: tasks per second (capped at half the pool's drain rate) and length.
    latency_rate: float = 200.0
    latency_seconds: float = 10.0
    latency_warmup_tasks: int = 50
    #: uvicorn worker processes, and concurrent clients of the load generator.
    api_workers: tuple[int, ...] = (1, 2)
    api_concurrency: tuple[int, ...] = (1, 8, 32)
    api_duration: float = 6.0
    api_warmup: float = 1.0
    #: Tasks of the backlog whose memory is measured.
    backlog_tasks: int = 100_000
    raw_prefetch: int = 16
    confirm_window: int = 256
    redis_batch: int = 100
    #: A drain is measured for at most this long (a slow pool would otherwise take many minutes).
    drain_max_seconds: float = 20.0
    #: Upper bound for one drain or latency run.
    timeout: float = 600.0
    #: The sections measured (all by default; ``--no-peers`` leaves the peers out).
    sections: tuple[str, ...] = SECTIONS
    #: The pool brokerstack and stock Celery drain with beside Dramatiq (with ``concurrency``): the
    #: issue's headline figure is prefork -c 2, the worker image's pool.
    peers_pool: str = "prefork"

    @classmethod
    def quick(cls) -> BenchParams:
        return cls(
            mode="quick",
            raw_messages=2_000,
            tasks=1_000,
            latency_rate=100.0,
            latency_seconds=2.0,
            latency_warmup_tasks=10,
            api_workers=(1,),
            api_concurrency=(4,),
            api_duration=1.5,
            api_warmup=0.5,
            backlog_tasks=5_000,
            drain_max_seconds=10.0,
            timeout=120.0,
            repeats=2,
        )

    @classmethod
    def full(cls) -> BenchParams:
        return cls()

    def with_tasks(self, tasks: int) -> BenchParams:
        return replace(self, tasks=tasks, raw_messages=tasks)

    def with_options(self, **options: Any) -> BenchParams:
        """These params with every option that is not None replaced (ValueError if invalid)."""
        return replace(self, **{key: value for key, value in options.items() if value is not None})

    def __post_init__(self) -> None:
        unknown = set(self.pools) - set(POOLS)
        if unknown:
            raise ValueError(f"unknown pools {sorted(unknown)}; one of {', '.join(POOLS)}")
        if not self.pools:
            raise ValueError("no pools to measure")
        missing = set(self.pools) - set(available_pools())
        if missing:
            raise ValueError(f"pool {', '.join(sorted(missing))} is not installed: pip install -e '.[gevent]'")
        distinct = len(set(self.transports)) == len(self.transports)
        if not self.transports or set(self.transports) - set(REDIS_TRANSPORTS) or not distinct:
            raise ValueError(f"transports must be distinct ones of {', '.join(REDIS_TRANSPORTS)}: {self.transports}")
        if self.repeats < 1:
            raise ValueError("repeats must be at least 1")
        if self.tasks < 10 or self.raw_messages < 10:
            raise ValueError("tasks must be at least 10")
        if not self.sections or set(self.sections) - set(SECTIONS):
            raise ValueError(f"sections must be some of {', '.join(SECTIONS)}: {self.sections}")
        if "peers" in self.sections and self.peers_pool not in available_pools():
            raise ValueError(f"peers pool {self.peers_pool!r} is not one of {', '.join(available_pools())}")


@dataclass(frozen=True)
class Progress:
    setup: str
    phase: str  # starting | raw | end_to_end | api | resources | closing | done
    message: str
    step: int
    steps: int
    elapsed: float


ProgressCallback = Callable[[Progress], None]


class BenchInterrupted(KeyboardInterrupt):
    """SIGTERM during a run (raised like Ctrl-C so every cleanup path runs)."""


@dataclass
class _Owned:
    processes: list[ManagedProcess] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)


class BenchRun:
    """The bench on one setup. ``run()`` once; everything it started is stopped when it returns."""

    def __init__(
        self,
        setup: str | Setup,
        params: BenchParams | None = None,
        *,
        driver: DriverChoice | None = None,
        progress: ProgressCallback | None = None,
        results: str | Path | None = None,
        write: bool = True,
    ) -> None:
        self.setup = get_setup(setup) if isinstance(setup, str) else setup
        self.vendor: BenchVendor = bench_vendor(self.setup.broker)
        self.params = params or BenchParams()
        self.driver = resolve_driver(driver)
        self.progress_callback = progress
        self.results = Path(results) if results else None
        self.write = write
        self.run_id = secrets.token_hex(4)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"brokerstack-bench-{self.setup.name}-"))
        self.stack = Stack(self.setup, self.driver, self.workdir)
        self._owned = _Owned()
        self._t0 = time.monotonic()
        self._phase = "starting"
        self._step = 0
        self._last_emit = 0.0
        self.path: Path | None = None
        self.record: BenchRecord | None = None
        #: The transports compared end to end (Redis); (None,): one run, no transport choice.
        self.transports: tuple[str | None, ...] = self.params.transports if self.vendor.transports else (None,)
        self.producers: dict[str | None, Any] = {}

    @property
    def primary_transport(self) -> str | None:
        return self.transports[0]

    # --- progress --------------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        p = self.params
        api_runs = len(p.api_workers) * len(self.vendor.api_confirm_modes) * len(p.api_concurrency)
        per_pool = len(self.transports) * (len(CONFIGS) * p.repeats + 1)
        chosen = set(p.sections)
        return (
            2
            + ("raw" in chosen)
            + (per_pool * len(p.pools) if "end_to_end" in chosen else 0)
            + (api_runs * p.repeats if "api" in chosen else 0)
            + ("resources" in chosen)
            + (len(PEER_SYSTEMS) * p.repeats if "peers" in chosen else 0)
        )

    def _advance(self, phase: str, message: str) -> None:
        self._step += 1
        self._emit(phase, message, force=True)

    def _emit(self, phase: str, message: str, *, force: bool = False) -> None:
        self._phase = phase
        now = time.monotonic()
        if self.progress_callback is None or (not force and now - self._last_emit < 0.2):
            return
        self._last_emit = now
        self.progress_callback(
            Progress(self.setup.name, phase, message, min(self._step, self.steps), self.steps, round(now - self._t0, 1))
        )

    def _tick(self, message: str) -> None:
        self._emit(self._phase, message)

    # --- running ---------------------------------------------------------------------------------

    def run(self) -> BenchRecord:
        p = self.params
        started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        choice = bool(self.vendor.transports)
        record = BenchRecord(
            schema_=SCHEMA,
            setup=self.setup.name,
            broker=self.setup.broker,
            mode=p.mode,
            status="running",
            # What end_to_end.pools, api and resources ran on; transports: every one end_to_end compares.
            transport=self.primary_transport,
            transports=[t for t in self.transports if t is not None] if choice else None,
            run_id=self.run_id,
            driver=self.driver,
            broker_version=None,
            clients=client_versions(),
            machine=Machine.model_validate(_machine()),
            code=CodeVersion.model_validate(code_version()),
            parameters=self._parameters(),
            started_at=started_at,
            duration_s=None,
            raw=None,
            end_to_end=None,
            api=None,
            resources=None,
            peers=None,
            ratios=None,
            errors=[],
        )
        self.record = record
        with sigterm_raises(BenchInterrupted):
            try:
                self._emit("starting", f"starting {self.setup.name} nodes ({self.driver})", force=True)
                self.stack.start_nodes(aux=True)
                broker = self.stack.broker
                assert broker is not None and self.stack.aux is not None
                record.broker_version = broker.version()
                record.aux_version = self.stack.aux.version()
                self.settings = self.stack.make_settings(**self._transport_override(self.primary_transport))
                record.parameters["settings"] = _settings_summary(self.settings)
                self._advance("starting", "nodes ready")
                from worker.celery_app import create_celery

                # A producer per transport: each transport is measured with its own publish path
                # (brokerstack's rings a doorbell with every message, kombu's does not).
                for transport in self.transports:
                    settings = self._settings(**self._transport_override(transport))
                    producer = create_celery(settings, main=f"bench-producer-{transport or 'amqp'}", producer_only=True)
                    self._owned.closers.append(producer.close)
                    self.producers[transport] = producer
                self.producer = self.producers[self.primary_transport]
                declare_topology(self.producer)
                self.depth = e2e.QueueDepth(self.setup.broker, self.stack.broker_url)
                self._owned.closers.append(self.depth.close)
                self.depth.purge()
                self.message = e2e.capture_message(self.producer, self.setup.broker, self.stack.broker_url)
                record.parameters["message_bytes"] = self.message.size
                self._advance("starting", f"captured a {self.message.size}-byte noop message")

                for section, fn in (
                    ("raw", self._raw),
                    ("end_to_end", self._end_to_end),
                    ("api", self._api),
                    ("resources", self._resources),
                    ("peers", self._peers),
                ):
                    if section not in p.sections:
                        continue
                    model = SECTION_MODELS[section]
                    try:
                        setattr(record, section, model.model_validate(fn()))
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:
                        log.exception("bench section %s failed", section)
                        error = f"{type(exc).__name__}: {exc}"
                        setattr(record, section, model.model_validate({"error": error}))
                        record.errors.append(
                            SectionError(section=section, error=error, traceback=traceback.format_exc(limit=6))
                        )
                        self._purge_quietly()
                record.ratios = compute_ratios(record)
                record.status = "failed" if record.errors else "completed"
            except KeyboardInterrupt:
                record.status = "interrupted"
                raise
            except BaseException as exc:
                record.status = "failed"
                record.errors.append(
                    SectionError(
                        section="setup",
                        error=f"{type(exc).__name__}: {exc}",
                        traceback=traceback.format_exc(limit=6),
                    )
                )
                raise
            finally:
                with no_interrupts():
                    self._emit("closing", "stopping everything", force=True)
                    self.close()
                    record.duration_s = round(time.monotonic() - self._t0, 1)
                    if self.write and record.status != "interrupted":
                        self.path = self._write(record)
                        record.path = str(self.path)
        self._step = self.steps
        self._emit("done", f"done in {record.duration_s} s", force=True)
        return record

    def close(self) -> None:
        """Stop everything this run started (idempotent)."""
        while self._owned.processes:
            proc = self._owned.processes.pop()
            try:
                proc.stop(timeout=10)
            except Exception as exc:  # noqa: BLE001
                log.warning("stopping %s failed: %r", proc.name, exc)
        while self._owned.closers:
            closer = self._owned.closers.pop()
            try:
                closer()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing failed: %r", exc)
        self.stack.close(on_error=lambda what, exc: log.warning("closing %s failed: %r", what, exc))

    # --- sections --------------------------------------------------------------------------------

    def _raw(self) -> dict[str, Any]:
        """Every raw measurement ``repeats`` times, alternated (each run does all of them once), so
        each rate is a median with its range like the end-to-end ones."""
        p = self.params
        self._emit("raw", "raw client ceiling", force=True)
        arguments = profile_for(self.settings).queue_arguments(DEFAULT_QUEUE)
        runs = [
            self.vendor.measure_raw(self.stack.broker_url, self.message, p, arguments, self._tick)
            for _ in range(p.repeats)
        ]
        out = raw.repeated(runs)
        out["messages"] = p.raw_messages
        self._advance("raw", "raw client ceiling measured")
        return out

    def _end_to_end(self) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {
            "tasks": p.tasks,
            "task": e2e.NOOP,
            "queues_consumed": list(WORK_QUEUES),
            "prefetch_multiplier": p.throughput_prefetch,
            "results_stored": False,
            "defaults_prefetch_multiplier": self.settings.worker_prefetch_multiplier,
            "repeats": p.repeats,
            "transport": self.primary_transport,
            "pools": {},
            "drain_order": [],
        }
        self._drain_order: list[dict[str, Any]] = out["drain_order"]
        by_transport: dict[str | None, dict[str, Any]] = {t: {} for t in self.transports}
        for pool in p.pools:
            for transport, result in self._one_pool(pool, self._concurrency(pool)).items():
                by_transport[transport][pool] = result
        out["pools"] = by_transport[self.primary_transport]
        if self.vendor.transports:
            out["transports"] = {t: {"pools": pools} for t, pools in by_transport.items()}
            out["comparison"] = transport_comparison(by_transport) if len(self.transports) == 2 else None
        return out

    def _concurrency(self, pool: str) -> int:
        if pool == "solo":
            return 1
        return self.params.gevent_concurrency if pool == "gevent" else self.params.concurrency

    def _one_pool(self, pool: str, concurrency: int) -> dict[str | None, dict[str, Any]]:
        """Both drains and the latency run of one pool, on every transport. The drains of the
        transports alternate (A B, B A, A B, ...), so a machine that drifts (load from elsewhere,
        thermal throttling) weighs on both alike."""
        p = self.params
        aux = self.stack.aux
        assert aux is not None
        results: dict[str | None, dict[str, Any]] = {
            t: {"pool": pool, "concurrency": concurrency} for t in self.transports
        }
        if self.vendor.transports:
            for transport, result in results.items():
                result["transport"] = transport
        for config in CONFIGS:
            ignore_result = config == "fire_and_forget"
            runs: dict[str | None, list[Drain]] = {t: [] for t in self.transports}
            for repeat in range(p.repeats):
                order = self.transports if repeat % 2 == 0 else tuple(reversed(self.transports))
                for transport in order:
                    # Fire-and-forget with the prefetch a throughput-tuned deployment sets, or
                    # brokerstack's defaults (prefetch 1, every result stored).
                    overrides = {"worker_prefetch_multiplier": p.throughput_prefetch} if ignore_result else {}
                    settings = self._settings(**overrides, **self._transport_override(transport))
                    run = self._backlog(pool, concurrency, settings, ignore_result=ignore_result, transport=transport)
                    runs[transport].append(run)
                    self._drain_order.append(
                        {
                            "pool": pool,
                            "config": config,
                            "repeat": repeat + 1,
                            "transport": transport,
                            "per_s": run[1]["per_s"],
                        }
                    )
                    self._advance(
                        "end_to_end",
                        f"{pool}{_on(transport)}: {run[1]['per_s']} tasks/s {_label(config)} "
                        f"({repeat + 1}/{p.repeats})",
                    )
            for transport, measured in runs.items():
                enqueue, consume, res = _summarize(measured)
                if ignore_result:
                    results[transport].update(enqueue=enqueue, consume=consume, resources=res)
                else:
                    results[transport]["defaults"] = {
                        "prefetch_multiplier": self.settings.worker_prefetch_multiplier,
                        "results_stored": True,
                        "enqueue": enqueue,
                        "consume": consume,
                    }

        # Steady load with the ledger on and brokerstack's defaults: latencies. Half the slower
        # transport's drain rate with those defaults keeps the queue short, and both get the same load.
        caps = [(r["defaults"]["consume"]["per_s"] or 0) / 2 for r in results.values()]
        rate_cap = min(caps) if all(caps) else 0
        target = min(p.latency_rate, rate_cap) if rate_cap else p.latency_rate
        for transport in self.transports:
            result = results[transport]
            run_name = f"bench-{self.run_id}-{pool}" + (f"-{transport}" if transport else "")
            settings = self._settings(ledger_url=aux.url, ledger_run=run_name, **self._transport_override(transport))
            worker = self._worker(settings, pool, concurrency, transport)
            self._emit("end_to_end", f"{pool}{_on(transport)}: steady load at {target:g}/s", force=True)
            worker.start()
            worker.wait_ready(timeout=120)
            latency = e2e.steady_latency(
                self.producers[transport],
                aux.url,
                run_name,
                rate_per_s=target,
                seconds=p.latency_seconds,
                warmup_tasks=p.latency_warmup_tasks,
                timeout=p.timeout,
                tick=self._tick,
            )
            latency["rate_capped"] = target < p.latency_rate
            result["latency"] = latency
            worker.stop(timeout=20)
            self._owned.processes.remove(worker)
            self._advance(
                "end_to_end", f"{pool}{_on(transport)}: p99 to finish {latency['enqueue_to_finish_ms']['p99']} ms"
            )
        return results

    def _backlog(
        self, pool: str, concurrency: int, settings: Any, *, ignore_result: bool, transport: str | None
    ) -> Drain:
        """Publish ``tasks`` noops, then drain them with a fresh worker (no ledger): the enqueue
        rate, the consume rate, and what the broker, result backend and worker spent on them."""
        p = self.params
        broker, aux = self.stack.broker, self.stack.aux
        assert broker is not None and aux is not None
        label = f"{_label('fire_and_forget' if ignore_result else 'defaults')}{_on(transport)}"
        self._emit("end_to_end", f"{pool}: publishing {p.tasks} tasks ({label})", force=True)
        self.depth.purge()
        b0 = resources.usage(broker)
        enqueue = e2e.publish_backlog(self.producers[transport], p.tasks, tick=self._tick, ignore_result=ignore_result)
        b1 = resources.usage(broker)
        worker = self._worker(settings, pool, concurrency, transport)
        self._emit("end_to_end", f"{pool}: draining {p.tasks} tasks ({label})", force=True)
        worker.start()

        def probes() -> dict[str, Any]:
            return {
                "broker": resources.usage(broker),
                "aux": resources.usage(aux),
                "worker": proctree.tree_usage(worker.pid) if worker.pid else None,
            }

        consume, at_first, at_end = e2e.drain(
            self.depth, p.tasks, p.timeout, tick=self._tick, probes=probes, max_seconds=p.drain_max_seconds
        )
        consume["prefetch_multiplier"] = settings.worker_prefetch_multiplier
        consume["results_stored"] = not ignore_result
        worker.stop(timeout=20)
        self._owned.processes.remove(worker)
        if consume["truncated"]:
            self.depth.purge()
        assert at_first is not None and at_end is not None
        drained = consume["messages"]
        publish = resources.per_10k(b0, b1, p.tasks)
        drain = resources.per_10k(at_first["broker"], at_end["broker"], drained)
        res = {
            "broker_publish": publish,
            "broker_consume": drain,
            "broker_total_cpu_s_per_10k": _sum_cpu(publish, drain),
            "broker_rss_bytes": {
                "before": b0["rss_bytes"],
                "backlog": b1["rss_bytes"],
                "drained": at_end["broker"]["rss_bytes"],
            },
            "result_backend_cpu_s_per_10k": resources.per_10k(at_first["aux"], at_end["aux"], drained)["cpu_s_per_10k"],
            "worker_cpu_s_per_10k": None,
        }
        if at_first.get("worker") and at_end.get("worker"):
            worker_use = resources.per_10k(at_first["worker"], at_end["worker"], drained)
            res["worker_cpu_s_per_10k"] = worker_use["cpu_s_per_10k"]
        return enqueue, consume, res

    def _worker(self, settings: Any, pool: str, concurrency: int, transport: str | None = None) -> CeleryWorker:
        worker = CeleryWorker(
            settings.to_env(),
            queues=WORK_QUEUES,
            pool=pool,
            concurrency=concurrency,
            name=f"bench-{pool}" + (f"-{transport}" if transport else ""),
            log_dir=self.workdir / "logs",
        )
        self._owned.processes.append(worker)
        return worker

    def _settings(self, **overrides: Any) -> Any:
        """The setup's settings with ``overrides``, leaving the stack's own settings the run's base ones."""
        settings = self.stack.make_settings(**overrides)
        if getattr(self, "settings", None) is not None:
            self.stack.settings = self.settings
        return settings

    def _transport_override(self, transport: str | None) -> dict[str, Any]:
        return {} if transport is None else {"redis_transport": transport}

    def _api(self) -> dict[str, Any]:
        """Every API configuration ``repeats`` times, the configurations alternated (reversed every
        other repetition, as the drains are), so confirms on and off meet the same machine; each
        level's rate is the median of its repetitions with their range."""
        p = self.params
        configurations = [(workers, confirm) for workers in p.api_workers for confirm in self.vendor.api_confirm_modes]
        levels: dict[tuple[int, bool | None, int], list[dict[str, Any]]] = {}
        for repeat in range(p.repeats):
            for uvicorn_workers, confirm in configurations if repeat % 2 == 0 else reversed(configurations):
                label = f"{uvicorn_workers} uvicorn worker(s)"
                if confirm is not None:
                    label += f", confirms {'on' if confirm else 'off'}"
                label += f" ({repeat + 1}/{p.repeats})"
                self._emit("api", f"starting the API: {label}", force=True)
                for concurrency, level in self._api_levels(uvicorn_workers, confirm, label):
                    levels.setdefault((uvicorn_workers, confirm, concurrency), []).append(level)
        return {
            "endpoint": "POST /tasks/noop",
            "load_generator": api_bench.LOAD_GENERATOR,
            "consumers": 0,
            "duration_s": p.api_duration,
            "warmup_s": p.api_warmup,
            "runs": [
                {
                    "uvicorn_workers": workers,
                    "confirm_publish": confirm,
                    "concurrency": concurrency,
                    **median_of_runs(runs, key="rps"),
                }
                for (workers, confirm, concurrency), runs in levels.items()
            ],
        }

    def _api_levels(
        self, uvicorn_workers: int, confirm: bool | None, label: str
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """One API process with these settings, loaded at every client concurrency in turn."""
        p = self.params
        overrides = {} if confirm is None else {"rabbitmq_confirm_publish": confirm}
        settings = self._settings(**overrides, **self._transport_override(self.primary_transport))
        server = ApiServer(settings.to_env(), log_dir=self.workdir / "logs", workers=uvicorn_workers)
        self._owned.processes.append(server)
        server.start()
        server.wait_ready(timeout=60)
        try:
            for concurrency in p.api_concurrency:
                self._emit("api", f"{label}: {concurrency} clients", force=True)
                level = api_bench.measured_level(
                    server.url, server.pid, concurrency=concurrency, duration=p.api_duration, warmup=p.api_warmup
                )
                self.depth.purge()
                self._advance("api", f"{label}, {concurrency} clients: {level['rps']} req/s")
                yield concurrency, level
        finally:
            server.stop(timeout=15)
            self._owned.processes.remove(server)

    def _peers(self) -> dict[str, Any]:
        """Stock Celery and Dramatiq beside brokerstack (lab.experiments.bench.peers)."""
        return PeersRun(self).measure()

    def _resources(self) -> dict[str, Any]:
        p = self.params
        broker = self.stack.broker
        assert broker is not None
        self._emit("resources", f"backlog of {p.backlog_tasks} tasks", force=True)
        backlog = resources.backlog_memory(
            broker, self.setup.broker, self.stack.broker_url, self.message, p.backlog_tasks, self.depth
        )
        out: dict[str, Any] = {
            "broker_idle": resources.usage(broker),
            "backlog": backlog,
            "per_10k_tasks": _per_10k_summary(self.record.end_to_end if self.record else None),
        }
        self._advance("resources", f"backlog of {p.backlog_tasks}: {backlog['rss_growth_bytes']} bytes RSS")
        return out

    # --- helpers ---------------------------------------------------------------------------------

    def _purge_quietly(self) -> None:
        try:
            self.depth.purge()
        except Exception:  # noqa: BLE001
            pass

    def _parameters(self) -> dict[str, Any]:
        params = asdict(self.params)
        params["setup"] = self.setup.describe()
        params["driver"] = self.driver
        params["worker_loglevel"] = "INFO"
        if not self.vendor.transports:
            params["transports"] = None
        return params

    def _write(self, record: BenchRecord) -> Path:
        transports = self.params.transports if self.vendor.transports else None
        name = record_name(self.setup.name, self.driver, self.params.mode, transports, self.params.sections)
        category = CATEGORY if record.status == "completed" else f"{CATEGORY}/failed"
        return write_record(category, name, record, root=self.results)


def declare_topology(app: Any) -> None:
    """The work queues (and on RabbitMQ the dead-letter queue) as brokerstack declares them, so that
    a fresh broker can be purged and measured before any worker ran."""
    from worker.brokers import profile_for as profile_of

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in (*app.conf.task_queues, *profile_of(app.brokerstack_settings).dead_letter_queues()):
            queue(channel).declare()


def code_version() -> dict[str, Any]:
    """The brokerstack commit measured, and which of its files differed from it (None outside git)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", "worker", "services", "lab")
    dirty = None if status is None else sorted(line[3:] for line in status.splitlines() if line[:2].strip() == "M")
    return {"commit": commit, "modified": dirty}


def record_name(
    setup: str,
    driver: str,
    mode: str,
    transports: tuple[str, ...] | None = None,
    sections: tuple[str, ...] = SECTIONS,
) -> str:
    """``<setup>-<driver>`` for full runs, ``<setup>-<driver>-quick`` for quick ones; a Redis run on
    one transport only (``--transport kombu``) adds it, ``-kombu``, so it never replaces a record
    that compares both; a run of some sections only adds them (``-peers``), for the same reason."""
    name = f"{setup}-{driver}" + ("" if mode == "full" else f"-{mode}")
    if transports is not None and tuple(transports) != REDIS_TRANSPORTS:
        name += "-" + "-".join(transports)
    if tuple(sections) != SECTIONS and set(sections) != set(SECTIONS) - {"peers"}:
        name += "-" + "-".join(sections)
    return name


def run_bench(
    setup: str | Setup,
    params: BenchParams | None = None,
    *,
    driver: DriverChoice | None = None,
    progress: ProgressCallback | None = None,
    results: str | Path | None = None,
) -> dict[str, Any]:
    """Run the bench on ``setup``; returns the record as written under the results dir (the JSON
    object: what ``brokerstack bench --json`` prints)."""
    return BenchRun(setup, params, driver=driver, progress=progress, results=results).run().to_dict()


# --- ratios ------------------------------------------------------------------------------------------


def compute_ratios(record: BenchRecord) -> Ratios:
    """Brokerstack against the raw client ceiling, from a record's sections."""
    vendor = bench_vendor(record.broker)
    raw_section = record.raw or RawSection()
    confirm = bool((record.parameters.get("settings") or {}).get("RABBITMQ_CONFIRM_PUBLISH"))
    # The ceiling is the broker's best client at the setup's durability; a record from before it was
    # measured (no batched consume in it) keeps the one-message-per-round-trip figures it has.
    measured = {name for name in raw_section.to_dict() if raw_section.rate(name) is not None}
    raw_publish_key, raw_consume_key = vendor.ceiling_keys(confirm, measured=measured)
    raw_consume = _per_s(raw_section.rate(raw_consume_key))
    raw_publish = _per_s(raw_section.rate(raw_publish_key))
    pools = record.pools
    # Five digits: against the batched ceiling a drain storing its results can be 1/1,000 of it.
    consume = {pool: ratio(_per_s(r.consume), raw_consume, 5) for pool, r in pools.items()}
    with_defaults = {pool: ratio(_per_s(r.drain(defaults=True)), raw_consume, 5) for pool, r in pools.items()}
    enqueue = {pool: ratio(_per_s(r.enqueue), raw_publish) for pool, r in pools.items()}
    reached = {pool: value for pool, value in consume.items() if value is not None}
    best_pool = max(reached, key=lambda pool: reached[pool], default=None)
    goal = vendor.goal_e2e_vs_raw_consume
    unconfirmed = _per_s(raw_section.publish)
    out = Ratios(
        raw_consume_per_s=raw_consume,
        raw_publish_per_s=raw_publish,
        raw_publish_basis=raw_publish_key,
        raw_consume_basis=raw_consume_key,
        e2e_vs_raw_consume=consume,
        e2e_defaults_vs_raw_consume=with_defaults,
        best_pool=best_pool,
        e2e_vs_raw_consume_best=consume.get(best_pool) if best_pool else None,
        enqueue_vs_raw_publish=enqueue,
        goal_e2e_vs_raw_consume=goal,
        meets_goal_e2e=None if best_pool is None else reached[best_pool] >= goal,
        raw_confirm_cost=ratio(unconfirmed, _per_s(raw_section.publish_confirm), 2) if vendor.confirms else None,
        raw_pipelined_confirm_cost=ratio(unconfirmed, _per_s(raw_section.publish_confirm_pipelined), 2)
        if vendor.confirms
        else None,
        api_confirm_cost=None,
        api_confirm_cost_by_concurrency=None,
        goal_api_confirm_cost_max=GOALS["api_confirm_cost_max"],
        meets_goal_api_confirm_cost=None,
        brokerstack_vs_kombu=None,
    )
    out.raw_verdicts = raw_verdicts(vendor, raw_section)
    comparison = record.end_to_end.comparison if record.end_to_end else None
    if comparison:
        out.brokerstack_vs_kombu = {
            config: {pool: _ratio_of(entry.config(config)) for pool, entry in comparison.items()} for config in CONFIGS
        }
    if vendor.confirms:
        _api_confirm_cost(out, record.api.runs if record.api else [])
    if record.peers and record.peers.goals:
        out.peers = {name: goal.ratio for name, goal in record.peers.goals.items()}
        out.peers_verdicts = {name: goal.verdict for name, goal in record.peers.goals.items()}
    return out


def _per_s(rate: Any) -> float | None:
    return rate.per_s if rate is not None else None


def _ratio_of(pair: Any) -> float | None:
    return pair.ratio if pair is not None else None


def _api_confirm_cost(out: Ratios, runs: list[Any]) -> None:
    """Unconfirmed over confirmed API req/s per client concurrency, with the fewest uvicorn workers."""
    by_level: dict[str, float | None] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    workers = sorted({r.uvicorn_workers for r in runs if r.uvicorn_workers is not None})
    w = workers[0] if workers else None
    for run in runs:
        if run.uvicorn_workers != w or run.confirm_publish is not True:
            continue
        off = next(
            (
                o
                for o in runs
                if o.uvicorn_workers == w and o.confirm_publish is False and o.concurrency == run.concurrency
            ),
            None,
        )
        if off is not None:
            by_level[str(run.concurrency)] = ratio(off.rps, run.rps, 2)
            verdicts[str(run.concurrency)] = compare(
                ("unconfirmed", off.model_dump()), ("confirmed", run.model_dump()), key="rps"
            )
    if by_level:
        top = max(by_level, key=int)
        out.api_confirm_cost_by_concurrency = by_level
        out.api_confirm_cost = by_level[top]
        out.api_confirm_verdict = verdicts[top]
        out.api_confirm_cost_uvicorn_workers = w
        cost = by_level[top]
        if cost is not None:
            out.meets_goal_api_confirm_cost = cost <= GOALS["api_confirm_cost_max"]


def _on(transport: str | None) -> str:
    return f" on {transport}" if transport else ""


def _label(config: str) -> str:
    return config.replace("_", "-")


def _summarize(runs: list[Drain]) -> Drain:
    """Repeated (enqueue, consume, resources) of one drain as one: median rates with their range,
    and the resources of the drain nearest the median consume rate."""
    enqueue = median_of_runs([run[0] for run in runs])
    consume = median_of_runs([run[1] for run in runs])
    middle = consume["per_s"]
    nearest = min(range(len(runs)), key=lambda i: abs((runs[i][1]["per_s"] or 0) - (middle or 0)))
    return enqueue, consume, runs[nearest][2]


def raw_verdicts(vendor: BenchVendor, raw_section: RawSection) -> dict[str, Any]:
    """``"<first> vs <second>"`` -> ``compare`` of the two repeated raw rates (ratio and verdict),
    for every pair of the vendor's ``raw_pairs`` that the record measured."""
    out: dict[str, Any] = {}
    for first, second in vendor.raw_pairs:
        a, b = raw_section.rate(first), raw_section.rate(second)
        if a is not None and b is not None:
            out[f"{first} vs {second}"] = compare((first, a.to_dict()), (second, b.to_dict()))
    return out


def transport_comparison(by_transport: dict[str | None, dict[str, Any]]) -> dict[str, Any]:
    """brokerstack's Redis transport next to kombu's, per pool: the fire-and-forget and the defaults
    drain rates (medians, ranges, their ratio, whether the difference is outside the noise), the
    enqueue rate, and the steady-load latencies (one run each: no verdict)."""
    (a_name, a_pools), (b_name, b_pools) = by_transport.items()
    assert a_name is not None and b_name is not None
    out: dict[str, Any] = {}
    for pool in a_pools:
        a, b = a_pools[pool], b_pools.get(pool)
        if b is None:
            continue
        entry: dict[str, Any] = {}
        for key, pick in (
            ("fire_and_forget", lambda r: r.get("consume")),
            ("defaults", lambda r: (r.get("defaults") or {}).get("consume")),
            ("enqueue", lambda r: r.get("enqueue")),
        ):
            sa, sb = pick(a) or {}, pick(b) or {}
            entry[key] = {a_name: _spread(sa), b_name: _spread(sb), **compare((a_name, sa), (b_name, sb))}
        finish_a = (a.get("latency") or {}).get("enqueue_to_finish_ms") or {}
        finish_b = (b.get("latency") or {}).get("enqueue_to_finish_ms") or {}
        entry["latency_to_finish_ms"] = {
            a_name: {k: finish_a.get(k) for k in ("p50", "p99")},
            b_name: {k: finish_b.get(k) for k in ("p50", "p99")},
            "ratio_p50": ratio(finish_a.get("p50"), finish_b.get("p50")),
            "ratio_of": f"{a_name} / {b_name}",
            "verdict": "unknown",
        }
        out[pool] = entry
    return out


def _spread(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: summary.get(key) for key in ("per_s", "per_s_min", "per_s_max", "per_s_runs", "repeats")}


def _sum_cpu(*parts: dict[str, Any]) -> float | None:
    values: list[float | None] = [part.get("cpu_s_per_10k") for part in parts]
    measured = [v for v in values if v is not None]
    return round(sum(measured), 4) if len(measured) == len(values) else None


def _per_10k_summary(e2e_section: EndToEnd | None) -> dict[str, Any]:
    """Broker CPU and RSS per 10k tasks, per pool (publish + consume), from the e2e section."""
    out: dict[str, Any] = {}
    for pool, result in (e2e_section.pools if e2e_section else {}).items():
        res = result.resources
        out[pool] = {
            "broker_cpu_s": res.broker_total_cpu_s_per_10k if res else None,
            "broker_rss_growth_bytes_queued": res.broker_publish.rss_growth_bytes_per_10k
            if res and res.broker_publish
            else None,
            "result_backend_cpu_s": res.result_backend_cpu_s_per_10k if res else None,
            "worker_cpu_s": res.worker_cpu_s_per_10k if res else None,
        }
    return out


def _settings_summary(settings: Any) -> dict[str, Any]:
    env = settings.to_env()
    keep = (
        "BROKER_PROFILE",
        "REDIS_TRANSPORT",
        "RABBITMQ_QUEUE_TYPE",
        "RABBITMQ_CONFIRM_PUBLISH",
        "WORKER_PREFETCH_MULTIPLIER",
        "BROKER_POOL_LIMIT",
        "REDIS_VISIBILITY_TIMEOUT",
    )
    out: dict[str, Any] = {}
    for key in keep:
        if key in env:
            value: Any = env[key]
            if value in ("true", "false"):
                value = value == "true"
            elif value.isdigit():
                value = int(value)
            out[key] = value
    if not bench_vendor(settings.broker_profile).transports:
        out.pop("REDIS_TRANSPORT", None)
    return out


def _machine() -> dict[str, Any]:
    info = machine()
    try:
        with open("/proc/meminfo") as fh:
            total_kb = int(fh.readline().split()[1])
        info["memory_bytes"] = total_kb * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


__all__ = [
    "READABLE_SCHEMAS",
    "REDIS_TRANSPORTS",
    "SCHEMA",
    "BenchInterrupted",
    "BenchParams",
    "BenchRun",
    "Progress",
    "ProgressCallback",
    "available_pools",
    "compute_ratios",
    "record_name",
    "results_dir",
    "run_bench",
    "transport_comparison",
]
