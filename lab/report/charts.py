"""The report's charts (PNG, matplotlib), drawn from the same records as its tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from lab.experiments.bench.records import BenchRecord, Rate

#: No timestamps or versions inside the PNGs: the same records give the same bytes.
_PNG_METADATA = {"Software": None}
POOLS = ("solo", "threads", "prefork", "gevent")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_PNG_METADATA)
    plt.close(fig)
    return path


def _pools_present(bench: list[BenchRecord]) -> list[str]:
    return [p for p in POOLS if any(r.pool(p) for r in bench)]


def _drain(record: BenchRecord, pool: str, *, defaults: bool) -> Rate:
    return record.drain(pool, defaults=defaults) or Rate()


def _ceiling(record: BenchRecord) -> Rate:
    """The raw consume the record's ratios are taken against (its best client; ``consume`` in records
    from before the ceiling was the best client)."""
    return record.ceiling() or Rate()


def throughput_chart(bench: list[BenchRecord], path: Path) -> Path | None:
    """Per setup: the raw consume ceiling, then for every pool measured the fire-and-forget drain
    (solid) beside the defaults drain users run (hatched); whiskers are the repetitions' range. Log
    scale: the defaults run an order of magnitude below the ceiling and must still be readable."""
    if not bench:
        return None
    pools = _pools_present(bench)
    setups = [r.setup for r in bench]
    bars: list[tuple[str, list[Rate], dict[str, Any]]] = [
        ("raw client consume", [_ceiling(r) for r in bench], {"color": "0.55"})
    ]
    colours = plt.get_cmap("tab10")
    for i, pool in enumerate(pools):
        colour = colours(i)
        bars.append((f"{pool}, fire-and-forget", [_drain(r, pool, defaults=False) for r in bench], {"color": colour}))
        bars.append(
            (
                f"{pool}, defaults",
                [_drain(r, pool, defaults=True) for r in bench],
                {"color": "white", "edgecolor": colour, "hatch": "///"},
            )
        )
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.85 / len(bars)
    for i, (label, sections, style) in enumerate(bars):
        xs = [x + i * width for x in range(len(setups))]
        values = [s.per_s or 0 for s in sections]
        low = [max(v - (s.per_s_min or v), 0) for v, s in zip(values, sections, strict=True)]
        high = [max((s.per_s_max or v) - v, 0) for v, s in zip(values, sections, strict=True)]
        # Whiskers only where the record has repetitions: one run has no range to draw.
        ranged = any((s.repeats or 1) > 1 for s in sections)
        errors: dict[str, Any] = {"yerr": [low, high], "capsize": 2} if ranged else {}
        ax.bar(xs, values, width, label=label, **errors, **style)
        for x, v in zip(xs, values, strict=True):
            if not v:
                ax.annotate("n/m", (x, 1), ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks([x + 0.425 - width / 2 for x in range(len(setups))], setups, rotation=15)
    ax.set_yscale("log")
    ax.set_ylabel("messages / tasks per second (log)")
    ax.set_title("Drain rate: raw client ceiling, brokerstack fire-and-forget (solid) and defaults (hatched)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3, which="both")
    return _save(fig, path)


def latency_chart(bench: list[BenchRecord], path: Path, pool: str = "solo") -> Path | None:
    """Per setup: enqueue-to-finish p50/p95/p99 under steady load."""
    rows = []
    for r in bench:
        result = r.pool(pool)
        finish = result.latency.enqueue_to_finish_ms if result and result.latency else None
        if finish is not None and finish.n:
            rows.append((r.setup, finish))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.27
    for i, pct in enumerate(("p50", "p95", "p99")):
        ax.bar([x + i * width for x in range(len(rows))], [getattr(lat, pct) for _, lat in rows], width, label=pct)
    ax.set_xticks([x + width for x in range(len(rows))], [setup for setup, _ in rows], rotation=15)
    ax.set_ylabel("milliseconds")
    ax.set_yscale("log")
    ax.set_title(f"Enqueue to finish under steady load ({pool} pool)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def durability_chart(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Per setup and scenario: acknowledged tasks lost. A symmetric-log axis and the count printed on
    every bar, so that none, a few and thousands each read as what they are."""
    if not rows:
        return None
    setups = sorted({r["setup"] for r in rows}, key=[r["setup"] for r in rows].index)
    scenarios = sorted({r["scenario"] for r in rows}, key=[r["scenario"] for r in rows].index)
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.85 / max(len(scenarios), 1)
    top = 1
    for i, scenario in enumerate(scenarios):
        lost = {r["setup"]: r["lost"] for r in rows if r["scenario"] == scenario}
        xs = [x + i * width for x in range(len(setups))]
        values = [lost.get(s) for s in setups]
        ax.bar(xs, [v or 0 for v in values], width, label=scenario)
        for x, v in zip(xs, values, strict=True):
            # Not run is not zero: only a measured count gets a number.
            text = "" if v is None else f"{v:,}"
            colour = "black" if v else "green"
            ax.annotate(text, (x, v or 0), ha="center", va="bottom", fontsize=7, rotation=90, color=colour)
            top = max(top, v or 0)
    ax.set_xticks([x + 0.425 - width / 2 for x in range(len(setups))], setups, rotation=15)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, top * 8)
    ax.set_ylabel("acknowledged tasks lost (0, then log)")
    ax.set_title("What a kill cost: acknowledged but never executed (count on each bar; green 0 = nothing lost)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
