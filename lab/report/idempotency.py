"""The *Exactly-once effects* section of docs/ops-comparison.md (issue 15): per setup, how many tasks
ran twice (duplicated executions) and how many effects happened twice (duplicated effects), for the
guarded part of every chaos run's stream (tasks with ``IdempotentTask``) and the unguarded part,
from the chaos records; and what the guarantee costs per task on each broker, from the
``brokerstack idempotency-cost`` records (``<results>/idempotency-cost/``).

Every completed chaos record with guarded tasks is listed, whatever its size (the size is shown), not
only the newest published one per pair; a matrix of every scenario on every setup says which pairs
have one and which have none yet. Chaos records made before the load mixed guarded tasks in carry no
``guarded`` count; they are left out of the list (the durability table still shows them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.experiments.chaos.record import load_records, record_size, record_transport
from lab.harness.setups import SCENARIO_NAMES, SETUPS
from lab.harness.vendors import broker_rank

DASH = "—"  # as in lab.report.render
CHAOS_COMMAND = "brokerstack chaos run --scenario <scenario> --setup <setup> --tasks 5000 --kills 3 --driver docker"
COST_COMMAND = "brokerstack idempotency-cost --driver docker"
COST_CATEGORY = "idempotency-cost"  # lab.experiments.idempotency_cost.CATEGORY, read without importing it


#: Scenarios whose stream cannot carry the guarantee, and why (the matrix says so instead of "none run yet").
WITHOUT_GUARDED_TASKS = {"publish-kill": "no task runs, the runner reads its plain messages back"}
NONE_YET = "none run yet"


def guarded_records(report: Any) -> list[dict[str, Any]]:
    """Every completed chaos record that counted a guarded part, any size, in setup, scenario, then
    time order."""
    order = list(SETUPS)
    records = [
        r for r in load_records(report.src.root, latest_only=False) if ((r.get("counts") or {}).get("guarded") or 0) > 0
    ]
    return sorted(
        records,
        key=lambda r: (
            order.index(r["setup"]) if r["setup"] in order else len(order),
            SCENARIO_NAMES.index(r["scenario"]) if r["scenario"] in SCENARIO_NAMES else len(SCENARIO_NAMES),
            r.get("started_at") or "",
        ),
    )


def cite(report: Any, record: dict[str, Any]) -> str:
    """The record's reference in the doc if the report cites it, else its file name."""
    labels = {r["_path"]: r for r in report.src.chaos}
    cited = labels.get(record["_path"])
    return report.src.cite(cited) if cited is not None else f"`{Path(record['_path']).name}`"


def coverage(records: list[dict[str, Any]]) -> tuple[list[tuple[str, ...]], int, int]:
    """The matrix of every scenario (rows) on every setup (columns): the most guarded duplicated
    effects in any record of the pair and how many records, ``none run yet``, or ``—`` where the
    setup does not run the scenario. Also (pairs with a record, pairs that could have one)."""
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        by_pair.setdefault((record["scenario"], record["setup"]), []).append(record)
    rows, covered, applicable = [], 0, 0
    for scenario in SCENARIO_NAMES:
        cells = [scenario]
        for name, setup in SETUPS.items():
            runs = by_pair.get((scenario, name), [])
            if not setup.applies_to(scenario):
                cells.append(DASH)
            elif scenario in WITHOUT_GUARDED_TASKS:
                cells.append("n/a")
            elif not runs:
                applicable += 1
                cells.append(NONE_YET)
            else:
                applicable += 1
                covered += 1
                worst = max(split_counts(r)["dup_effects_guarded"] for r in runs)
                cells.append(f"**{worst}** ({len(runs)} run{'s' if len(runs) > 1 else ''})")
        rows.append(tuple(cells))
    return rows, covered, applicable


def split_counts(record: dict[str, Any]) -> dict[str, int]:
    """Duplicated executions and effects of a run, for its guarded and its unguarded tasks."""
    c = record.get("counts") or {}
    dup, dup_g = c.get("duplicated") or 0, c.get("guarded_duplicated") or 0
    eff, eff_g = c.get("duplicated_effects") or 0, c.get("guarded_duplicated_effects") or 0
    return {
        "tasks": c.get("attempted") or 0,
        "guarded": c.get("guarded") or 0,
        "dup_exec_guarded": dup_g,
        "dup_exec_plain": dup - dup_g,
        "dup_effects_guarded": eff_g,
        "dup_effects_plain": eff - eff_g,
        "without_effect": c.get("guarded_without_effect") or 0,
    }


