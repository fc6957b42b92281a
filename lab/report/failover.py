"""The *Failover and partitions* section of docs/ops-comparison.md: what the high-availability
setups lost, repeated and how long they took to work again when the node that leads was killed
(``failover``) or cut off from its peers (``partition``), from the chaos records, with a chart;
and what ``min-replicas-to-write`` costs in throughput, from the newest wait-cost record
(lab.experiments.wait_cost).

Counts are per run. A setup and scenario run several times at the same size (other seeds) is one
row: each count the median of the runs with its range. The report's sources hold the newest run
of each pair; the earlier runs of the same size, driver and transport are read here and cited
beside it. Times are per fault, pooled over the runs: the median with the range. ``promoted`` is
until another node led (the sentinels named a new primary / a new queue leader was reported),
``producer back`` and ``workers back`` until a publish was acknowledged and a task started again
(from the fault), ``rejoined`` until the node hit served again as a replica / member."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from lab.harness.setups import HA_SCENARIOS, SETUPS
from lab.report import repeats
from lab.report.repeats import held, repeated_groups
from lab.report.repeats import spread as count_spread

DASH = "—"  # as in lab.report.render
#: The fault-entry fields the table and chart summarise (seconds per fault).
TIMES = ("promoted_s", "producer_recovery_s", "consumer_recovery_s", "rejoined_s")
COMMAND = "brokerstack chaos run --scenario failover|partition --setup <setup> --tasks 5000 --kills 3 --driver docker"
#: The counts a row gives as the median of its runs with the range.
COUNTS = ("acknowledged", "lost", "duplicated", "recovered")
#: Where lab.experiments.wait_cost writes (under the results directory), what it writes, how to rerun.
WAIT_COST_DIR = "wait-cost"
WAIT_COST_SCHEMA = "brokerstack.wait-cost/1"
WAIT_COST_COMMAND = "brokerstack wait-cost --tasks 3000 --repetitions 3 --driver docker"
WAIT_COST_RATES = (("publish", "publish"), ("drain", "drain (1 solo worker)"), ("combined", "publish + drain"))


def spread(values: list[float | None]) -> str:
    """``median (min-max)`` in seconds over the faults that measured it; ``—`` if none did; a
    count of the faults that did not, after it."""
    missing = sum(1 for v in values if v is None)
    text = repeats.spread(values, unit=" s", digits=1)
    return text + (f", {missing} never" if missing and text != DASH else "")


def leaders(faults: list[dict[str, Any]]) -> str:
    """``r0→r2, r2→r1``: who led before and after each fault, by the node name's last part."""

    def short(name: Any) -> str:
        return DASH if not name else str(name).rsplit("-", 1)[-1]

    return ", ".join(f"{short(f.get('leader_before'))}→{short(f.get('leader_after'))}" for f in faults) or DASH


