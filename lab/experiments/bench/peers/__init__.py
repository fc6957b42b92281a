"""What users would otherwise run, measured beside brokerstack in the same bench run: the peers.

Per repetition, alternated (A B C D, D C B A, ...) so that a machine that drifts weighs on all
alike, the same no-op backlog (``tasks``) is published and drained by one fresh worker of:

* ``brokerstack_defaults``: brokerstack with its defaults (prefetch 1, late acks, STARTED and
  SUCCESS stored), on the run's transport;
* ``celery_defaults``: stock Celery with the same Celery settings (:mod:`.stock_celery`: kombu's own
  transport, Celery's own consumer and Redis result backend);
* ``dramatiq_defaults``: Dramatiq with its own defaults (:mod:`.dramatiq_actors`: its broker for
  the bench's broker, one process, its default thread count, no results, acks after the run);
* ``brokerstack_fire_and_forget``: brokerstack with no result stored and the throughput prefetch.

brokerstack and stock Celery run the pool ``peers_pool`` (with ``concurrency`` where it has one).
Executions are counted the same way for every system: the broker's count of the queue's messages
(the bench vendor's reader for Celery's queue; Dramatiq's queue read the same way on its broker),
from its first drop to empty. The goals are the issue's (``GOALS``), each judged against the noise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from lab.experiments.bench import e2e
from lab.experiments.bench.e2e import AmqpQueueDepth, Depth
from lab.experiments.bench.peers import dramatiq_actors, stock_celery
from lab.experiments.bench.stats import compare, latency_ms, median_of_runs, rate
from lab.harness.processes import CeleryWorker, ManagedProcess
from worker.brokers import BrokerProfile, RabbitMQProfile, RedisProfile, profile_for
from worker.topology import WORK_QUEUES

#: The systems of a peers run, in the order of the first repetition.
SYSTEMS: tuple[str, ...] = (
    "brokerstack_defaults",
    "celery_defaults",
    "dramatiq_defaults",
    "brokerstack_fire_and_forget",
)
#: The issue's goals (issue 17): (name, ours, theirs, least ratio of ours to theirs).
GOALS: tuple[tuple[str, str, str, float], ...] = (
    ("defaults_vs_dramatiq", "brokerstack_defaults", "dramatiq_defaults", 0.8),
    ("defaults_vs_celery", "brokerstack_defaults", "celery_defaults", 1.0),
    ("fire_and_forget_vs_dramatiq", "brokerstack_fire_and_forget", "dramatiq_defaults", 1.0),
)
#: What stock Celery runs on where the broker has a choice of transports (the lab vendor's): kombu's own.
STOCK_TRANSPORT = "kombu"
#: How a drain is counted, as the record states it.
COUNTED = "messages of the system's queue held by the broker, from the first drop to empty (the bench vendor's reader)"

#: The goal verdicts; "no difference" and "unknown" are stats.compare's own.
MET, MISSED = "met", "missed"


class DramatiqRedisDepth:
    """Dramatiq's messages in Redis: its ``<namespace>:<queue>.msgs`` hash holds every message from
    enqueue to ack (ready and delivered alike), as brokerstack's reader counts ready + unacked."""

    def __init__(self, url: str, queue: str = dramatiq_actors.QUEUE, namespace: str = "dramatiq") -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=10)
        self._key = f"{namespace}:{queue}.msgs"
        self._namespace = namespace

    def __call__(self) -> int:
        return int(self._client.hlen(self._key))

    def purge(self) -> None:
        keys = list(self._client.scan_iter(f"{self._namespace}:*"))
        if keys:
            self._client.delete(*keys)

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class DramatiqBroker:
    """Dramatiq on one broker: its broker class ("module:Class") and how its queue is read."""

    class_path: str
    depth: Callable[[str], Depth]


