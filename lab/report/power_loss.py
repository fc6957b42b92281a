"""The *Machine crash* section of docs/ops-comparison.md: what each setup lost when the broker's
machine lost power (``power-loss``: the data directory on LazyFS, ``kill -9`` and every byte not
fsynced dropped; ``power-loss-node`` / ``power-loss-all``: one or all three nodes of the quorum
cluster), from the chaos records, with a chart.

Counts are per run; where several runs of one setup and scenario are counted, each cell is their
median with the range. Restart times are per power cut: the median with the range."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from lab.harness.setups import SETUPS

DASH = "—"  # as in lab.report.render
#: The scenarios of this section, in table order.
POWER_LOSS_SCENARIOS = ("power-loss", "power-loss-node", "power-loss-all")
COMMAND = "brokerstack chaos run --scenario power-loss --setup <setup> --tasks 5000 --kills 3"


def spread(values: list[Any], unit: str = "") -> str:
    """``median (min-max)`` over the values present, ``—`` if none."""
    present = [v for v in values if v is not None]
    if not present:
        return DASH
    median, low, high = statistics.median(present), min(present), max(present)

    def fmt(v: float) -> str:
        return f"{v:,.1f}" if unit else f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"

    return fmt(median) + unit if low == high else f"{fmt(median)}{unit} ({fmt(low)}-{fmt(high)})"


def power_loss_groups(report: Any) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(setup, scenario, rows) of the report's fixed-size power-loss runs, in setup then scenario order."""
    rows = [r for r in report.chaos_rows if r["scenario"] in POWER_LOSS_SCENARIOS and r["mode"] == "fixed"]
    order = list(SETUPS)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["setup"], row["scenario"]), []).append(row)
    keys = sorted(
        groups,
        key=lambda k: (order.index(k[0]) if k[0] in order else len(order), POWER_LOSS_SCENARIOS.index(k[1])),
    )
    return [(setup, scenario, groups[(setup, scenario)]) for setup, scenario in keys]


def _held(rows: list[dict[str, Any]]) -> str:
    helds = {r["held"] for r in rows}
    if False in helds:
        return "**no**"
    return "yes" if True in helds else "(none promised)"


def _repairs(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows for f in (r["_record"].get("faults") or []) if f.get("aof_repair"))


def _not_booted(rows: list[dict[str, Any]]) -> int:
    """Nodes that would not boot again on what survived (started afresh on an emptied directory)."""
    return sum(len(f.get("not_booted") or []) for r in rows for f in (r["_record"].get("faults") or []))


def power_loss_section(report: Any) -> str:
    """The section's Markdown (and its chart, drawn through the report's chart hook)."""
    from lab.report.render import table as _table

    groups = power_loss_groups(report)
    head = [
        "## Machine crash: what a power cut loses",
        "",
        "`kill -9` of a broker loses nothing it had handed to the kernel: the page cache outlives the process, so "
        "every durable setup keeps everything in *broker-kill*. A machine crash loses the page cache too. Here the "
        "broker's data directory is on LazyFS (a FUSE file system with its own page cache, as Jepsen uses), "
        "checkpointed after boot; under load the broker is killed with `kill -9` and LazyFS drops every byte it had "
        "not fsynced (`lazyfs::clear-cache`), then the broker boots again on what is left. Workers, the producer "
        "and the ledger are on other machines and stay up. A Redis that refuses its AOF afterwards is repaired as "
        "an operator would (`redis-check-aof --fix`); a node that still does not boot on what survived is "
        "started afresh on an emptied data directory (all it held is lost, and counted); the table says how often "
        "each happened. `power-loss-node` cuts the "
        "machine of the quorum queue leader's node of three, `power-loss-all` all three at once.",
        "",
    ]
    if not groups:
        return "\n".join([*head, f"No power-loss records yet: run `{COMMAND}`."])
    table_rows = []
    for setup, scenario, rows in groups:
        faults = [f for r in rows for f in (r["_record"].get("faults") or [])]
        table_rows.append(
            (
                setup,
                scenario,
                spread([r["faults"] for r in rows]),
                spread([r["acknowledged"] for r in rows]),
                spread([r["lost"] for r in rows]),
                spread([r["lost_per_fault"] for r in rows]),
                spread([r["duplicated"] for r in rows]),
                spread([f.get("restart_s") for f in faults], " s"),
                str(_repairs(rows)),
                str(_not_booted(rows)),
                _held(rows),
                ", ".join(report.src.cite(r["_record"]) for r in rows),
            )
        )
    header = (
        "setup",
        "scenario",
        "power cuts",
        "acknowledged",
        "lost",
        "lost per cut",
        "duplicated",
        "boot after the cut",
        "AOF repaired",
        "did not boot",
        "promise held",
        "run",
    )
    text = [
        *head,
        "Counts per run (the median and range when several runs are counted); boot time per cut, median and range.",
        "",
        _table(header, table_rows),
    ]
    chart = report._chart(power_loss_chart, [row for _, _, rows in groups for row in rows], "power-loss.png")
    if chart:
        text += ["", f"![acknowledged tasks lost per power cut, per setup]({report._rel(chart)})"]
    text += [
        "",
        f"To measure again: `{COMMAND}` (and `--scenario power-loss-node|power-loss-all --setup rabbitmq-quorum`).",
    ]
    return "\n".join(text)


def power_loss_chart(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Acknowledged tasks lost per power cut, one bar per setup and scenario (median over runs,
    the range as whiskers; the count on every bar, green where nothing was lost)."""
    import matplotlib.pyplot as plt

    from lab.report.charts import _save

    if not rows:
        return None
    labels = list(dict.fromkeys(f"{r['setup']}\n{r['scenario']}" for r in rows))
    values: dict[str, list[float]] = {label: [] for label in labels}
    for r in rows:
        if r["lost_per_fault"] is not None:
            values[f"{r['setup']}\n{r['scenario']}"].append(r["lost_per_fault"])
    medians = [statistics.median(values[label]) if values[label] else 0.0 for label in labels]
    low = [m - min(values[label]) if values[label] else 0.0 for m, label in zip(medians, labels, strict=True)]
    high = [max(values[label]) - m if values[label] else 0.0 for m, label in zip(medians, labels, strict=True)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(labels)), 4.6))
    xs = list(range(len(labels)))
    ax.bar(xs, medians, 0.6, yerr=[low, high], capsize=3, color=["C3" if m else "C2" for m in medians])
    for x, m in zip(xs, medians, strict=True):
        ax.annotate(f"{m:,.1f}", (x, m), ha="center", va="bottom", fontsize=8, color="black" if m else "green")
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, max([*medians, 1.0]) * 8)
    ax.set_ylabel("acknowledged tasks lost per power cut (0, then log)")
    ax.set_title("Machine crash: lost per power cut (green 0 = nothing lost)")
    ax.grid(axis="y", alpha=0.3)
    return Path(_save(fig, path))
