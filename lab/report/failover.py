"""The *Failover and partitions* section of docs/ops-comparison.md: what the high-availability
setups lost, repeated and how long they took to work again when the node that leads was killed
(``failover``) or cut off from its peers (``partition``), from the chaos records, with a chart.

Times are per fault: the median of a run's faults with their range. ``promoted`` is until another
node led (the sentinels named a new primary / a new queue leader was reported), ``producer back``
and ``workers back`` until a publish was acknowledged and a task started again (from the fault),
``rejoined`` until the node hit served again as a replica / member."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from lab.harness.setups import HA_SCENARIOS, SETUPS

DASH = "—"  # as in lab.report.render
#: The fault-entry fields the table and chart summarise (seconds per fault).
TIMES = ("promoted_s", "producer_recovery_s", "consumer_recovery_s", "rejoined_s")
COMMAND = "brokerstack chaos run --scenario failover|partition --setup <setup> --tasks 5000 --kills 3 --driver docker"


def spread(values: list[float | None]) -> str:
    """``median (min-max)`` in seconds over the faults that measured it; ``—`` if none did; a
    count of the faults that did not, after it."""
    present = [v for v in values if v is not None]
    if not present:
        return DASH
    median, low, high = statistics.median(present), min(present), max(present)
    text = f"{median:.1f} s" if low == high else f"{median:.1f} s ({low:.1f}-{high:.1f})"
    missing = len(values) - len(present)
    return text + (f", {missing} never" if missing else "")


def leaders(faults: list[dict[str, Any]]) -> str:
    """``r0→r2, r2→r1``: who led before and after each fault, by the node name's last part."""

    def short(name: Any) -> str:
        return DASH if not name else str(name).rsplit("-", 1)[-1]

    return ", ".join(f"{short(f.get('leader_before'))}→{short(f.get('leader_after'))}" for f in faults) or DASH


def ha_rows(report: Any) -> list[dict[str, Any]]:
    """The report's fixed-size chaos rows of the HA scenarios, in setup then scenario order."""
    rows = [r for r in report.chaos_rows if r["scenario"] in HA_SCENARIOS and r["mode"] == "fixed"]
    order = list(SETUPS)
    return sorted(
        rows,
        key=lambda r: (
            order.index(r["setup"]) if r["setup"] in order else len(order),
            HA_SCENARIOS.index(r["scenario"]),
        ),
    )


def failover_section(report: Any) -> str:
    """The section's Markdown (and its chart, drawn through the report's chart hook)."""
    # The report's own cell and table formatting (imported here: render.py calls this function).
    from lab.report.render import n as _n
    from lab.report.render import table as _table

    rows = ha_rows(report)
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
        "- `redis-sentinel-wait`: " + SETUPS["redis-sentinel-wait"].guarantee + ". What it costs in throughput is "
        "not measured here (these runs publish at a set rate); by design it adds no round trip to a write, only a "
        "check on the primary of when each replica last acknowledged (a `WAIT` after every publish would add a "
        "replication round trip to each; brokerstack's Redis transport issues none).",
        "- `rabbitmq-quorum-cluster`: " + SETUPS["rabbitmq-quorum-cluster"].guarantee + ".",
        "- `rabbitmq-classic-cluster`: " + SETUPS["rabbitmq-classic-cluster"].guarantee + ".",
        "",
    ]
    if not rows:
        return "\n".join([*head, f"No failover or partition records yet: run `{COMMAND}`."])
    table_rows = []
    for row in rows:
        record = row["_record"]
        faults = record.get("faults") or []
        held = {True: "yes", False: "**no**", None: "(none promised)"}[row["held"]]
        table_rows.append(
            (
                row["setup"],
                row["scenario"],
                _n(row["faults"]),
                _n(row["acknowledged"]),
                _n(row["lost"]),
                _n(row["duplicated"]),
                _n(row["recovered"]),
                *(spread([f.get(key) for f in faults]) for key in TIMES),
                leaders(faults),
                held,
                report.src.cite(record),
            )
        )
    header = (
        "setup",
        "scenario",
        "faults",
        "acknowledged",
        "lost",
        "duplicated",
        "recovered",
        "another leads",
        "producer back",
        "workers back",
        "rejoined",
        "leader before→after",
        "promise held",
        "run",
    )
    text = [
        *head,
        "Seconds are per fault, the median with the range over the run's faults, counted from the kill or the cut.",
        "",
        _table(header, table_rows),
    ]
    chart = report._chart(failover_chart, rows, "failover.png")
    if chart:
        text += ["", f"![lost tasks and recovery per HA setup and scenario]({report._rel(chart)})"]
    text += ["", f"To measure again: `{COMMAND}`."]
    return "\n".join(text)


def failover_chart(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Left: acknowledged tasks lost per setup and scenario (count on every bar). Right: seconds
    until producers and workers worked again, median per fault with the range as whiskers."""
    import matplotlib.pyplot as plt

    from lab.report.charts import _save

    if not rows:
        return None
    setups = list(dict.fromkeys(r["setup"] for r in rows))
    fig, (lost_ax, time_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(HA_SCENARIOS)
    for i, scenario in enumerate(HA_SCENARIOS):
        by_setup = {r["setup"]: r for r in rows if r["scenario"] == scenario}
        xs = [x + i * width for x in range(len(setups))]
        lost = [(by_setup.get(s) or {}).get("lost") for s in setups]
        lost_ax.bar(xs, [v or 0 for v in lost], width, label=scenario)
        for x, v in zip(xs, lost, strict=True):
            if v is not None:
                lost_ax.annotate(
                    f"{v:,}", (x, v), ha="center", va="bottom", fontsize=8, color="black" if v else "green"
                )
        for j, (key, hatch) in enumerate((("producer_recovery_s", ""), ("consumer_recovery_s", "///"))):
            offsets = [x + i * width + (j - 0.5) * width / 2 for x in range(len(setups))]
            medians, low, high = [], [], []
            for s in setups:
                faults = ((by_setup.get(s) or {}).get("_record") or {}).get("faults") or []
                values = [f[key] for f in faults if f.get(key) is not None]
                m = statistics.median(values) if values else 0.0
                medians.append(m)
                low.append(m - min(values) if values else 0.0)
                high.append(max(values) - m if values else 0.0)
            label = f"{scenario}: {'producer' if j == 0 else 'workers'} back"
            time_ax.bar(
                offsets, medians, width / 2, yerr=[low, high], capsize=2, hatch=hatch, color=f"C{i}", label=label
            )
    for ax in (lost_ax, time_ax):
        ax.set_xticks([x + width * (len(HA_SCENARIOS) - 1) / 2 for x in range(len(setups))], setups, rotation=15)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    lost_ax.set_yscale("symlog", linthresh=1)
    lost_ax.set_ylim(0, max([r["lost"] or 0 for r in rows] + [1]) * 8)
    lost_ax.set_ylabel("acknowledged tasks lost (0, then log)")
    lost_ax.set_title("Lost (green 0 = nothing lost)")
    time_ax.set_ylabel("seconds after the fault (median, range)")
    time_ax.set_title("Until producers and workers worked again")
    return Path(_save(fig, path))