def load_cost_records(root: Path) -> list[dict[str, Any]]:
    """The idempotency-cost records under ``root`` (one per broker and driver), Redis first."""
    records = []
    for path in sorted((root / COST_CATEGORY).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if str(data.get("schema", "")).startswith("brokerstack.idempotency-cost/"):
            data["_path"] = str(path)
            records.append(data)
    return records


def spread(value: dict[str, Any] | None, fmt: str = "{:,.0f}") -> str:
    """``median (min-max)`` of a summarized figure; ``—`` if it was not measured."""
    if not value:
        return DASH
    median, low, high = (fmt.format(value[key]) for key in ("median", "min", "max"))
    return median if low == high else f"{median} ({low}-{high})"


def cost_rows(records: list[dict[str, Any]], *, by_command: bool = True) -> list[tuple[str, ...]]:
    """One row per broker: drain rate and result-backend commands per task, without and with the
    guarantee, and what the guarantee adds (the claim) beside the effect's own writes (each command
    named with ``by_command``)."""
    rows: list[tuple[str, ...]] = []
    for record in records:
        configs = record.get("configs") or {}
        plain, guarded = configs.get("unguarded") or {}, configs.get("guarded") or {}
        added = record.get("guarantee_commands") or {}
        named = ", ".join(f"{name} {value:g}" for name, value in (added.get("by_command") or {}).items())
        detail = f" ({named or DASH})" if by_command else ""
        rows.append(
            (
                str(record.get("broker_version") or record.get("broker")),
                spread(plain.get("drain_per_s")),
                spread(guarded.get("drain_per_s")),
                spread(plain.get("backend_commands"), "{:.2f}"),
                spread(guarded.get("backend_commands"), "{:.2f}"),
                f"{added.get('claim', 0):g} + {added.get('effect', 0):g}{detail}",
                spread(plain.get("cpu_ms"), "{:.2f}"),
                spread(guarded.get("cpu_ms"), "{:.2f}"),
            )
        )
    return rows


COST_HEADER = (
    "broker",
    "drain/s unguarded",
    "drain/s guarded",
    "backend cmds/task unguarded",
    "backend cmds/task guarded",
    "added: claim + effect (by command)",
    "worker CPU ms/task unguarded",
    "worker CPU ms/task guarded",
)


def rates_overlap(record: dict[str, Any]) -> bool:
    """Whether the guarded and unguarded drain rates' ranges overlap: no difference the noise allows."""
    configs = record.get("configs") or {}
    a, b = (configs.get(c, {}).get("drain_per_s") for c in ("unguarded", "guarded"))
    return bool(a and b and a["min"] <= b["max"] and b["min"] <= a["max"])


def cost_table(records: list[dict[str, Any]]) -> Any:
    """The cost as a rich Table, for ``brokerstack idempotency-cost``."""
    from rich.table import Table

    out = Table(title="IdempotentTask: cost per task (median (min-max) of alternated repetitions)")
    for column in COST_HEADER:
        out.add_column(column)
    for row in cost_rows(records, by_command=False):
        out.add_row(*row)
    return out


def idempotency_section(report: Any) -> str:
    """The section's Markdown."""
    from lab.report.render import table

    head = [
        "## Exactly-once effects: duplicated executions vs duplicated effects",
        "",
        "Both brokers deliver at least once, so a fault can run a task twice. Every chaos run's stream mixes "
        "tasks with brokerstack's exactly-once guarantee (`IdempotentTask`: a claim on the task id before the "
        "body, the effect and the claim's completion in one transaction; `docs/idempotency.md`) into plain "
        "no-ops, half and half at fixed seeded positions. A *duplicated execution* is a task id that finished "
        "more than once; a *duplicated effect* one whose effect happened more than once (a guarded task's "
        "committed effects; a plain task's every run), counted from the outbox, where the effect is (records made "
        "before that, from the ledger's effect entries). *Effect pending*: guarded tasks that finished without a "
        "committed effect by the end of the run (a claim left by a killed run holds it until its lease lapses).",
        "",
    ]
    rows = guarded_records(report)
    if not rows:
        head.append(f"No chaos records with guarded tasks yet: run `{CHAOS_COMMAND}`.")
    else:
        matrix, covered, applicable = coverage(rows)
        head += [
            "### Every scenario on every setup",
            "",
            "Per scenario and setup: the most guarded duplicated effects in any record of the pair (bold: must be "
            f"0) and how many records; *{NONE_YET}* where the pair has no record with guarded tasks, {DASH} where "
            "the setup does not run the scenario, n/a where the scenario's stream cannot carry the guarantee ("
            + "; ".join(f"{name}: {why}" for name, why in WITHOUT_GUARDED_TASKS.items())
            + f"). Pairs with a record: {covered} of {applicable}.",
            "",
            table(("scenario", *SETUPS), matrix),
            "",
            "### Every record with guarded tasks",
            "",
        ]
        out = []
        for record in rows:
            c = split_counts(record)
            transport = record_transport(record)
            out.append(
                (
                    record["setup"],
                    record["scenario"] + (f" ({transport} transport)" if transport == "kombu" else ""),
                    f"{record_size(record):,} tasks, {len(record.get('faults') or [])} faults",
                    f"{c['guarded']:,} of {c['tasks']:,}",
                    c["dup_exec_guarded"],
                    f"**{c['dup_effects_guarded']}**",
                    c["without_effect"],
                    c["dup_exec_plain"],
                    c["dup_effects_plain"],
                    cite(report, record),
                )
            )
        held = sum(1 for record in rows if split_counts(record)["dup_effects_guarded"] == 0)
        head += [
            table(
                (
                    "setup",
                    "scenario",
                    "size",
                    "guarded tasks",
                    "guarded: duplicated executions",
                    "guarded: duplicated effects",
                    "guarded: effect pending",
                    "unguarded: duplicated executions",
                    "unguarded: duplicated effects",
                    "run",
                ),
                out,
            ),
            "",
            f"Duplicated effects of guarded tasks were 0 in {held} of {len(rows)} runs (every completed record with "
            "guarded tasks, whatever its size; the durability table shows only the newest published one per pair). "
            f"Pairs marked *{NONE_YET}* above: `{CHAOS_COMMAND}`.",
        ]
    head += ["", "### What the guarantee costs per task", ""]
    records = sorted(
        load_cost_records(report.src.root), key=lambda r: (broker_rank(str(r.get("broker"))), str(r.get("broker")))
    )
    if not records:
        head.append(f"No idempotency-cost records yet: run `{COST_COMMAND}`.")
        return "\n".join(head)
    loads = sorted({value for r in records for value in (r.get("load_average_1m") or [])})
    sources = ", ".join(f"`{Path(r['_path']).name}`" for r in records)
    head += [
        "A backlog of the same no-op without (`noop`) and with the guarantee (`guarded_noop`, whose effect is one "
        "outbox entry) drained by one solo worker; the result backend's Redis commands per task (the claim and "
        "the outbox live there) counted on the server. The guarded task's extra commands are split into the "
        "claim's (the guarantee) and the effect's own writes. Median (min-max) of "
        f"{records[0].get('repetitions', '?')} alternated repetitions of {records[0].get('tasks', '?'):,} tasks.",
        "",
        table(COST_HEADER, cost_rows(records)),
        "",
        "The command counts do not depend on the machine. The drain rates do, and the machine was shared with "
        f"other measurements while they ran (1-minute load average {loads[0]:.1f}-{loads[-1]:.1f} on "
        f"{(records[0].get('machine') or {}).get('cpus', '?')} CPUs): compare the two columns of one row, not "
        "rows with other sections."
        + (
            f" On {', '.join(str(r.get('broker')) for r in overlapping)} the two rates' ranges overlap: no "
            "difference this machine could tell apart from its noise; the commands and round trips are the cost."
            if (overlapping := [r for r in records if rates_overlap(r)])
            else ""
        )
        + f" Records: {sources} in `results/{COST_CATEGORY}/` (`{COST_COMMAND}`).",
    ]
    return "\n".join(head)
