"""Repetitions of one chaos measurement, for the report sections that give a median and a range
per setup and scenario (failover and partitions, machine crash).

The report's sources hold the newest run of each (scenario, setup) pair. A section that counts
repetitions reads the earlier runs of the same measurement from disk here and cites each beside
the newest, so a run that lost tasks cannot be hidden by a newer one that did not."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from lab.experiments.chaos.record import load_records, record_size, summary_row
from lab.harness.setups import SETUPS

DASH = "—"  # as in lab.report.render


def same_measurement(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Repetitions of one measurement: same size, fault count, driver, transport and fault model
    (the seed may differ). A run made under an older fault model is a different measurement."""
    return (
        record_size(a) == record_size(b)
        and len(a.get("faults") or []) == len(b.get("faults") or [])
        and a.get("driver") == b.get("driver")
        and summary_row(a)["transport"] == summary_row(b)["transport"]
        and (a.get("details") or {}).get("fault_model") == (b.get("details") or {}).get("fault_model")
    )


def _earlier_runs(report: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the runs on disk that repeat one of ``rows`` (the report's newest per pair) and
    are not among them, each cited under a new label of the report's sources."""
    src = report.src
    root = getattr(src, "root", None)
    if root is None:
        return []
    newest = {(r["setup"], r["scenario"]): r for r in rows}
    seen = {r["_record"].get("_path") for r in rows}
    extra = []
    for record in load_records(Path(root), latest_only=False):
        match = newest.get((record["setup"], record["scenario"]))
        if match is None or record["_path"] in seen or not same_measurement(record, match["_record"]):
            continue
        row = {**summary_row(record), "_record": record}
        if row["mode"] != "fixed":
            continue
        _label(src, record)
        extra.append(row)
    return extra


def _label(src: Any, record: dict[str, Any]) -> None:
    """Give ``record`` the next free chaos label and list it among the report's runs."""
    cited = getattr(src, "cited", None)
    if cited is None:
        record.setdefault("_label", record.get("run_id", "?"))
        return
    from lab.report.sources import Source, _describe_chaos

    numbers = [int(label[1:]) for label in cited if label[:1] == "C" and label[1:].isdigit()]
    record["_label"] = f"C{max(numbers, default=0) + 1}"
    cited[record["_label"]] = Source(record["_label"], Path(record["_path"]), _describe_chaos(record))


def repeated_groups(report: Any, scenarios: tuple[str, ...]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(setup, scenario, rows: every run of the pair, oldest first) of the fixed-size runs of
    ``scenarios``, in setup then scenario order. Memoised on the report, so that each earlier
    run gets one label however many sections ask."""
    memo: dict[tuple[str, ...], list[tuple[str, str, list[dict[str, Any]]]]] | None = getattr(
        report, "_repeated_groups", None
    )
    if memo is None:
        memo = {}
        report._repeated_groups = memo
    if scenarios in memo:
        return memo[scenarios]
    rows = [r for r in report.chaos_rows if r["scenario"] in scenarios and r["mode"] == "fixed"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in [*rows, *_earlier_runs(report, rows)]:
        groups.setdefault((row["setup"], row["scenario"]), []).append(row)
    order = list(SETUPS)
    keys = sorted(
        groups,
        key=lambda k: (order.index(k[0]) if k[0] in order else len(order), scenarios.index(k[1])),
    )
    memo[scenarios] = [
        (setup, scenario, sorted(groups[(setup, scenario)], key=lambda r: str(r["_record"].get("started_at"))))
        for setup, scenario in keys
    ]
    return memo[scenarios]


def held(rows: list[dict[str, Any]]) -> str:
    """``**no**`` if any run broke the setup's promise, ``yes`` if every run kept it."""
    helds = {r["held"] for r in rows}
    if False in helds:
        return "**no**"
    return "yes" if True in helds else "(none promised)"


def spread(values: list[Any], *, unit: str = "", digits: int | None = None) -> str:
    """``median unit (min-max)`` over the values present, ``—`` if none. Counts print whole (or to
    a tenth where a median falls between two); ``digits`` fixes the decimals of measured times."""
    present = [v for v in values if v is not None]
    if not present:
        return DASH
    median, low, high = statistics.median(present), min(present), max(present)

    def fmt(v: float) -> str:
        if digits is not None:
            return f"{v:,.{digits}f}"
        return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"

    return fmt(median) + unit if low == high else f"{fmt(median)}{unit} ({fmt(low)}-{fmt(high)})"
