"""What ``min-replicas-to-write`` costs in throughput: ``redis-sentinel`` against
``redis-sentinel-wait`` (the same Sentinel group with ``min-replicas-to-write 1``), measured the
way a deployment uses them.

Both groups run side by side (a primary, two replicas and three Sentinels each, the app finding
the primary through the sentinels). One repetition on a group: ``tasks`` noop tasks are published
through brokerstack's own Celery app from one thread (``apply_async``: the publish rate), *then*
one ``celery worker`` (solo pool, brokerstack's defaults: late acks, results stored) is started
and the time from the queue's first drop to its being empty is the drain rate; publish + drain is
``tasks`` over the sum of both times. The groups are alternated (A B, B A, A B, ...) so that a
machine that slows down during the measurement slows both; a first small round on each group is
left out (scripts loaded, connections made). Each rate is the median of the repetitions with its
range, and a difference whose ranges overlap is called no difference (lab.experiments.bench.stats).

Why the cost is expected to be small: ``min-replicas-to-write`` adds no round trip to a write, the
primary only checks that enough replicas acknowledged within ``min-replicas-max-lag`` seconds
(replicas report every second); ``WAIT`` after each publish would add one. The run also reads
both settings back from each primary, so the record shows the barrier was on where it should be.

``brokerstack wait-cost`` (lab.cli.wait_cost) writes ``<results>/wait-cost/<timestamp>.json``;
lab.report.failover renders the newest in the *Failover and partitions* section.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab.experiments.bench import e2e
from lab.experiments.bench.stats import compare, median_of_runs, rate
from lab.harness.nodes import DriverName, resolve_driver
from lab.harness.results import client_versions, machine, write_record
from lab.harness.setups import get_setup
from lab.harness.stacks import Stack

SCHEMA = "brokerstack.wait-cost/1"
CATEGORY = "wait-cost"
#: Baseline first, then the setup whose cost is measured.
SETUP_NAMES = ("redis-sentinel", "redis-sentinel-wait")
#: Tasks per repetition: a few seconds of publishing and of draining on a small machine.
TASKS = 3000
REPETITIONS = 3
#: The unmeasured first round per group.
WARMUP_TASKS = 200
#: The longest one drain may take on a slow, shared machine.
DRAIN_TIMEOUT = 600.0
#: The rates of a repetition: publish, drain and both one after the other.
RATES = ("publish", "drain", "combined")

Tick = Callable[[str], None]


def replication_barrier(stack: Stack) -> dict[str, Any]:
    """``min-replicas-to-write`` / ``min-replicas-max-lag`` as the group's primary reports them,
    and how many replicas it has."""
    import redis

    assert stack.sentinel is not None
    client = redis.Redis.from_url(stack.sentinel.primary_url, socket_timeout=10)
    try:
        config: Any = client.config_get("min-replicas-*")
        replicas = int(client.info("replication").get("connected_slaves") or 0)
    finally:
        client.close()
    return {
        "min_replicas_to_write": int(config.get("min-replicas-to-write", 0)),
        "min_replicas_max_lag": int(config.get("min-replicas-max-lag", 0)),
        "connected_replicas": replicas,
    }


def refused_writes(url: str) -> dict[str, int]:
    """The error replies the primary has sent so far, by error code (``INFO errorstats``): a
    NOREPLICAS count says the barrier refused writes (replicas that fell behind on a busy machine),
    which the client then retried as a lost connection."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        stats = client.info("errorstats")
    finally:
        client.close()
    return {key.removeprefix("errorstat_"): int(value["count"]) for key, value in stats.items()}


