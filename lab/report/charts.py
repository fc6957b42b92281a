"""The report's charts (PNG, matplotlib), drawn from the same records as its tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

#: No timestamps or versions inside the PNGs: the same records give the same bytes.
_PNG_METADATA = {"Software": None}
POOLS = ("solo", "threads", "prefork")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_PNG_METADATA)
    plt.close(fig)
    return path


def _grouped_bars(groups: list[str], series: dict[str, list[float]], path: Path, *, ylabel: str, title: str) -> Path:
    """One bar per series side by side in each group (setup)."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(groups))], values, width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))], groups, rotation=15)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def throughput_chart(bench: list[dict[str, Any]], path: Path) -> Path | None:
    """Per setup: the raw consume ceiling beside brokerstack end to end, per worker pool."""
    if not bench:
        return None
    setups = [r["setup"] for r in bench]
    series = {"raw client consume": [r["raw"].get("consume", {}).get("per_s", 0) for r in bench]}
    for pool in POOLS:
        series[f"brokerstack, {pool}"] = [
            ((r["end_to_end"].get("pools") or {}).get(pool) or {}).get("consume", {}).get("per_s", 0) for r in bench
        ]
    return _grouped_bars(
        setups,
        series,
        path,
        ylabel="messages / tasks per second",
        title="Consume throughput: raw client ceiling vs brokerstack end to end (no-op tasks)",
    )


def latency_chart(bench: list[dict[str, Any]], path: Path, pool: str = "solo") -> Path | None:
    """Per setup: enqueue-to-finish p50/p95/p99 under steady load."""
    rows = [(r["setup"], ((r["end_to_end"].get("pools") or {}).get(pool) or {}).get("latency", {})) for r in bench]
    rows = [(setup, lat.get("enqueue_to_finish_ms") or {}) for setup, lat in rows]
    rows = [(setup, lat) for setup, lat in rows if lat.get("n")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.27
    for i, pct in enumerate(("p50", "p95", "p99")):
        ax.bar([x + i * width for x in range(len(rows))], [lat[pct] for _, lat in rows], width, label=pct)
    ax.set_xticks([x + width for x in range(len(rows))], [setup for setup, _ in rows], rotation=15)
    ax.set_ylabel("milliseconds")
    ax.set_yscale("log")
    ax.set_title(f"Enqueue to finish under steady load ({pool} pool)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def durability_chart(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Per setup and scenario: acknowledged tasks lost."""
    if not rows:
        return None
    setups = sorted({r["setup"] for r in rows}, key=[r["setup"] for r in rows].index)
    scenarios = sorted({r["scenario"] for r in rows}, key=[r["scenario"] for r in rows].index)
    series = {}
    for scenario in scenarios:
        lost = {r["setup"]: r["lost"] or 0 for r in rows if r["scenario"] == scenario}
        series[scenario] = [lost.get(s, 0) for s in setups]
    return _grouped_bars(
        setups,
        series,
        path,
        ylabel="acknowledged tasks lost",
        title="What a kill cost: acknowledged but never executed",
    )
