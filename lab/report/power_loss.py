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
from lab.report.repeats import held, repeated_groups, spread

DASH = "—"  # as in lab.report.render
#: The scenarios of this section, in table order.
POWER_LOSS_SCENARIOS = ("power-loss", "power-loss-node", "power-loss-all")
COMMAND = "brokerstack chaos run --scenario power-loss --setup <setup> --tasks 5000 --kills 3"


def power_loss_groups(report: Any) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(setup, scenario, rows: every run of the pair under the current fault model, oldest first),
    in setup then scenario order."""
    return repeated_groups(report, POWER_LOSS_SCENARIOS)


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
        "broker's data directory is on LazyFS (a FUSE file system with its own page cache, as Jepsen uses); "
        "under load the broker is killed with `kill -9` and LazyFS drops every byte it had "
        "not fsynced (`lazyfs::clear-cache`), then the broker boots again on what is left. Workers, the producer "
        "and the ledger are on other machines and stay up. LazyFS keeps unsynced bytes for ever, a kernel writes "
        "them back within ~30 s: so every disk is checkpointed (`lazyfs::cache-checkpoint`) after the first boot "
        "and after every reboot, once the nodes serve again, and each record gives how long after that checkpoint "
        "each cut came (at 35 s or more the model keeps nothing a real machine would not have). Without it "
        "RabbitMQ's Mnesia `schema.DAT`, rewritten at every boot and never fsynced, was torn by the next cut "
        "(`not_a_dets_file`) and the node did not boot: what a real node risks only when the power goes again "
        "within ~30 s of a boot. A Redis that refuses its AOF afterwards is repaired as "
        "an operator would (`redis-check-aof --fix`); a node that still does not boot on what survived is "
        "started afresh on an emptied data directory (in a cluster, after `forget_cluster_node` on a peer, with "
        "its quorum queue replicas grown back; what it held is lost, and counted); the table says how often "
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
                spread([f.get("restart_s") for f in faults], unit=" s", digits=1),
                spread([f.get("since_checkpoint_s") for f in faults], unit=" s", digits=1),
                str(_repairs(rows)),
                str(_not_booted(rows)),
                held(rows),
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
        "cut after checkpoint",
        "AOF repaired",
        "did not boot",
        "promise held",
        "run",
    )
    text = [
        *head,
        "Counts per run (the median and range when several runs are counted); boot time, and how long after the "
        "last checkpoint each cut came, per cut: median and range (— where the run predates the checkpoint model).",
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


# --- what the rest of the report cites ------------------------------------------------------------


def power_loss_rows(report: Any) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(setup, scenario) -> the fixed-size power-loss runs the report counts."""
    return {(setup, scenario): rows for setup, scenario, rows in power_loss_groups(report)}


def lost_of(report: Any, rows: list[dict[str, Any]]) -> str:
    """``lost L of A acknowledged over K power cuts [run]``: medians and ranges over the runs."""
    cites = ", ".join(report.src.cite(r["_record"]) for r in rows)
    return (
        f"lost {spread([r['lost'] for r in rows])} of {spread([r['acknowledged'] for r in rows])} acknowledged "
        f"over {spread([r['faults'] for r in rows])} power cuts {cites}"
    )


def cut_lost(report: Any, setup: str, scenario: str = "power-loss") -> str | None:
    """``<setup> lost ... [run]`` for one setup and scenario, None if not measured."""
    rows = power_loss_rows(report).get((setup, scenario))
    return None if not rows else f"{setup} {lost_of(report, rows)}"


def _max_lost(rows: list[dict[str, Any]]) -> int:
    return max((r["lost"] or 0) for r in rows)


