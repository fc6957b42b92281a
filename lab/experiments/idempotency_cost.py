"""What the exactly-once guarantee (``IdempotentTask``) costs per task, on both brokers.

The same no-op with and without it, drained by one solo worker from a backlog: ``noop`` (no
guarantee, no effect) and ``guarded_noop`` (the guarantee, and its one effect: an outbox entry
committed with the claim). Counted on the servers (``INFO commandstats`` of the result backend's
Redis, where the claims and the outbox live, and the broker's counters, as ``task-cost`` does);
timed from the worker's own log (first task received to last one succeeded). The guarded task also
writes its effect (MULTI, RPUSH, LTRIM, EXPIRE, EXEC, as any outbox write does): those are the
effect's own commands, listed apart from what the claim adds.

Counts do not depend on the machine; drain rates do (and the lab machine is shared), so every
figure is the median of alternated repetitions (unguarded, guarded, unguarded, ...) with its range.
Used by ``brokerstack idempotency-cost`` (records in ``<results>/idempotency-cost/``);
lab.report.idempotency renders them.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.experiments.bench.runner import declare_topology
from lab.experiments.task_cost import (
    Counters,
    _flush,
    _spread,
    drain_with_one_worker,
    redis_round_trip_ms,
    succeeded_lines,
)
from lab.harness.nodes import BrokerNode
from lab.harness.results import client_versions, machine, write_record
from worker.celery_app import create_celery
from worker.settings import Settings

SCHEMA = "brokerstack.idempotency-cost/1"
CATEGORY = "idempotency-cost"
#: The task measured in each configuration: the same no-op without and with the guarantee.
CONFIGS: dict[str, str] = {
    "unguarded": "worker.tasks.tools.noop",
    "guarded": "worker.tasks.tools.guarded_noop",
}
TASKS = 1000
REPETITIONS = 3
#: The guarded task's effect (worker.outbox): its commands are the effect's, not the guarantee's.
#: MULTI/EXEC included: the outbox writes an effect in a transaction with or without a claim.
EFFECT_COMMANDS = ("rpush", "ltrim", "expire", "multi", "exec")


@dataclass
class Repetition:
    config: str
    #: Tasks per second one solo worker drained, by its own log.
    drain_per_s: float | None
    #: The worker's CPU time per task (ms).
    cpu_ms: float | None
    #: Commands per task while the worker drained: the result backend's Redis, and the broker's
    #: (Redis commands, or RabbitMQ message operations).
    backend_ops: dict[str, float] = field(default_factory=dict)
    broker_ops: dict[str, float] = field(default_factory=dict)


def measure_once(
    settings: Settings, broker: BrokerNode, config: str, tasks: int, log_dir: Path, tick: Callable[[str], None]
) -> Repetition:
    """Publish ``tasks`` of the configuration's task with no worker running, then drain them with
    one solo worker, counting what the servers served meanwhile."""
    name = CONFIGS[config]
    app = create_celery(settings, producer_only=True)
    counters = Counters(broker, settings.result_backend)
    succeeded = succeeded_lines(name)
    try:
        declare_topology(app)
        app.control.purge()
        before = counters.read()
        task = app.tasks[name]
        for i in range(tasks):
            task.apply_async()
            if i % 500 == 0:
                tick(f"{broker.kind} {config}: publishing {i}/{tasks}")
        # RabbitMQ's counters arrive late: the drain counts from once every publish is in them.
        published = counters.read(publish=before[0].get("publish", 0) + tasks)

        side, span = drain_with_one_worker(
            settings, counters, published, tasks, log_dir, succeeded, tick, label=f"{broker.kind} {config}: "
        )
    finally:
        app.close()
    _flush(settings.result_backend)
    return Repetition(
        config=config,
        drain_per_s=round((tasks - 1) / span, 1) if span else None,
        cpu_ms=side.cpu_ms,
        backend_ops=side.backend_ops,
        broker_ops=side.broker_ops,
    )


def summarize(runs: list[Repetition]) -> dict[str, Any]:
    """Median and range of each figure over one configuration's repetitions."""
    commands = sorted({name for r in runs for name in r.backend_ops})
    broker = sorted({name for r in runs for name in r.broker_ops})
    return {
        "drain_per_s": _spread([r.drain_per_s for r in runs]),
        "cpu_ms": _spread([r.cpu_ms for r in runs]),
        "backend_commands": _spread([round(sum(r.backend_ops.values()), 3) for r in runs]),
        "backend_ops": {name: _spread([r.backend_ops.get(name, 0.0) for r in runs]) for name in commands},
        "broker_ops": {name: _spread([r.broker_ops.get(name, 0.0) for r in runs]) for name in broker},
    }


def guarantee_commands(configs: dict[str, Any]) -> dict[str, Any]:
    """The result backend's commands per task the guarded run added over the unguarded one, by
    command (medians), split into the effect's own writes and what the claim costs."""
    guarded = configs["guarded"]["backend_ops"]
    unguarded = configs["unguarded"]["backend_ops"]
    delta = {
        name: round((guarded.get(name) or {}).get("median", 0.0) - (unguarded.get(name) or {}).get("median", 0.0), 2)
        for name in sorted(set(guarded) | set(unguarded))
    }
    # Rounded to hundredths: a worker's start-up commands spread over the backlog are not per task.
    delta = {name: value for name, value in delta.items() if value}
    effect = {name: value for name, value in delta.items() if name in EFFECT_COMMANDS}
    claim = {name: value for name, value in delta.items() if name not in EFFECT_COMMANDS}
    return {"by_command": delta, "effect": round(sum(effect.values()), 2), "claim": round(sum(claim.values()), 2)}


def measure_idempotency_cost(
    settings: Settings,
    broker: BrokerNode,
    *,
    tasks: int = TASKS,
    repetitions: int = REPETITIONS,
    tick: Callable[[str], None] = lambda _: None,
    write: bool = True,
) -> dict[str, Any]:
    """Each configuration ``repetitions`` times, alternated so a drift of the (shared) machine hits
    both alike; returns (and writes) the record."""
    log_dir = Path(tempfile.mkdtemp(prefix="brokerstack-idempotency-cost-"))
    runs: list[Repetition] = []
    started = time.time()
    load_before = os.getloadavg()[0]
    for n in range(repetitions):
        for config in CONFIGS:
            tick(f"{broker.kind} {config}: repetition {n + 1}/{repetitions}")
            runs.append(measure_once(settings, broker, config, tasks, log_dir, tick))
    configs = {config: summarize([r for r in runs if r.config == config]) for config in CONFIGS}
    record = {
        "schema": SCHEMA,
        "broker": broker.kind,
        "broker_version": broker.version(),
        "driver": broker.driver,
        "tasks": tasks,
        "repetitions": repetitions,
        "pool": "solo",
        "tasks_measured": dict(CONFIGS),
        "duration_s": round(time.time() - started, 1),
        # The lab machine is shared: how busy it was (1-minute load average, start and end). The
        # command counts do not depend on it; the drain rates do.
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "backend_round_trip_ms": redis_round_trip_ms(settings.result_backend),
        "configs": configs,
        "guarantee_commands": guarantee_commands(configs),
        "runs": [asdict(r) for r in runs],
        "clients": client_versions(),
        "machine": machine(),
    }
    if write:
        record["path"] = str(write_record(CATEGORY, f"{broker.kind}-{broker.driver}", record))
    return record
