"""Delayed tasks held by the broker while it and the workers are killed (issue 14).

``delayed``: N no-op tasks (the default stream's seeded mix: a share of them ``guarded_noop``, with the
exactly-once guarantee, so the record counts guarded tasks' duplicated effects as every scenario's
does) are published with countdowns spread over the next minutes (each drawn
from the seed), then, while they wait in the broker (Redis: a delayed sorted set per queue;
RabbitMQ: the TTL ladder), K faults at seeded points in time: kill -9 of the broker (restarted on
its data) and kill -9 of a worker (replaced), in turn. After the last task is due and the broker's
delayed store is empty, the stack drains and the record counts lost and duplicated tasks, and
**lateness**: run time (a task's first start) minus due time, p50 / p99 / max
(``timings.lateness_s``). Each fault notes how many tasks were waiting in the broker just before
it and once it was back (``waiting_before`` / ``waiting_after``): a broker that forgets them
shows it there. Where the broker holds delayed tasks the profile's count does not see (RabbitMQ: a
passive declare reports ready messages only, so dead letters stranded in a quorum ladder queue,
rabbitmq-server#12625, are invisible to it), ``held_before`` / ``held_after`` (and
``details.delayed.held_*``) record how many, from the broker's own queue totals (None elsewhere).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from lab.experiments.chaos.ledger import lateness
from lab.experiments.chaos.load import CeleryLoad, mixed_plan
from lab.experiments.chaos.runner import RunOptions
from lab.experiments.chaos.scenarios.base import (
    Scenario,
    describe_errors,
    ensure_workers,
    fault_entry,
    restart_node,
    start_stack,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from celery import Celery

    from lab.experiments.chaos.runner import ChaosRun
    from lab.harness.setups import Setup

#: The shortest countdown (seconds): long enough that every task goes to the broker's delayed store
#: (RabbitMQ's ladder takes whole seconds; shorter delays are held by the worker).
MIN_COUNTDOWN = 5.0
#: Countdowns are spread so that this many tasks per second come due on average: 10,000 tasks
#: over 200 s. The spread is never shorter than the faults need (``Scenario.fault_period`` each).
DUE_RATE = 50.0
#: A start this much before the due time counts as early (the worker and the runner share a clock).
EARLY_BY = 0.05
#: After the last due time, how long the broker's delayed store may take to empty before the drain
#: starts anyway (a store that keeps tasks past their due time is itself a finding).
DUE_SLACK = 120.0
#: The faults land in this first part of the wait after publishing: a slow producer (a busy machine)
#: leaves fewer tasks waiting when it is done, and the last fault should still find many.
FAULT_WINDOW = 0.6
#: How long to keep asking a restarted broker how many tasks wait in it.
DEPTH_RETRY_S = 30.0


class Delayed(Scenario):
    name = "delayed"
    description = (
        "N tasks with countdowns spread over the next minutes; kill -9 the broker and a worker in turn while "
        "they wait; lost, duplicated and lateness (run time - due time)"
    )

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        return 0.0  # publish as fast as the producer goes: the countdowns spread the work, not the rate

    def spread(self, setup: Setup, options: RunOptions) -> float:
        """Seconds over which the countdowns are spread (beyond MIN_COUNTDOWN)."""
        return max(options.tasks / DUE_RATE, (options.kills + 0.5) * self.fault_period(setup, options))

    def run(self, ctx: ChaosRun) -> None:
        from worker.brokers import profile_for
        from worker.celery_app import create_celery

        start_stack(ctx)
        o = ctx.options
        spread = self.spread(ctx.setup, o)
        draws = [MIN_COUNTDOWN + ctx.rng.uniform(0.0, spread) for _ in range(o.tasks)]
        load = CeleryLoad(
            ctx.settings,
            ctx.ledger,
            total=o.tasks,
            rate=ctx.rate,
            id_prefix=f"chaos-{ctx.run_id}",
            # Guarded tasks wait in the broker like the plain ones (the claim is taken when one runs,
            # not when it is published), and lateness reads every task's due time whatever its kind.
            plan=mixed_plan,
            countdown=draws.__getitem__,
            threads=o.producers,
        )
        ctx.register_load(load)
        app = create_celery(ctx.settings, main="chaos-delayed-depth", producer_only=True)
        ctx.register_load(_AppCloser(app))
        profile = profile_for(ctx.settings)

        def waiting() -> int | None:
            try:
                return profile.delayed_depth(app)
            except Exception as exc:  # noqa: BLE001 - the broker may be down or still starting
                log.debug("delayed depth: %r", exc)
                return None

        def held() -> int | None:
            # What the broker holds beyond the profile's count (RabbitMQ: dead letters stranded in
            # a quorum ladder queue count in its total only, rabbitmq-server#12625).
            try:
                return ctx.setup.vendor.delayed_held(ctx.stack)
            except Exception as exc:  # noqa: BLE001 - the broker may be down or still starting
                log.debug("delayed held: %r", exc)
                return None

        load.start()
        ctx.wait_until(lambda: load.done, 24 * 3600, "the delayed tasks to be published", phase="load")
        if load.error is not None:
            raise RuntimeError(f"the producer failed: {load.error!r}") from load.error
        published_at = time.time()
        ctx.timings["load_s"] = published_at - (load.started_at or published_at)
        dues = [a.due_at for a in ctx.ledger.attempts() if a.acknowledged and a.due_at is not None]
        last_due = max(dues, default=published_at)
        ctx.record.details["delayed"] = {
            "countdown_s": [MIN_COUNTDOWN, round(MIN_COUNTDOWN + spread, 1)],
            "waiting_after_publish": waiting(),
            "held_after_publish": held(),
            "last_due_in_s": round(last_due - published_at, 1),
        }

        for n, at in enumerate(self.fault_times(ctx, published_at, last_due), 1):
            ctx.pause(max(0.0, at - time.time()), f"tasks waiting; fault {n} at +{at - ctx.t0_wall:.0f} s")
            inject = self.kill_broker if n % 2 else self.kill_worker
            held_before = held()
            fault = inject(ctx, n, waiting)
            # rabbitmqctl starts a VM per call: read only around the faults.
            fault.update(held_before=held_before, held_after=held())
            ctx.record.faults.append(fault)
            ctx.faults_done = n

        ctx.wait_until(
            lambda: time.time() >= last_due and waiting() == 0 and held() in (0, None),
            max(0.0, last_due - time.time()) + DUE_SLACK,
            "the delayed tasks to come due",
            phase="drain",
        )
        ctx.record.details["delayed"]["waiting_at_drain"] = waiting()
        ctx.record.details["delayed"]["held_at_drain"] = held()
        ensure_workers(ctx)
        ctx.drain()
        self.account_lateness(ctx)
        describe_errors(ctx)

    def fault_times(self, ctx: ChaosRun, start: float, end: float) -> list[float]:
        """K points in time in the first FAULT_WINDOW of the wait from the end of publishing to the
        last due time (while most tasks still wait), evenly spread and jittered by the seed, like
        the runner's fault points."""
        count = ctx.options.kills
        segment = max(0.0, end - start) * FAULT_WINDOW / (count + 1)
        return sorted(start + i * segment + ctx.rng.uniform(-segment / 4, segment / 4) for i in range(1, count + 1))

    def kill_broker(self, ctx: ChaosRun, n: int, waiting: Any) -> dict[str, Any]:
        node = ctx.stack.broker
        assert node is not None
        before = waiting()
        ctx.emit("fault", f"kill {n}/{ctx.faults_total}: broker {node.kind}", force=True)
        killed_at = time.time()
        node.kill()
        fault = fault_entry(ctx, n, "kill", node.name, killed_at)
        fault.update(target="broker", dead_at=time.time(), waiting_before=before)
        if ctx.options.down_seconds:
            ctx.pause(ctx.options.down_seconds, "broker down")
        restart_node(node, fault, killed_at)
        fault["waiting_after"] = ctx.wait_until(
            lambda: _present(waiting()), DEPTH_RETRY_S, "the restarted broker's delayed store", phase="fault"
        )
        if fault["waiting_after"] is not None:
            fault["waiting_after"] -= 1
        return fault

    def kill_worker(self, ctx: ChaosRun, n: int, waiting: Any) -> dict[str, Any]:
        live = [w for w in ctx.stack.workers if w.is_running()]
        worker = ctx.rng.choice(live)
        before = waiting()
        ctx.executions.poll()
        interrupted = sorted(e.task_id for e in ctx.executions.running.values() if e.worker == worker.hostname)
        ctx.emit("fault", f"kill {n}/{ctx.faults_total}: worker {worker.name}", force=True)
        killed_at = time.time()
        worker.kill()
        fault = fault_entry(ctx, n, "kill", worker.hostname, killed_at)
        fault.update(target="worker", interrupted=len(interrupted), interrupted_ids=interrupted[:8], ref_at=killed_at)
        fault["waiting_before"] = before
        ctx.stack.replace_worker(worker, wait=True)
        fault["waiting_after"] = waiting()
        return fault

    def account_lateness(self, ctx: ChaosRun) -> None:
        """Lateness over the whole run, per-fault recovery (the first task started after the broker
        was back or the worker died), and fault times relative to the run's start."""
        ctx.executions.poll_all()
        late = lateness(ctx.ledger.attempts(), ctx.executions.entries, early_by=EARLY_BY)
        ctx.timings["lateness_s"] = late.to_dict() if late is not None else None
        if late is not None and late.early:
            ctx.note(f"{late.early} task(s) started more than {EARLY_BY} s before they were due")
        for fault in ctx.record.faults:
            ref = fault.pop("ref_at", None)
            first = min((e.t for e in ctx.executions.starts_after(ref)), default=None) if ref else None
            fault["consumer_recovery_s"] = None if first is None else first - ref
            for key in ("killed_at", "dead_at", "ready_at"):
                if fault.get(key) is not None:
                    fault[key] = fault[key] - ctx.t0_wall


def _present(depth: int | None) -> int | None:
    """A depth as a truthy value for polling (0 waiting is an answer too): depth + 1, or None."""
    return None if depth is None else depth + 1


class _AppCloser:
    """Closes the scenario's own Celery app at cleanup (as a registered load)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def stop(self, timeout: float = 0) -> None:
        try:
            self.app.close()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["Delayed"]
