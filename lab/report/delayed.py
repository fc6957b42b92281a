"""The *Delayed tasks* section of docs/ops-comparison.md: what each setup lost, ran twice and how late
it ran tasks with a countdown when the broker and a worker were killed while the tasks waited in the
broker (``delayed``: lab.experiments.chaos.scenarios.delayed), from the chaos records.

Lateness is run time (a task's first start) minus its due time, over the tasks of a run: its p50,
p99 and max per run. A setup run several times at the same size is one row: each cell the median of
the runs with the range (the earlier runs are read and cited as in the failover section)."""

from __future__ import annotations

from typing import Any

from lab.report.repeats import held, repeated_groups, spread

DASH = "—"  # as in lab.report.render
SCENARIO = "delayed"
COMMAND = "brokerstack chaos run --scenario delayed --setup <setup> --tasks 10000 --kills 3 --driver docker"
#: The lateness figures a row shows (keys of the record's ``timings.lateness_s``).
LATENESS = ("p50", "p99", "max")


def delayed_groups(report: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """(setup, rows: every fixed-size run of ``delayed`` on it, oldest first), in setup order."""
    return [(setup, rows) for setup, _, rows in repeated_groups(report, (SCENARIO,))]


def lateness_of(row: dict[str, Any], key: str) -> float | None:
    late = (row["_record"].get("timings") or {}).get("lateness_s") or {}
    return late.get(key)


def guarded_duplicated_effects(row: dict[str, Any]) -> int | None:
    """Duplicated effects of the run's guarded tasks (issue 15; None: a run without guarded tasks,
    made before the scenario mixed them in)."""
    counts = row["_record"].get("counts") or {}
    return counts.get("guarded_duplicated_effects") if counts.get("guarded") else None


def seconds_spread(values: list[float | None]) -> str:
    """``median (min-max)`` in seconds to the hundredth (on-time runs are well under a second)."""
    return spread(values, unit=" s", digits=2)


def delayed_section(report: Any) -> str:
    """The section's Markdown."""
    from lab.report.render import table

    head = [
        "## Delayed tasks: held by the broker through kills",
        "",
        "A task with a countdown or ETA waits in the broker until it is due (Redis: a sorted set per queue that "
        "every consumer moves from atomically; RabbitMQ: the TTL ladder of kombu's native delayed delivery, on "
        "classic and quorum queues), not in a worker's memory. Here N no-op tasks are published with countdowns "
        "spread over the next minutes; while they wait, the broker is killed (`kill -9`, restarted on its data) "
        "and a worker is killed (and replaced), in turn. *Lateness* is when a task first started minus when it "
        "was due: a task due while the broker was down runs late by the outage, one lost never runs.",
        "",
    ]
    groups = delayed_groups(report)
    if not groups:
        return "\n".join([*head, f"No delayed records yet: run `{COMMAND}`."])
    rows_out = []
    for setup, rows in groups:
        rows_out.append(
            (
                setup,
                str(len(rows)),
                spread([r["acknowledged"] for r in rows]),
                spread([r["faults"] for r in rows]),
                spread([r["lost"] for r in rows]),
                spread([r["duplicated"] for r in rows]),
                spread([guarded_duplicated_effects(r) for r in rows]),
                *(seconds_spread([lateness_of(r, key) for r in rows]) for key in LATENESS),
                seconds_spread([(r["_record"].get("timings") or {}).get("load_s") for r in rows]),
                held(rows),
                ", ".join(report.src.cite(r["_record"]) for r in rows),
            )
        )
    header = (
        "setup",
        "runs",
        "acknowledged",
        "kills",
        "lost",
        "duplicated",
        "guarded: duplicated effects",
        "lateness p50",
        "lateness p99",
        "lateness max",
        "publishing took",
        "promise held",
        "run",
    )
    return "\n".join(
        [
            *head,
            "Counts and lateness per run; the median and range when several runs are counted. About half the tasks "
            "carry the exactly-once guarantee (`IdempotentTask`): *guarded: duplicated effects* counts those whose "
            "effect happened twice (— for runs made before they were mixed in). *Publishing took* is "
            "how long the producer needed for all N (countdowns start at each publish): on a busy machine, tasks come "
            "due while others are still published and the workers fall behind, which shows as lateness too.",
            "",
            table(header, rows_out),
            "",
            f"To measure again: `{COMMAND}`.",
        ]
    )