def ha_groups(report: Any) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(setup, scenario, rows: every run of the pair, oldest first) of the fixed-size HA runs, in
    setup then scenario order."""
    return repeated_groups(report, HA_SCENARIOS)


def ha_rows(report: Any) -> list[dict[str, Any]]:
    """Every fixed-size HA run the section counts, in setup then scenario order."""
    return [row for _, _, rows in ha_groups(report) for row in rows]


def _faults(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for r in rows for f in (r["_record"].get("faults") or [])]


def failover_section(report: Any) -> str:
    """The section's Markdown (and its chart, drawn through the report's chart hook)."""
    # The report's own table formatting (imported here: render.py calls this function).
    from lab.report.render import table as _table

    groups = ha_groups(report)
    head = [
        "## Failover and partitions",
        "",
        "Three Redis nodes with three Sentinels (the app finds the primary through them) against three RabbitMQ "
        "nodes. `failover`: `kill -9` of the Redis primary / of the node leading the work queue, under load, and "
        "the node restarted to rejoin. `partition`: that node cut off from its peers (docker network disconnect) "
        "while producers and workers can still reach it, then healed: on Redis the isolated primary keeps taking "
        "writes while the sentinels promote a replica, and the heal turns it into a replica that drops them; "
        "RabbitMQ runs `pause_minority`, so the isolated node stops serving and its clients move to the majority.",
        "",
        "- `redis-sentinel`: " + SETUPS["redis-sentinel"].guarantee + ".",
        "- `redis-sentinel-wait`: " + SETUPS["redis-sentinel-wait"].guarantee + ". Its throughput cost is "
        "below the table.",
        "- `rabbitmq-quorum-cluster`: " + SETUPS["rabbitmq-quorum-cluster"].guarantee + ".",
        "- `rabbitmq-classic-cluster`: " + SETUPS["rabbitmq-classic-cluster"].guarantee + ".",
        "",
    ]
    if not groups:
        return "\n".join([*head, f"No failover or partition records yet: run `{COMMAND}`.", "", *wait_cost(report)])
    table_rows = []
    for setup, scenario, rows in groups:
        faults = _faults(rows)
        table_rows.append(
            (
                setup,
                scenario,
                str(len(rows)),
                str(sum(r["faults"] or 0 for r in rows)),
                *(count_spread([r[key] for r in rows]) for key in COUNTS),
                *(spread([f.get(key) for f in faults]) for key in TIMES),
                "; ".join(leaders(r["_record"].get("faults") or []) for r in rows),
                held(rows),
                ", ".join(report.src.cite(r["_record"]) for r in rows),
            )
        )
    header = (
        "setup",
        "scenario",
        "runs",
        "faults",
        "acknowledged",
        "lost",
        "duplicated",
        "recovered",
        "another leads",
        "producer back",
        "workers back",
        "rejoined",
        "leader before→after (per run)",
        "promise held",
        "runs cited",
    )
    text = [
        *head,
        "Counts are per run of 5,000 tasks with 3 faults: with several runs (other seeds: other fault points), "
        "the median with the range over the runs. Seconds are per fault, pooled over the runs: the median with "
        "the range, counted from the kill or the cut. Counts are exact; the seconds come from a shared 2-core "
        "machine and are noisy.",
        "",
        _table(header, table_rows),
    ]
    text += [
        "",
        "Reading the Redis partition rows: the heal discards whatever the isolated primary acknowledged after the "
        "cut; a task counts as lost only if no worker (still connected to that primary) ran it before. With "
        "`min-replicas-to-write` the isolated primary refuses writes once no replica has acknowledged for "
        "`min-replicas-max-lag` seconds (those publishes fail, the API answers 503, nothing is acknowledged), "
        "but what it took until then is discarded all the same: how much of it is lost depends on how far the "
        "workers lag behind the producers at the cut, which the setting does not bound. "
        "`tests/chaos/test_ha.py` checks both halves on an isolated primary: writes acknowledged after the cut, "
        "then NOREPLICAS.",
    ]
    chart = report._chart(failover_chart, groups, "failover.png")
    if chart:
        text += ["", f"![lost tasks and recovery per HA setup and scenario]({report._rel(chart)})"]
    text += ["", f"To measure again: `{COMMAND}` (add `--seed <n>` for another repetition).", "", *wait_cost(report)]
    return "\n".join(text)


# --- what min-replicas-to-write costs -------------------------------------------------------------


def newest_wait_cost(root: Path) -> dict[str, Any] | None:
    """The newest wait-cost record under ``root`` (None if there is none), with ``_path``."""
    newest: dict[str, Any] | None = None
    for path in sorted((root / WAIT_COST_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("schema") != WAIT_COST_SCHEMA:
            continue
        if newest is None or str(data.get("started_at")) >= str(newest.get("started_at")):
            newest = {**data, "_path": str(path)}
    return newest


def _rate(summary: dict[str, Any] | None) -> str:
    if not summary or summary.get("per_s") is None:
        return DASH
    low, high = summary.get("per_s_min"), summary.get("per_s_max")
    text = f"{summary['per_s']:,.0f}/s"
    return text if low is None or low == high else f"{text} ({low:,.0f}-{high:,.0f})"


def _refused(per_run: list[dict[str, int]] | None) -> str:
    """NOREPLICAS replies of the primary in each repetition (``—`` in records without the count)."""
    if per_run is None:
        return DASH
    return ", ".join(str(errors.get("NOREPLICAS", 0)) for errors in per_run)


def _cite_wait_cost(report: Any, record: dict[str, Any]) -> str:
    """``[W1]`` listed among the report's runs (a plain link where the report keeps no list)."""
    cited = getattr(report.src, "cited", None)
    if cited is None:
        return f"`{record['_path']}`"
    from lab.report.sources import Source

    label = "W1"
    summary = (
        f"wait-cost {' vs '.join(record.get('setups') or {})} ({record.get('driver')}), "
        f"{record['started_at'][:16]}Z, {record['parameters']['tasks']} tasks x "
        f"{record['parameters']['repetitions']} alternated repetitions"
    )
    cited[label] = Source(label, Path(record["_path"]), summary)
    return f"[{label}]"


