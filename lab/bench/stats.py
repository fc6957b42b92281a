"""Percentiles and rates, the same way in every section of a bench record."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, linear interpolation."""
    if not sorted_values:
        raise ValueError("no values")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction)


def latency_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """{"n", "p50", "p95", "p99", "max", "mean"} in milliseconds from latencies in seconds
    (all None but n when there are none)."""
    if not seconds:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    values = sorted(seconds)
    return {
        "n": len(values),
        "p50": round(percentile(values, 50) * 1000, 3),
        "p95": round(percentile(values, 95) * 1000, 3),
        "p99": round(percentile(values, 99) * 1000, 3),
        "max": round(values[-1] * 1000, 3),
        "mean": round(sum(values) / len(values) * 1000, 3),
    }


def rate(count: int, seconds: float) -> dict[str, Any]:
    """{"messages", "seconds", "per_s"} for ``count`` things done in ``seconds``."""
    return {
        "messages": count,
        "seconds": round(seconds, 4),
        "per_s": round(count / seconds, 1) if seconds > 0 else None,
    }


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, digits)