#: Dramatiq's own broker per brokerstack broker profile (a new broker adds its line here).
DRAMATIQ_BROKERS: dict[type[BrokerProfile], DramatiqBroker] = {
    RedisProfile: DramatiqBroker("dramatiq.brokers.redis:RedisBroker", DramatiqRedisDepth),
    RabbitMQProfile: DramatiqBroker(
        "dramatiq.brokers.rabbitmq:RabbitmqBroker", lambda url: AmqpQueueDepth(url, dramatiq_actors.QUEUE)
    ),
}


def dramatiq_broker(profile: BrokerProfile) -> DramatiqBroker:
    for cls in type(profile).__mro__:
        if cls in DRAMATIQ_BROKERS:
            return DRAMATIQ_BROKERS[cls]
    raise ValueError(f"no Dramatiq broker for {type(profile).__name__} (DRAMATIQ_BROKERS)")


def dramatiq_default_threads() -> int:
    """The worker threads per process Dramatiq's command runs when not told (its own default)."""
    import dramatiq.cli

    return int(dramatiq.cli.make_argument_parser().parse_args([dramatiq_actors.__name__]).threads)


def judge(ours: dict[str, Any], theirs: dict[str, Any], goal: float) -> dict[str, Any]:
    """``ours`` against ``goal`` x ``theirs`` (repeated rates), by ``stats.compare``: "met" when our
    whole range is above theirs scaled by the goal, "missed" when below it, "no difference" when
    the ranges overlap (the goal is inside the noise), "unknown" with fewer than two repetitions."""
    compared = compare(("ours", ours), ("theirs", theirs), goal=goal)
    verdict = {"ours": MET, "theirs": MISSED}.get(compared["faster"] or "", compared["verdict"])
    return {
        "goal": goal,
        "ratio": compared["ratio"],
        "verdict": verdict,
        "met": {MET: True, MISSED: False}.get(verdict),
    }


class WorkerWatch:
    """A queue reader that fails at once when the worker draining the queue has died (instead of
    waiting out the drain's timeout with nobody consuming)."""

    def __init__(self, depth: Depth, worker: ManagedProcess) -> None:
        self.depth = depth
        self.worker = worker

    def __call__(self) -> int:
        if not self.worker.is_running():
            tail = self.worker.logs()[-2000:]
            raise RuntimeError(f"{self.worker.name} exited ({self.worker.returncode}) while draining: {tail}")
        return self.depth()

    def purge(self) -> None:
        self.depth.purge()

    def close(self) -> None:
        self.depth.close()


@dataclass
class Contender:
    """One system of a peers run: how its backlog is published, its worker started, its queue read."""

    describe: dict[str, Any]
    publish: Callable[[int], dict[str, Any]]
    worker: Callable[[], ManagedProcess]
    depth: Callable[[], Depth]
    close: Callable[[], None] = lambda: None


