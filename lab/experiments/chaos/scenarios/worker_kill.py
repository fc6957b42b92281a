"""kill -9 of a worker (or one pool process) under load, and its soak mode."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any, ClassVar

from lab.experiments.chaos.load import CeleryLoad, noop_plan
from lab.experiments.chaos.runner import RunOptions, summarize
from lab.experiments.chaos.scenarios.base import (
    SLEEP_TASK,
    SOAK_LONG_EVERY,
    SOAK_LONG_SECONDS,
    SOAK_RATE,
    SOAK_UNBOUNDED,
    Scenario,
    describe_errors,
    ensure_workers,
    fault_entry,
    finish_load,
    kill_target_for,
    redelivery_after_the_fact,
    run_faulted_load,
    start_stack,
)
from lab.harness.nodes import proctree

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lab.experiments.chaos.runner import ChaosRun
    from lab.harness.processes import CeleryWorker
    from lab.harness.setups import Setup


class WorkerKill(Scenario):
    name = "worker-kill"
    description = "kill -9 a worker (or one of its pool processes) while it runs long tasks; measure redelivery"
    defaults: ClassVar[dict[str, Any]] = {"pool": "prefork", "concurrency": 2, "down_seconds": 0.0}
    soak = True

    def faults_planned(self, options: RunOptions) -> int:
        if options.duration is not None:
            return max(1, round(options.duration / options.fault_interval))  # an estimate: gaps are random
        return options.kills

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        if options.duration is not None:
            return SOAK_RATE
        return super().auto_rate(setup, options)

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        redelivery = setup.vendor.redelivery_delay(options) + setup.vendor.requeue_seconds
        return options.long_task_seconds + 4.0 + redelivery

    def run(self, ctx: ChaosRun) -> None:
        if ctx.options.duration is not None:
            self.run_soak(ctx)
            return
        start_stack(ctx)
        o = ctx.options
        points = ctx.fault_points()
        # Just before each fault point the stream carries long tasks, enough to keep every pool
        # process of every worker busy, so the victim is surely running one when it is killed.
        burst = max(2, o.workers * (o.concurrency or 1))
        long_indices = {i for p in points for i in range(max(0, p - burst), p)}

        def plan(index: int) -> tuple[str, list, str]:
            if index in long_indices:
                return SLEEP_TASK, [o.long_task_seconds], "long"
            return noop_plan(index)

        def inject(ctx: ChaosRun, n: int) -> dict[str, Any] | None:
            return self.kill_one(ctx, n, kill_target_for(o, n))

        run_faulted_load(ctx, points, inject, plan=plan, wait_recovery=False)
        delays = [f.get("redelivery_s") for f in ctx.record.faults]
        ctx.timings["redelivery_delay_s"] = summarize(delays)
        ctx.timings["first_redelivery_s"] = summarize([f.get("first_redelivery_s") for f in ctx.record.faults])
        for target in ("worker", "child"):
            mine = [f.get("redelivery_s") for f in ctx.record.faults if f["target"] == target]
            if mine:
                ctx.timings[f"redelivery_delay_s_{target}"] = summarize(mine)
        bound = ctx.setup.vendor.unacked_redelivery_delay(o)
        if bound is not None:
            ctx.record.details["redelivery_bound_s"] = bound
        describe_errors(ctx)

    def kill_one(self, ctx: ChaosRun, n: int, target: str) -> dict[str, Any] | None:
        o = ctx.options
        victim_start = ctx.wait_until(
            lambda: self._running_long(ctx), 300, "a worker to run a long task", phase="fault"
        )
        if victim_start is None:
            ctx.note(f"kill {n}: no worker ran a long task within 300 s; skipped")
            return None
        # Land somewhere inside the task rather than at its first instruction.
        ctx.pause(ctx.rng.uniform(0.1, max(0.2, o.long_task_seconds * 0.3)), "letting the task run")
        victim_start = self._running_long(ctx) or victim_start
        worker = next(w for w in ctx.stack.workers if w.hostname == victim_start.worker)
        ctx.executions.poll()
        if target == "worker":
            interrupted = [e for e in ctx.executions.running.values() if e.worker == worker.hostname]
            ctx.emit("fault", f"kill {n}/{ctx.faults_total}: worker {worker.name}", force=True)
            killed_at = time.time()
            worker.kill()
            replacement: CeleryWorker | None = ctx.stack.replace_worker(worker, wait=False)
            victim = worker.hostname
        else:
            pid = victim_start.pid
            interrupted = [e for e in ctx.executions.running.values() if e.pid == pid]
            ctx.emit("fault", f"kill {n}/{ctx.faults_total}: pool process {pid} of {worker.name}", force=True)
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            proctree.wait_pids_gone([pid], timeout=10)
            replacement = None
            victim = f"{worker.hostname} pid {pid}"
        ids = {e.task_id for e in interrupted}
        fault = fault_entry(ctx, n, "kill", victim, killed_at)
        fault.update(target=target, interrupted=len(ids), interrupted_ids=sorted(ids)[:8])

        def restarted() -> dict[str, float] | None:
            seen = {}
            for entry in ctx.executions.starts_after(killed_at):
                if entry.task_id in ids and entry.task_id not in seen:
                    seen[entry.task_id] = entry.t
            return seen if len(seen) == len(ids) else None

        # A killed pool process' task fails its worker's own redelivery at once; a killed worker's
        # wait for the broker to hand them out again.
        bound = o.long_task_seconds + 60 + (ctx.setup.vendor.redelivery_delay(o) if target == "worker" else 0.0)
        seen = ctx.wait_until(restarted, bound, "the killed tasks to run again", phase="fault") or {}
        delays = sorted(t - killed_at for t in seen.values())
        fault["redelivery_s"] = delays[-1] if len(delays) == len(ids) and delays else None
        fault["first_redelivery_s"] = delays[0] if delays else None
        fault["not_redelivered_within_s"] = None if len(delays) == len(ids) else bound
        fault["killed_at"] = killed_at - ctx.t0_wall
        if replacement is not None:
            replacement.wait_ready(timeout=120)
        return fault

    # --- soak ----------------------------------------------------------------------------------------

    def run_soak(self, ctx: ChaosRun) -> None:
        """Hard kills at seeded random intervals under a steady mixed load (mostly no-ops, one task in
        SOAK_LONG_EVERY a SOAK_LONG_SECONDS sleep) until ``duration`` is up. Ctrl-C or SIGTERM ends the
        faults early; the load then stops, the stack drains and the record counts what happened."""
        start_stack(ctx)
        o = ctx.options
        assert o.duration is not None

        def plan(index: int) -> tuple[str, list, str]:
            if index % SOAK_LONG_EVERY == SOAK_LONG_EVERY - 1:
                return SLEEP_TASK, [SOAK_LONG_SECONDS], "long"
            return noop_plan(index)

        load = CeleryLoad(
            ctx.settings,
            ctx.ledger,
            total=SOAK_UNBOUNDED,
            rate=o.rate or SOAK_RATE,
            id_prefix=f"chaos-{ctx.run_id}",
            plan=plan,
            threads=o.producers,
        )
        ctx.register_load(load)
        load.start()
        started = time.time()
        end = started + o.duration
        last = started
        stopped_by = "time"
        try:
            while True:
                due = last + ctx.rng.uniform(0.5, 1.5) * o.fault_interval
                if due >= end:
                    ctx.pause(max(0.0, end - time.time()), "soaking until the time is up")
                    break
                ctx.pause(max(0.0, due - time.time()), "soaking")
                n = ctx.faults_done + 1
                self.soak_kill(ctx, n, kill_target_for(o, n))
                last = time.time()
                if load.done:
                    raise RuntimeError(f"the producer stopped: {load.error!r}")
        except KeyboardInterrupt:
            stopped_by = "interrupt"
            ctx.stopped_early = True
            ctx.note(
                f"soak stopped by Ctrl-C/SIGTERM after {time.time() - started:.0f} of {o.duration:.0f} s and "
                f"{ctx.faults_done} faults; drained and counted what had happened"
            )
        soak_s = time.time() - started
        ctx.emit("drain", "stopping the load", force=True)
        load.stop(timeout=30)
        ctx.timings["load_held_s"] = load.counter.held_s
        ensure_workers(ctx)
        finish_load(ctx, load)
        ctx.record.details["soak"] = {
            "planned_s": o.duration,
            "ran_s": round(soak_s, 1),
            "stopped_by": stopped_by,
            "fault_interval_s": o.fault_interval,
            "rate": o.rate or SOAK_RATE,
        }
        ctx.drain()
        redelivery_after_the_fact(ctx)
        describe_errors(ctx)

    def soak_kill(self, ctx: ChaosRun, n: int, target: str) -> dict[str, Any] | None:
        """One hard kill of a random live worker (or of one of its pool processes) wherever it is, and its
        replacement started and ready before the next one."""
        live = [w for w in ctx.stack.workers if w.is_running()]
        if not live:
            ensure_workers(ctx)
            return None
        worker = ctx.rng.choice(live)
        ctx.executions.poll()
        if target == "child":
            running = [
                e for e in ctx.executions.running.values() if e.worker == worker.hostname and proctree.pid_alive(e.pid)
            ]
            children = [pid for pid in proctree.process_tree(worker.pid or 0) if pid != worker.pid]
            pids = [e.pid for e in running] or children
            if not pids:
                target = "worker"
        ctx.emit("fault", f"kill {n}: {target} of {worker.name}", force=True)
        killed_at = time.time()
        if target == "worker":
            interrupted = [e for e in ctx.executions.running.values() if e.worker == worker.hostname]
            worker.kill()
            victim = worker.hostname
        else:
            pid = ctx.rng.choice(pids)
            interrupted = [e for e in ctx.executions.running.values() if e.pid == pid]
            os.kill(pid, signal.SIGKILL)
            proctree.wait_pids_gone([pid], timeout=10)
            victim = f"{worker.hostname} pid {pid}"
        fault = fault_entry(ctx, n, "kill", victim, killed_at)
        fault.update(
            target=target,
            interrupted=len({e.task_id for e in interrupted}),
            interrupted_ids=sorted({e.task_id for e in interrupted}),
            killed_at=killed_at - ctx.t0_wall,
        )
        # Counted before the replacement starts: a Ctrl-C while it does must not drop a kill that happened.
        ctx.record.faults.append(fault)
        ctx.faults_done = n
        if target == "worker":
            ctx.stack.replace_worker(worker, wait=True)
        return fault

    @staticmethod
    def _running_long(ctx: ChaosRun) -> Any:
        live = {w.hostname for w in ctx.stack.workers if w.is_running()}
        candidates = [
            e
            for e in ctx.executions.running.values()
            if e.name == SLEEP_TASK and e.worker in live and proctree.pid_alive(e.pid)
        ]
        return min(candidates, key=lambda e: e.t) if candidates else None


# --- the API while the broker is down ------------------------------------------------------------------
