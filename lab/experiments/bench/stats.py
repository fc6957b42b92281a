"""Percentiles and rates, the same way in every section of a bench record."""

from __future__ import annotations

import math
import statistics
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


def median_of_runs(runs: Sequence[dict[str, Any]], key: str = "per_s") -> dict[str, Any]:
    """Repetitions of one measurement as one: the median of ``key`` with its range and every run's
    value; the other fields (messages, seconds, ...) are those of the run nearest the median."""
    values = [run.get(key) for run in runs]
    measured = sorted(v for v in values if v is not None)
    if not measured:
        return {
            **(runs[0] if runs else {}),
            key: None,
            "repeats": len(runs),
            f"{key}_min": None,
            f"{key}_max": None,
            f"{key}_runs": values,
        }
    middle = statistics.median(measured)
    nearest = min((run for run in runs if run.get(key) is not None), key=lambda run: abs(run[key] - middle))
    return {
        **nearest,
        key: round(middle, 1),
        "repeats": len(runs),
        f"{key}_min": measured[0],
        f"{key}_max": measured[-1],
        f"{key}_runs": values,
    }


NO_DIFFERENCE = "no difference"
UNKNOWN = "unknown"


def compare(
    first: tuple[str, dict[str, Any]],
    second: tuple[str, dict[str, Any]],
    key: str = "per_s",
    goal: float = 1.0,
) -> dict[str, Any]:
    """Two ``median_of_runs`` summaries (``(name, summary)``, higher is better) side by side: the
    first median over the second, and whether the difference is outside the noise. The noise is
    the spread of the repetitions: ranges that overlap are "no difference"; with fewer than two
    repetitions on a side there is no spread to judge by ("unknown"). ``goal`` scales the second's
    range: the first is "faster" when its whole range is above ``goal`` times the second's (a goal
    of 0.8: at least 80 % of it), the second when the first's is below it."""
    (a_name, a), (b_name, b) = first, second
    a_lo, a_hi, b_lo, b_hi = (a.get(f"{key}_min"), a.get(f"{key}_max"), b.get(f"{key}_min"), b.get(f"{key}_max"))
    faster: str | None = None
    outside: bool | None
    if (
        min(a.get("repeats") or 0, b.get("repeats") or 0) < 2
        or a_lo is None
        or a_hi is None
        or b_lo is None
        or b_hi is None
    ):
        outside, verdict = None, UNKNOWN
    elif a_lo > goal * b_hi or goal * b_lo > a_hi:
        faster = a_name if a_lo > goal * b_hi else b_name
        outside, verdict = True, f"{faster} faster"
    else:
        outside, verdict = False, NO_DIFFERENCE
    return {
        "ratio": ratio(a.get(key), b.get(key)),
        "ratio_of": f"{a_name} / {b_name}",
        "outside_noise": outside,
        "faster": faster,
        "verdict": verdict,
    }