def one_round(stack: Stack, app: Any, tasks: int) -> dict[str, Any]:
    """Publish ``tasks`` noops with no worker, then drain them with one fresh worker; and the error
    replies the primary sent meanwhile."""
    assert stack.sentinel is not None
    url = stack.sentinel.primary_url
    errors_before = refused_writes(url)
    depth = e2e.QueueDepth("redis", url)
    try:
        depth.purge()
        published = e2e.publish_backlog(app, tasks)
        (worker,) = stack.start_workers(1)
        try:
            drained, _, _ = e2e.drain(depth, tasks, DRAIN_TIMEOUT)
        finally:
            worker.stop(timeout=30)
    finally:
        depth.close()
    if drained["truncated"]:
        raise RuntimeError(f"the drain stopped with tasks left on {stack.setup.name}")
    combined = rate(tasks, published["seconds"] + drained["seconds"])
    errors = {
        code: count - errors_before.get(code, 0)
        for code, count in refused_writes(url).items()
        if count > errors_before.get(code, 0)
    }
    return {"publish": published, "drain": drained, "combined": combined, "error_replies": errors}


def alternated(names: Sequence[str], repetitions: int) -> list[str]:
    """A B, B A, A B, ...: each name once per repetition, the order flipped every other one."""
    order: list[str] = []
    for i in range(repetitions):
        order += list(names) if i % 2 == 0 else list(reversed(names))
    return order


def measure(
    *,
    tasks: int = TASKS,
    repetitions: int = REPETITIONS,
    driver: DriverName | None = None,
    tick: Tick | None = None,
) -> dict[str, Any]:
    """Both groups up, ``repetitions`` alternated rounds each; the record (not yet written)."""
    from worker.celery_app import create_celery

    if repetitions < 2:
        raise ValueError("a range needs at least 2 repetitions")
    say = tick or (lambda message: None)
    resolved = resolve_driver(driver)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stacks: dict[str, Stack] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETUP_NAMES}
    with tempfile.TemporaryDirectory(prefix="brokerstack-wait-cost-") as tmp:
        try:
            apps: dict[str, Any] = {}
            for name in SETUP_NAMES:
                say(f"starting {name}")
                stack = Stack(get_setup(name), resolved, Path(tmp) / name, cluster=True)
                stacks[name] = stack
                stack.start_nodes()
                apps[name] = create_celery(stack.make_settings())
            barrier = {name: replication_barrier(stack) for name, stack in stacks.items()}
            for name in SETUP_NAMES:
                say(f"warm-up on {name}")
                one_round(stacks[name], apps[name], WARMUP_TASKS)
            for i, name in enumerate(alternated(SETUP_NAMES, repetitions)):
                say(f"round {i + 1}/{repetitions * len(SETUP_NAMES)}: {name}")
                runs[name].append(one_round(stacks[name], apps[name], tasks))
        finally:
            for stack in reversed(list(stacks.values())):
                stack.close()
    results: dict[str, dict[str, Any]] = {
        name: {
            "setup": name,
            "description": get_setup(name).description,
            "barrier": barrier[name],
            **{key: median_of_runs([run[key] for run in runs[name]]) for key in RATES},
            # Per measured repetition: error replies of the primary (NOREPLICAS: writes refused).
            "error_replies": [run["error_replies"] for run in runs[name]],
        }
        for name in SETUP_NAMES
    }
    base, cost = SETUP_NAMES
    return {
        "schema": SCHEMA,
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "driver": resolved,
        "parameters": {
            "tasks": tasks,
            "repetitions": repetitions,
            "warmup_tasks": WARMUP_TASKS,
            "order": alternated(SETUP_NAMES, repetitions),
            "worker": {"pool": "solo", "concurrency": 1},
            "producer_threads": 1,
        },
        "versions": client_versions(),
        "machine": machine(),
        "setups": results,
        # The cost setup against the baseline (ratio < 1: the barrier made it slower).
        "comparison": {key: compare((cost, results[cost][key]), (base, results[base][key])) for key in RATES},
    }


def write(record: dict[str, Any]) -> Path:
    stamp = record["started_at"].replace("-", "").replace(":", "")
    return write_record(CATEGORY, stamp, record)
