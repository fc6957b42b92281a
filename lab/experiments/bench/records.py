"""Reading bench records of every schema so far as the current one.

``brokerstack.bench/2`` added the Redis transport comparison (``transport``, ``transports``,
``end_to_end.transports``, ``end_to_end.comparison``, ``ratios.brokerstack_vs_kombu``), repeated
drains (``end_to_end.repeats``; rates became medians with ``per_s_min``, ``per_s_max``,
``per_s_runs``, ``repeats``) and the gevent pool. Every /1 field kept its name and meaning, so a
reader of /1 reads /2 unchanged; :func:`upgrade_record` lifts a /1 record into the /2 shape so a
reader of /2 reads both. A /1 record measured one drain per pool (``repeats`` 1: a range of one
point, no verdict on noise) on Redis with brokerstack's own transport, which was the only one then.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from lab.experiments.bench.runner import READABLE_SCHEMAS, SCHEMA

V1 = "brokerstack.bench/1"


def is_bench_record(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") in READABLE_SCHEMAS


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` in the current schema's shape (a copy; a current record is returned as is).
    ``schema`` keeps what the file says; ``read_as`` says what it was read as."""
    schema = record.get("schema")
    if schema == SCHEMA:
        return record
    if schema != V1:
        raise ValueError(
            f"not a bench record this version reads: schema {schema!r} (reads {', '.join(READABLE_SCHEMAS)})"
        )
    out = copy.deepcopy(record)
    out["read_as"] = SCHEMA
    redis = out.get("broker") == "redis"
    out.setdefault("transport", "brokerstack" if redis else None)
    out.setdefault("transports", ["brokerstack"] if redis else None)
    e2e = out.get("end_to_end")
    if isinstance(e2e, dict) and "error" not in e2e:
        e2e.setdefault("repeats", 1)
        e2e.setdefault("transport", out["transport"])
        for result in (e2e.get("pools") or {}).values():
            _one_run(result.get("enqueue"))
            _one_run(result.get("consume"))
            defaults = result.get("defaults") or {}
            _one_run(defaults.get("enqueue"))
            _one_run(defaults.get("consume"))
            if redis:
                result.setdefault("transport", "brokerstack")
        if redis:
            e2e.setdefault("transports", {"brokerstack": {"pools": e2e.get("pools") or {}}})
            e2e.setdefault("comparison", None)
    if isinstance(out.get("ratios"), dict):
        out["ratios"].setdefault("brokerstack_vs_kombu", None)
    return out


def _one_run(rate: dict[str, Any] | None) -> None:
    if not isinstance(rate, dict) or "repeats" in rate:
        return
    value = rate.get("per_s")
    rate.update(repeats=1, per_s_min=value, per_s_max=value, per_s_runs=[value])


def load_record(path: str | Path) -> dict[str, Any]:
    """A bench record file, upgraded; ValueError if it is not one."""
    data = json.loads(Path(path).read_text())
    if not is_bench_record(data):
        raise ValueError(f"{path}: not a bench record ({data.get('schema') if isinstance(data, dict) else type(data)})")
    return upgrade_record(data)


__all__ = ["V1", "is_bench_record", "load_record", "upgrade_record"]
