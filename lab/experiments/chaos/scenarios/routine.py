"""Routine operations: a rolling deploy, a graceful broker restart mid-task, an idle worker killed.

Each stream mixes tasks with the exactly-once guarantee in (``lab.experiments.chaos.load``: the same
seeded indices as the default stream), so every record counts guarded tasks' duplicated effects."""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any, ClassVar

from lab.experiments.chaos.load import GUARDED_SHARE, SinglePublisher, is_guarded, mixed_plan, noop_plan
from lab.experiments.chaos.runner import RunOptions, summarize
from lab.experiments.chaos.scenarios.base import (
    DEPLOY_TASK_SECONDS,
    IDLE_KILL_AFTER,
    IDLE_POLL,
    MID_TASK_SPREAD,
    SLEEP_TASK,
    WARM_SHUTDOWN_TIMEOUT,
    Scenario,
    broker_recovery_metrics,
    describe_errors,
    fault_entry,
    finish_load,
    restart_node,
    run_faulted_load,
    start_stack,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lab.experiments.chaos.runner import ChaosRun
    from lab.harness.setups import Setup


# --- routine operations ---------------------------------------------------------------------------------------


class RollingDeploy(Scenario):
    name = "rolling-deploy"
    description = (
        "under load of 1-3 s tasks, SIGTERM each worker in turn (warm shutdown), wait for it to exit "
        "and start its replacement; K rounds"
    )
    defaults: ClassVar[dict[str, Any]] = {"pool": "prefork", "concurrency": 2, "down_seconds": 0.0}

    def faults_planned(self, options: RunOptions) -> int:
        return options.kills * options.workers

    def longest_task(self, options: RunOptions) -> float:
        return DEPLOY_TASK_SECONDS[1]

    def resolve(self, options: RunOptions) -> RunOptions:
        if options.workers < 2:
            raise ValueError("rolling-deploy needs at least 2 workers: the others carry the load while one is replaced")
        return super().resolve(options)

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return DEPLOY_TASK_SECONDS[1] + 6.0  # the longest task's end, then a replacement's start

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        """Spread over the rounds, and below what the workers left during a replacement can run, so
        the backlog stays short and every shutdown finds tasks running."""
        faults = self.faults_planned(options)
        # The guarded share of the stream is no-ops: only the rest are the deploy's sleeps.
        mean = (1 - GUARDED_SHARE) * sum(DEPLOY_TASK_SECONDS) / 2
        capacity = max(1, options.workers - 1) * (options.concurrency or 2) / mean
        spread = options.tasks / ((faults + 0.5) * self.fault_period(setup, options)) if faults else capacity
        return round(max(0.2, min(spread, capacity)), 2)

    def run(self, ctx: ChaosRun) -> None:
        start_stack(ctx)
        o = ctx.options
        points = ctx.fault_points(ctx.faults_total)
        seed = ctx.seed

        def plan(index: int) -> tuple[str, list, str]:
            # The guarded share is the default stream's (guarded no-ops, run between the sleeps a
            # warm shutdown waits for); the rest are the deploy's 1-3 s sleeps.
            if is_guarded(index):
                return mixed_plan(index)
            seconds = round(random.Random(f"{seed}-{index}").uniform(*DEPLOY_TASK_SECONDS), 2)
            return SLEEP_TASK, [seconds], "deploy"

        run_faulted_load(ctx, points, self.inject, plan=plan)
        finished_by: dict[str, set[str]] = {}
        for entry in ctx.executions.entries:
            if entry.event == "finish":
                finished_by.setdefault(entry.worker, set()).add(entry.task_id)
        for fault in ctx.record.faults:
            fault.pop("ref_at", None)
            ids = fault.pop("_running_ids")
            # A warm shutdown lets what runs finish where it runs: none of it should need another worker.
            fault["finished_by_victim"] = len(ids & finished_by.get(fault["node"], set()))
            fault["killed_at"] -= ctx.t0_wall
        ctx.timings["shutdown_s"] = summarize([f["shutdown_s"] for f in ctx.record.faults])
        ctx.timings["replacement_s"] = summarize([f["replacement_s"] for f in ctx.record.faults])
        ctx.record.details["rounds"] = o.kills
        forced = sum(1 for f in ctx.record.faults if not f["warm"])
        if forced:
            ctx.note(
                f"{forced} worker(s) did not finish their warm shutdown within {WARM_SHUTDOWN_TIMEOUT:.0f} s "
                "and were killed"
            )
        describe_errors(ctx)

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        # The oldest worker goes next: replacements join at the end, so each round takes every worker once.
        worker = ctx.stack.workers[0]
        ctx.wait_until(
            lambda: any(e.worker == worker.hostname for e in ctx.executions.running.values()),
            30,
            "the worker to run a task",
            phase="fault",
        )
        running = {e.task_id for e in ctx.executions.running.values() if e.worker == worker.hostname}
        ctx.emit("fault", f"deploy {n}/{ctx.faults_total}: SIGTERM {worker.name} ({len(running)} running)", force=True)
        signalled_at = time.time()
        took = worker.terminate(timeout=WARM_SHUTDOWN_TIMEOUT)
        exited_at = time.time()
        fault = fault_entry(ctx, n, "sigterm", worker.hostname, signalled_at)
        fault.update(
            round=(n - 1) // ctx.options.workers + 1,
            running=len(running),
            _running_ids=running,
            shutdown_s=exited_at - signalled_at,
            warm=took is not None,
            exit_code=worker.returncode,
        )
        ctx.emit("fault", f"deploy {n}/{ctx.faults_total}: starting the replacement", force=True)
        ctx.stack.replace_worker(worker, wait=True)
        ready_at = time.time()
        fault.update(replacement_s=ready_at - exited_at, ref_at=ready_at)
        return fault


class BrokerRestartMidTask(Scenario):
    name = "broker-restart-mid-task"
    description = "graceful broker stop/start K times while tasks longer than the restart (3-5 s) run"
    defaults: ClassVar[dict[str, Any]] = {"pool": "prefork", "concurrency": 2, "down_seconds": 0.0}

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return super().fault_period(setup, options) + options.long_task_seconds + MID_TASK_SPREAD

    def longest_task(self, options: RunOptions) -> float:
        return options.long_task_seconds + MID_TASK_SPREAD

    def run(self, ctx: ChaosRun) -> None:
        start_stack(ctx)
        o = ctx.options
        points = ctx.fault_points()
        # Just before each fault point the stream carries long tasks, one per pool process, so tasks
        # are running when the broker goes away; the rest are no-ops that keep the producer busy.
        burst = max(2, o.workers * (o.concurrency or 1))
        long_indices = {i for p in points for i in range(max(0, p - burst), p)}
        seed = ctx.seed

        def plan(index: int) -> tuple[str, list, str]:
            if index in long_indices:
                low = o.long_task_seconds
                seconds = round(random.Random(f"{seed}-{index}").uniform(low, low + MID_TASK_SPREAD), 2)
                return SLEEP_TASK, [seconds], "long"
            return noop_plan(index)

        run_faulted_load(ctx, points, self.inject, plan=plan)
        finishes: dict[str, list[float]] = {}
        for entry in ctx.executions.entries:
            if entry.event == "finish":
                finishes.setdefault(entry.task_id, []).append(entry.t)
        for fault in ctx.record.faults:
            ids, ready = fault.pop("_running_ids"), fault["ready_at"]
            # Which of the tasks running at the stop finished only after the broker was back.
            fault["outlived_restart"] = sum(1 for i in ids if finishes.get(i) and min(finishes[i]) > ready)
        broker_recovery_metrics(ctx)
        describe_errors(ctx)

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        node = ctx.stack.broker
        assert node is not None
        o = ctx.options

        def long_running() -> list[Any]:
            live = {w.hostname for w in ctx.stack.workers if w.is_running()}
            return [e for e in ctx.executions.running.values() if e.name == SLEEP_TASK and e.worker in live]

        if not ctx.wait_until(long_running, 120, "long tasks to run", phase="fault"):
            ctx.note(f"restart {n}: no long task was running within 120 s; restarting anyway")
        # Well inside the tasks, so they still run when the broker stops.
        ctx.pause(ctx.rng.uniform(0.1, max(0.2, o.long_task_seconds * 0.3)), "letting the tasks run")
        running = {e.task_id for e in long_running()}
        ctx.emit(
            "fault", f"restart {n}/{ctx.faults_total}: stopping {node.kind} ({len(running)} tasks running)", force=True
        )
        stopped_at = time.time()
        node.stop()
        fault = fault_entry(ctx, n, "stop", node.name, stopped_at)
        fault["dead_at"] = time.time()
        fault.update(stop_s=fault["dead_at"] - stopped_at, running=len(running), _running_ids=running)
        if o.down_seconds:
            ctx.pause(o.down_seconds, "broker down")
        ctx.emit("fault", f"restart {n}/{ctx.faults_total}: starting", force=True)
        return restart_node(node, fault, stopped_at)


class IdleKill(Scenario):
    name = "idle-kill"
    description = "kill -9 a prefork -c 2 worker 50-200 ms after its last task succeeded, the queue empty; K times"
    defaults: ClassVar[dict[str, Any]] = {"pool": "prefork", "concurrency": 2, "down_seconds": 0.0}

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        return 0.0  # one task at a time: the next is published when the last one has run

    def run(self, ctx: ChaosRun) -> None:
        start_stack(ctx)
        o = ctx.options
        publisher = SinglePublisher(ctx.settings, ctx.ledger, id_prefix=f"chaos-{ctx.run_id}")
        ctx.register_load(publisher)
        rounds = max(1, o.kills)
        sizes = [o.tasks // rounds + (1 if r < o.tasks % rounds else 0) for r in range(rounds)]
        for r, size in enumerate(sizes):
            last = None
            for _ in range(size):
                # The default stream's mix: the task a worker is killed after is guarded in some rounds.
                task_id = publisher.publish(*mixed_plan(publisher.index))
                if task_id is not None:
                    last = self._wait_finished(ctx, task_id) or last
                ctx.emit("load", f"round {r + 1}/{rounds}")
            if r < o.kills:
                if last is None:
                    ctx.note(f"idle-kill {r + 1}: no task ran in this round; no kill")
                    continue
                fault = self.inject(ctx, r + 1, last)
                if fault is not None:
                    ctx.record.faults.append(fault)
                ctx.faults_done = r + 1
        publisher.finish()
        finish_load(ctx, publisher)
        ctx.drain()
        ctx.timings["after_success_s"] = summarize([f["after_success_s"] for f in ctx.record.faults])
        ctx.timings["replacement_s"] = summarize([f["replacement_s"] for f in ctx.record.faults])
        describe_errors(ctx)

    @staticmethod
    def _wait_finished(ctx: ChaosRun, task_id: str, timeout: float = 120.0) -> Any:
        """The task's finish entry, read as soon as the worker wrote it (polled every IDLE_POLL)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in reversed(ctx.executions.poll()):
                if entry.event == "finish" and entry.task_id == task_id:
                    return entry
            if ctx.executions.finished.get(task_id):
                return next(e for e in reversed(ctx.executions.entries) if e.event == "finish" and e.task_id == task_id)
            ctx.emit("load", "waiting for the task to run")
            time.sleep(IDLE_POLL)
        ctx.note(f"task {task_id} did not run within {timeout:.0f} s")
        return None

    def inject(self, ctx: ChaosRun, n: int, last: Any) -> dict[str, Any] | None:
        worker = next((w for w in ctx.stack.workers if w.hostname == last.worker and w.is_running()), None)
        if worker is None:
            ctx.note(f"idle-kill {n}: the worker that ran the last task is gone; no kill")
            return None
        # One task at a time: the queue is empty once the last one has run (nothing acknowledged waits).
        waiting = ctx.ledger.acknowledged - sum(1 for _ in ctx.executions.finished)
        planned = ctx.rng.uniform(*IDLE_KILL_AFTER)
        # A planned instant, not a condition: sleep to it exactly (it is at most 200 ms away).
        delay = last.t + planned - time.time()
        if delay > 0:
            time.sleep(delay)
        killed_at = time.time()
        worker.kill()
        ctx.emit(
            "fault",
            f"idle-kill {n}/{ctx.faults_total}: killed {worker.name} {killed_at - last.t:.3f} s after its last task",
            force=True,
        )
        fault = fault_entry(ctx, n, "kill", worker.hostname, killed_at)
        fault.update(
            task_id=last.task_id, planned_after_s=planned, after_success_s=killed_at - last.t, waiting_in_queue=waiting
        )
        ctx.stack.replace_worker(worker, wait=True)
        fault["replacement_s"] = time.time() - killed_at
        fault["killed_at"] = killed_at - ctx.t0_wall
        return fault