def power_loss_answer(report: Any) -> str:
    """The walkthrough table's *message persistence* cell, from the power-loss runs: what each setup
    kept when the broker's machine lost power (empty if none was measured)."""
    groups = power_loss_groups(report)
    if not groups:
        return ""
    parts = []
    for setup, scenario, rows in groups:
        which = "" if scenario == "power-loss" else f" (`{scenario}`)"
        cites = ", ".join(report.src.cite(r["_record"]) for r in rows)
        parts.append(
            f"{setup}{which} lost {spread([r['lost'] for r in rows])} of {spread([r['acknowledged'] for r in rows])} "
            f"{cites}"
        )
    cuts = spread([r["faults"] for _, _, rows in groups for r in rows])
    return (
        f"In a machine crash (power cut on LazyFS, {cuts} cuts per run): {'; '.join(parts)}. On disk means fsynced "
        "before the acknowledgement (see *Machine crash*)."
    )


def power_loss_use(report: Any) -> str:
    """The *use it for* cell's evidence: which setups kept every acknowledged task through power cuts."""
    groups = power_loss_groups(report)
    kept = sorted({setup for setup, _, rows in groups if _max_lost(rows) == 0}, key=list(SETUPS).index)
    lost = sorted({setup for setup, _, rows in groups if _max_lost(rows) > 0}, key=list(SETUPS).index)
    if not groups:
        return ""
    text = f"Through power cuts, every acknowledged task survived on {', '.join(kept) or 'no setup'}"
    if lost:
        text += f" and not on {', '.join(lost)}"
    return text + " (see *Machine crash*)."


#: Why rabbitmq-confirms promises nothing against power loss (tests/chaos/test_power_loss.py shows it
#: on a node of its own: every message confirmed after the last writeback is gone after the cut).
CLASSIC_CONFIRMS = (
    "RabbitMQ's classic queues (3.13 and later) confirm a persistent message once it is written to the OS, "
    "not fsynced (`rabbit_classic_queue_index_v2`: *the v2 no longer calls fsync, it only flushes*), so a "
    "broker crash keeps a confirmed message and a machine crash may not; quorum queues fsync before they confirm"
)


def power_loss_opinions(report: Any) -> list[str]:
    """Bullets for *Where the common opinion is wrong* that the power-loss runs answer."""
    bullets = []
    noconfirm, confirms = cut_lost(report, "rabbitmq-noconfirm"), cut_lost(report, "rabbitmq-confirms")
    rows = power_loss_rows(report)
    if noconfirm and confirms:
        kept_with = _max_lost(rows[("rabbitmq-confirms", "power-loss")]) == 0
        verdict = (
            "A broker crash, yes; a machine crash, not on classic queues, confirms or not"
            if not kept_with
            else "A broker crash, yes; a machine crash, classic queues promise nothing even where these runs lost "
            "nothing with confirms"
        )
        bullets.append(
            f'*"Durable queues and persistent messages survive a crash."* {verdict}: {noconfirm}; {confirms}. '
            f"{CLASSIC_CONFIRMS}."
        )
    one, every = rows.get(("rabbitmq-quorum", "power-loss-node")), rows.get(("rabbitmq-quorum", "power-loss-all"))
    if every:
        held = _max_lost(every) == 0
        text = '*"Replication protects against losing a node, not against the power going out on all of them."* '
        if held:
            text += "Quorum queues fsync on a majority before they confirm, so even that case kept everything: "
        else:
            text += "It did lose tasks here: "
        text += f"all three machines of the quorum cluster losing power at once {lost_of(report, every)}"
        if one:
            text += f"; only the leader's machine, {lost_of(report, one)}"
        not_booted = _not_booted(every) + (_not_booted(one) if one else 0)
        if not_booted:
            text += (
                f". {not_booted} node(s) did not boot again on what survived and were rebuilt from their peers "
                "(*Machine crash* says how)"
            )
        bullets.append(text + ".")
    return bullets


def everysec_power_loss(report: Any) -> str:
    """The sentence that ends the ``everysec`` bullet: what a power cut lost with everysec and always."""
    everysec, always = cut_lost(report, "redis-everysec"), cut_lost(report, "redis-always")
    if not everysec:
        return (
            "The fsync policy decides what survives a power loss or kernel crash: "
            f"`{COMMAND}` measures it (not run yet)."
        )
    text = f"The fsync policy decides what survives a machine crash: under power cuts {everysec}"
    return text + (f", while {always}." if always else ".")