def wait_cost(report: Any) -> list[str]:
    """The throughput of redis-sentinel and redis-sentinel-wait side by side, from the newest record."""
    from lab.report.render import table as _table

    head = ["### What `min-replicas-to-write` costs", ""]
    root = getattr(report.src, "root", None)
    record = newest_wait_cost(Path(root)) if root is not None else None
    if record is None:
        return [*head, f"Not measured yet: run `{WAIT_COST_COMMAND}`."]
    setups = record.get("setups") or {}
    p = record.get("parameters") or {}
    rows = []
    for name, row in setups.items():
        barrier = row.get("barrier") or {}
        rows.append(
            (
                name,
                f"{barrier.get('min_replicas_to_write', DASH)} / {barrier.get('min_replicas_max_lag', DASH)} s",
                *(_rate(row.get(key)) for key, _ in WAIT_COST_RATES),
                _refused(row.get("error_replies")),
            )
        )
    comparison = record.get("comparison") or {}
    verdicts = []
    for key, title in WAIT_COST_RATES:
        found = comparison.get(key) or {}
        verdicts.append(f"{title} x{found.get('ratio', DASH)} ({found.get('verdict', DASH)})")
    ratio_of = next((c.get("ratio_of") for c in comparison.values() if c), "")
    return [
        *head,
        f"Both Sentinel groups up side by side; per repetition {p.get('tasks'):,} noop tasks published through "
        "brokerstack's app from one thread (no worker running), then drained by one fresh solo worker with "
        f"brokerstack's defaults; the two setups alternated, {p.get('repetitions')} repetitions each after an "
        "unmeasured warm-up. Rates are medians with their range; ranges that overlap are called no difference. "
        "The barrier column is what each primary reported (`CONFIG GET`), so the setting was on where it should be. "
        "The refused-writes column is the primary's NOREPLICAS replies (`INFO errorstats`): with the barrier on, a "
        "replica that falls `min-replicas-max-lag` seconds behind (a busy machine is enough, no fault needed) makes "
        "the primary refuse writes, which the clients retry as a lost connection; that is the barrier's cost beyond "
        "the check itself. The machine is shared (2 cores, other measurements beside it): the rates are noisy and "
        "a difference counts only where the ranges do not overlap.",
        "",
        _table(
            (
                "setup",
                "min-replicas-to-write / max-lag",
                *(title for _, title in WAIT_COST_RATES),
                "writes refused (NOREPLICAS) per repetition",
                "run",
            ),
            [(*row, _cite_wait_cost(report, record) if i == 0 else "") for i, row in enumerate(rows)],
        ),
        "",
        f"{ratio_of}: " + "; ".join(verdicts) + ". `min-replicas-to-write` adds no round trip to a write (the "
        "primary only checks when each replica last acknowledged); a `WAIT` after every publish would add one, "
        "and brokerstack's Redis transport issues none.",
        "",
        f"To measure again: `{WAIT_COST_COMMAND}`.",
    ]


# --- the chart ----------------------------------------------------------------------------------------


def _median_and_errors(values: list[float]) -> tuple[float, float, float]:
    """(median, below, above): the median and how far the range reaches either side (0s if none)."""
    if not values:
        return 0.0, 0.0, 0.0
    m = statistics.median(values)
    return m, m - min(values), max(values) - m


def failover_chart(groups: list[tuple[str, str, list[dict[str, Any]]]], path: Path) -> Path | None:
    """Left: acknowledged tasks lost per setup and scenario, the median of the runs with the range
    as whiskers (the median on every bar). Right: seconds until producers and workers worked
    again, the median per fault with the range as whiskers."""
    import matplotlib.pyplot as plt

    from lab.report.charts import _save

    if not groups:
        return None
    setups = list(dict.fromkeys(setup for setup, _, _ in groups))
    fig, (lost_ax, time_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(HA_SCENARIOS)
    highest = 1.0
    for i, scenario in enumerate(HA_SCENARIOS):
        by_setup = {setup: rows for setup, s, rows in groups if s == scenario}
        xs = [x + i * width for x in range(len(setups))]
        lost = [_median_and_errors([r["lost"] for r in by_setup.get(s, []) if r["lost"] is not None]) for s in setups]
        highest = max([highest, *(m + above for m, _, above in lost)])
        lost_ax.bar(
            xs,
            [m for m, _, _ in lost],
            width,
            yerr=[[below for _, below, _ in lost], [above for _, _, above in lost]],
            capsize=2,
            label=scenario,
        )
        for x, s, (m, _, _) in zip(xs, setups, lost, strict=True):
            if by_setup.get(s):
                lost_ax.annotate(
                    f"{m:,.0f}" if float(m).is_integer() else f"{m:,.1f}",
                    (x, m),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color="black" if m else "green",
                )
        for j, (key, hatch) in enumerate((("producer_recovery_s", ""), ("consumer_recovery_s", "///"))):
            offsets = [x + i * width + (j - 0.5) * width / 2 for x in range(len(setups))]
            times = [
                _median_and_errors([f[key] for f in _faults(by_setup.get(s, [])) if f.get(key) is not None])
                for s in setups
            ]
            label = f"{scenario}: {'producer' if j == 0 else 'workers'} back"
            time_ax.bar(
                offsets,
                [m for m, _, _ in times],
                width / 2,
                yerr=[[below for _, below, _ in times], [above for _, _, above in times]],
                capsize=2,
                hatch=hatch,
                color=f"C{i}",
                label=label,
            )
    for ax in (lost_ax, time_ax):
        ax.set_xticks([x + width * (len(HA_SCENARIOS) - 1) / 2 for x in range(len(setups))], setups, rotation=15)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    lost_ax.set_yscale("symlog", linthresh=1)
    lost_ax.set_ylim(0, highest * 8)
    lost_ax.set_ylabel("acknowledged tasks lost per run (0, then log)")
    lost_ax.set_title("Lost: median of the runs, range as whiskers (green 0 = nothing lost)")
    time_ax.set_ylabel("seconds after the fault (median, range)")
    time_ax.set_title("Until producers and workers worked again")
    return Path(_save(fig, path))