class StockCeleryWorker(CeleryWorker):
    """``celery -A lab.experiments.bench.peers.stock_celery worker``: the CeleryWorker's command
    line on the stock app."""

    def __init__(self, env: dict[str, str], **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.argv[self.argv.index("-A") + 1] = stock_celery.__name__


class PeersRun:
    """The peers section of one bench run (``run`` is the :class:`BenchRun`: its stack, settings,
    producers, queue reader and process bookkeeping)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.params = run.params
        self.pool = self.params.peers_pool
        self.concurrency = run._concurrency(self.pool)

    def measure(self) -> dict[str, Any]:
        p = self.params
        contenders: dict[str, Contender] = {}
        try:
            contenders = {key: getattr(self, f"_{key}")() for key in SYSTEMS}
            enqueues: dict[str, list[dict[str, Any]]] = {key: [] for key in SYSTEMS}
            consumes: dict[str, list[dict[str, Any]]] = {key: [] for key in SYSTEMS}
            order: list[dict[str, Any]] = []
            for repeat in range(p.repeats):
                for key in SYSTEMS if repeat % 2 == 0 else tuple(reversed(SYSTEMS)):
                    enqueue, consume = self._drain(key, contenders[key])
                    enqueues[key].append(enqueue)
                    consumes[key].append(consume)
                    order.append({"system": key, "repeat": repeat + 1, "per_s": consume["per_s"]})
                    self.run._advance(
                        "peers", f"{key}, repetition {repeat + 1}/{p.repeats}: {consume['per_s']} tasks/s"
                    )
        finally:
            for contender in contenders.values():
                contender.close()
        systems = {
            key: {
                **contenders[key].describe,
                "enqueue": median_of_runs(enqueues[key]),
                "consume": median_of_runs(consumes[key]),
            }
            for key in SYSTEMS
        }
        goals = {
            name: {"ours": ours, "theirs": theirs, **judge(systems[ours]["consume"], systems[theirs]["consume"], goal)}
            for name, ours, theirs, goal in GOALS
        }
        return {
            "tasks": p.tasks,
            "task": e2e.NOOP,
            "repeats": p.repeats,
            "pool": self.pool,
            "concurrency": self.concurrency,
            "counted": COUNTED,
            "systems": systems,
            "goals": goals,
            "drain_order": order,
        }

    def _drain(self, key: str, contender: Contender) -> tuple[dict[str, Any], dict[str, Any]]:
        p, run = self.params, self.run
        depth = contender.depth()
        depth.purge()
        run._emit("peers", f"{key}: publishing {p.tasks} tasks", force=True)
        enqueue = contender.publish(p.tasks)
        worker = contender.worker()
        if worker not in run._owned.processes:
            run._owned.processes.append(worker)
        try:
            run._emit("peers", f"{key}: draining {p.tasks} tasks", force=True)
            worker.start()
            watched = WorkerWatch(depth, worker)
            consume, _, _ = e2e.drain(watched, p.tasks, p.timeout, tick=run._tick, max_seconds=p.drain_max_seconds)
        finally:
            worker.stop(timeout=20)
            run._owned.processes.remove(worker)
        if consume["truncated"]:
            depth.purge()
        return enqueue, consume

    # --- the systems -----------------------------------------------------------------------------

    def _brokerstack(self, *, fire_and_forget: bool) -> Contender:
        run, p = self.run, self.params
        transport = run.primary_transport
        overrides = {"worker_prefetch_multiplier": p.throughput_prefetch} if fire_and_forget else {}
        settings = run._settings(**overrides, **run._transport_override(transport))
        producer = run.producers[transport]
        return Contender(
            describe={
                "system": "brokerstack",
                "version": _version("brokerstack"),
                "settings": "fire-and-forget" if fire_and_forget else "defaults",
                "transport": transport,
                "pool": self.pool,
                "concurrency": self.concurrency,
                "prefetch_multiplier": settings.worker_prefetch_multiplier,
                "acks_late": True,
                "results_stored": not fire_and_forget,
            },
            publish=lambda n: e2e.publish_backlog(producer, n, tick=run._tick, ignore_result=fire_and_forget),
            worker=lambda: run._worker(settings, self.pool, self.concurrency, transport),
            depth=lambda: run.depth,
        )

    def _brokerstack_defaults(self) -> Contender:
        return self._brokerstack(fire_and_forget=False)

    def _brokerstack_fire_and_forget(self) -> Contender:
        return self._brokerstack(fire_and_forget=True)

    def _celery_defaults(self) -> Contender:
        from worker.celery_app import create_celery

        run = self.run
        transport = STOCK_TRANSPORT if run.vendor.transports else None
        settings = run._settings(**run._transport_override(transport))
        config = stock_celery.stock_config(settings)
        # The backlog goes through brokerstack's producer-only app on the same transport: the same
        # message, and a producer that subscribes to no result channel (stock Celery's would, one
        # per task, which would add to what the worker's PUBLISHes cost).
        owned = transport not in run.producers
        producer = (
            create_celery(settings, main="bench-producer-stock", producer_only=True)
            if owned
            else run.producers[transport]
        )
        return Contender(
            describe={
                "system": "celery",
                "version": _version("celery"),
                "settings": "brokerstack's defaults",
                "transport": transport,
                "kombu_transport": _kombu_transport(config),
                "consumer": "celery's",
                "result_backend": "celery's",
                "pool": self.pool,
                "concurrency": self.concurrency,
                "prefetch_multiplier": config["worker_prefetch_multiplier"],
                "acks_late": bool(config["task_acks_late"]),
                "track_started": bool(config["task_track_started"]),
                "results_stored": not config.get("task_ignore_result", False),
            },
            publish=lambda n: e2e.publish_backlog(producer, n, tick=run._tick),
            worker=lambda: StockCeleryWorker(
                settings.to_env(),
                queues=WORK_QUEUES,
                pool=self.pool,
                concurrency=self.concurrency,
                name=f"bench-stock-{self.pool}",
                log_dir=run.workdir / "logs",
            ),
            depth=lambda: run.depth,
            close=producer.close if owned else (lambda: None),
        )

    def _dramatiq_defaults(self) -> Contender:
        run = self.run
        hook = dramatiq_broker(profile_for(run.settings))
        url = run.stack.broker_url
        depths: list[Depth] = []

        def depth() -> Depth:
            if not depths:
                # Dramatiq declares its queue on the first send: read it only once it exists.
                broker = dramatiq_actors.make_broker(hook.class_path, url)
                try:
                    dramatiq_actors.declare(broker).send()
                finally:
                    broker.close()
                depths.append(hook.depth(url))
            return depths[0]

        def publish(count: int) -> dict[str, Any]:
            # A broker per backlog: an idle one would miss its heartbeats while the others drain.
            broker = dramatiq_actors.make_broker(hook.class_path, url)
            try:
                actor = dramatiq_actors.declare(broker)
                durations: list[float] = []
                started = time.perf_counter()
                for i in range(count):
                    t0 = time.perf_counter()
                    actor.send()
                    durations.append(time.perf_counter() - t0)
                    if i % 500 == 0:
                        run._tick(f"publishing {i}/{count}")
                elapsed = time.perf_counter() - started
            finally:
                broker.close()
            return {**rate(count, elapsed), "producer_threads": 1, "call_latency_ms": latency_ms(durations)}

        def close() -> None:
            for d in depths:
                d.close()

        probe = dramatiq_actors.make_broker(hook.class_path, url)
        middleware = [type(m).__name__ for m in probe.middleware]
        probe.close()

        threads = dramatiq_default_threads()
        return Contender(
            describe={
                "system": "dramatiq",
                "version": _version("dramatiq"),
                "settings": "dramatiq's defaults",
                "broker_class": hook.class_path,
                "queue": dramatiq_actors.QUEUE,
                "processes": 1,
                "threads": threads,
                "middleware": middleware,
                "acks_late": True,
                "results_stored": False,
            },
            publish=publish,
            worker=lambda: ManagedProcess(
                f"bench-dramatiq-{run.run_id}",
                dramatiq_argv(),
                {dramatiq_actors.BROKER_CLASS_ENV: hook.class_path, dramatiq_actors.BROKER_URL_ENV: url},
                run.workdir / "logs",
            ),
            depth=depth,
            close=close,
        )


def dramatiq_argv() -> list[str]:
    """Dramatiq's command on the actors module, imported from its own directory (``--path``) so the
    worker loads Dramatiq and that one module, nothing of brokerstack; one process, its default
    thread count. ``--path`` takes every argument after it, so it comes last."""
    path = Path(dramatiq_actors.__file__)
    return [sys.executable, "-m", "dramatiq", path.stem, "--processes", "1", "--path", str(path.parent)]


def _kombu_transport(config: dict[str, Any]) -> str:
    """The transport kombu loads for the stock app: a class path if the settings name one, else
    the URL's scheme (kombu's own transport for it)."""
    return str(config.get("broker_transport") or str(config["broker_url"]).split("://", 1)[0])


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


__all__ = [
    "DRAMATIQ_BROKERS",
    "GOALS",
    "SYSTEMS",
    "DramatiqBroker",
    "PeersRun",
    "StockCeleryWorker",
    "dramatiq_broker",
    "dramatiq_default_threads",
    "judge",
]
