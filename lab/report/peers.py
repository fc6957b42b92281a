"""The speed section's lead table: brokerstack beside stock Celery and Dramatiq (``bench.peers``).

One column per setup (each from its newest bench record with peers), one row per system, and one
row per goal of issue 17 with the ratio of the medians and the verdict: "met" when brokerstack's
whole range is above the goal times the peer's, "missed" when below it, "no difference" when the
two overlap (the goal is inside the noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.experiments.bench.peers import GOALS
from lab.experiments.bench.records import BenchRecord, PeerGoal, PeersSection, PeerSystem, Rate
from lab.experiments.bench.stats import NO_DIFFERENCE, UNKNOWN, compare
from lab.report.sources import Sources
from lab.report.task_cost import load_task_cost, total

#: Where the per-task profile is published (``brokerstack report`` writes it from results/task-cost/).
TASK_COST_DOC = "docs/task-cost.md"

DASH = "—"
#: How the table names each goal of ``lab.experiments.bench.peers.GOALS`` (ours over theirs).
GOAL_LABELS = {
    "defaults_vs_dramatiq": "brokerstack's defaults over Dramatiq's defaults",
    "defaults_vs_celery": "brokerstack's defaults over stock Celery, same settings",
    "fire_and_forget_vs_dramatiq": "brokerstack fire-and-forget over Dramatiq",
}


def _spread(rate: Rate | None) -> str:
    """``median (min-max)`` tasks/s, the bare median for a single run."""
    if rate is None or not rate.per_s:
        return DASH
    if (rate.repeats or 1) < 2:
        return f"{rate.per_s:,.0f}"
    return f"{rate.per_s:,.0f} ({rate.per_s_min or 0:,.0f}-{rate.per_s_max or 0:,.0f})"


def _system_label(key: str, peers: list[PeersSection]) -> str:
    """What a system row ran, from the first record that has it."""
    entry = next((p.systems[key] for p in peers if key in p.systems), PeerSystem())
    how = _how(entry)
    names = {
        "brokerstack_defaults": "**brokerstack, its defaults** (acks late, prefetch 1, STARTED and SUCCESS stored)",
        "celery_defaults": "stock Celery, brokerstack's settings (kombu's transport, Celery's consumer and backend)",
        "dramatiq_defaults": "Dramatiq, its defaults (acks after the run, no results)",
        "brokerstack_fire_and_forget": "brokerstack, fire-and-forget (no results, prefetch "
        f"{entry.prefetch_multiplier or '?'})",
    }
    return f"{names.get(key, key)}, {how}" if how else names.get(key, key)


def _how(entry: PeerSystem) -> str:
    if entry.threads:
        return f"{entry.processes or 1} process, {entry.threads} threads"
    if entry.pool:
        return entry.pool if entry.pool == "solo" else f"{entry.pool} -c {entry.concurrency}"
    return ""


def _goal_cell(goal: PeerGoal | None) -> str:
    if goal is None or goal.ratio is None:
        return DASH
    verdict = goal.verdict or "unknown"
    shown = f"**{verdict}**" if verdict in ("met", "missed") else verdict
    return f"{goal.ratio:.2f}x: {shown}"


def peers_table(sources: Sources) -> str:
    """The Markdown of the peers table and what it measured, or "" without peers records."""
    records: list[BenchRecord] = list(sources.bench_peers)
    sections = [r.peers for r in records if r.peers is not None]
    if not sections:
        return ""
    header = ["drain of a no-op backlog, one worker (tasks/s, median (range))"] + [
        f"{r.setup} {sources.cite(r)}" for r in records
    ]
    rows: list[list[str]] = []
    for key in ("celery_defaults", "dramatiq_defaults", "brokerstack_defaults", "brokerstack_fire_and_forget"):
        if not any(key in s.systems for s in sections):
            continue
        rows.append([_system_label(key, sections)] + [_spread(s.drain(key)) for s in sections])
        for name, ours, _theirs, goal in GOALS:
            if ours == key:
                rows.append(
                    [f"↳ goal: {GOAL_LABELS.get(name, name)} ≥ {goal:g}x"]
                    + [_goal_cell(s.goals.get(name)) for s in sections]
                )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    repeats = sorted({s.repeats for s in sections if s.repeats})
    tasks = sorted({s.tasks for s in sections if s.tasks})
    loads = [
        f"{r.setup} {r.machine.load_average_at_start[0]:g} on {r.machine.cpus or '?'} CPUs"
        for r in records
        if r.machine.load_average_at_start
    ]
    bounds = _bounds(sources, records)
    agreement = _agreement(sources, records)
    text = [
        "### brokerstack beside what users would otherwise run",
        "",
        f"The same backlog of {', '.join(f'{t:,}' for t in tasks)} no-op tasks, drained by one fresh worker of each "
        f"system in turn, {', '.join(map(str, repeats))} alternated repetitions in the same run (the order reversed "
        "every other one); each cell is the median with the range of the repetitions. Executions are counted "
        "the same way for every system: the broker's count of the system's queue, from its first drop to empty. "
        "A goal is *met* when brokerstack's whole range is above the goal times the peer's, *missed* when "
        "it is below, *no difference* when they overlap (the goal is inside the noise). "
        f"One-minute load average when each run started: {'; '.join(loads) or DASH} (other work shares the "
        "machine alike with every system of a run: compare within a column).",
        "",
        *lines,
    ]
    if agreement:
        text += ["", *agreement]
    if bounds:
        text += ["", *bounds]
    return "\n".join(text)


#: The peers' brokerstack rows that the throughput table drains too (same pool and concurrency):
#: whether it is the drain with brokerstack's defaults.
SAME_DRAINS = {"brokerstack_defaults": True, "brokerstack_fire_and_forget": False}


def _agreement(sources: Sources, records: list[BenchRecord]) -> list[str]:
    """Each brokerstack row beside the throughput table's drain of the same pool and configuration
    (the setup's published bench record): whether the two runs agree within their ranges."""
    published = {(r.setup, r.driver): r for r in sources.bench}
    lines: list[str] = []
    for record in records:
        full, peers = published.get((record.setup, record.driver)), record.peers
        if full is None or peers is None:
            continue
        for key, defaults in SAME_DRAINS.items():
            entry = peers.systems.get(key)
            here, there = (entry.consume if entry else None), None
            if entry is not None and entry.pool and entry.concurrency == full.parameters.get("concurrency"):
                there = full.drain(entry.pool, defaults=defaults)
            if here is None or there is None or not here.per_s or not there.per_s:
                continue
            verdict = compare(("here", here.to_dict()), ("there", there.to_dict()))["verdict"]
            agree = (
                "the ranges overlap: no difference"
                if verdict == NO_DIFFERENCE
                else "the runs differ beyond their ranges (compare within a table)"
                if verdict != UNKNOWN
                else "one run on a side: no range to compare by"
            )
            lines.append(
                f"- {record.setup}, {_system_label(key, [peers]).replace('**', '')}: {_spread(here)} here "
                f"({_count(peers.tasks)} tasks, {sources.cite(record)}), {_spread(there)} in the throughput "
                f"table ({_count(full.end_to_end.tasks if full.end_to_end else None)} tasks, {sources.cite(full)}): "
                f"{agree}."
            )
    return _headed("The same drains of brokerstack in the throughput table below, measured in its own run:", lines)


def _bounds(sources: Sources, records: list[BenchRecord]) -> list[str]:
    """Per missed goal, what bounds brokerstack's rate: the time per task the goal leaves one worker
    beside what a task costs (docs/task-cost.md's records, same broker and driver)."""
    costs = {(c.get("broker"), c.get("driver")): c for c in load_task_cost(sources.root)}
    lines: list[str] = []
    for record in records:
        peers, cost = record.peers, costs.get((record.broker, record.driver))
        if peers is None or cost is None:
            continue
        for name, ours, theirs, goal in GOALS:
            judged, rival = peers.goals.get(name), peers.drain(theirs)
            if judged is None or judged.verdict != "missed" or rival is None or not rival.per_s:
                continue
            config = "fire_and_forget" if ours.endswith("fire_and_forget") else "defaults"
            worker = ((cost.get("configs") or {}).get(config) or {}).get("worker") or {}
            cpu, wall = (worker.get("cpu_ms") or {}).get("median"), (worker.get("wall_ms") or {}).get("median")
            stored = _backend_wait(worker, cost.get("backend_round_trip_ms"))
            budget = 1000 / (goal * rival.per_s)
            verdict = (
                f"over the budget by {wall / budget:.1f}x"
                if wall and wall > budget
                else f"within the budget ({1000 / wall:,.0f} tasks/s from one solo worker on its own): the "
                "shortfall here is not the task's own cost but what the machine gave the worker"
                if wall
                else "no wall time in the profile"
            )
            lines.append(
                f"- {record.setup}, {GOAL_LABELS.get(name, name)} missed: the goal leaves one worker "
                f"{budget:.2f} ms per task; a task with these settings costs the worker "
                f"{_ms(cpu)} ms of CPU and {_ms(wall)} ms of wall time ({cost.get('pool')} pool), "
                f"{verdict}, with {stored} ([{Path(TASK_COST_DOC).name}]({Path(TASK_COST_DOC).name}), "
                f"{cost.get('tasks')} tasks x {cost.get('repetitions')})."
            )
    return _headed("What bounds brokerstack where a goal is missed, from the per-task profile:", lines)


def _headed(heading: str, lines: list[str]) -> list[str]:
    """A bullet list under its heading line, or nothing when there is no bullet."""
    return [heading, "", *lines] if lines else []


def _backend_wait(worker: dict[str, Any], trip_ms: float | None) -> str:
    """What storing the task's states waits for: its round trips to the result backend times one
    PING. The commands the server counts are no measure of it (a script's calls ride on the
    EVALSHA that ran it): a profile without counted round trips says so and prices nothing."""
    commands = total(worker.get("backend_ops") or {})
    if not commands:
        return "no result-backend command"
    trips = (worker.get("backend_round_trips") or {}).get("median")
    if trips is None:
        return f"{commands:.1f} result-backend commands (round trips not counted in this profile)"
    waits = f", at least {trips * trip_ms:.2f} ms of waiting at {trip_ms:.3f} ms a round trip" if trip_ms else ""
    return f"{trips:.1f} result-backend round trips ({commands:.1f} commands, counting those a script ran{waits})"


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _ms(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


__all__ = ["peers_table"]
