"""The JSON record every chaos run leaves behind, and reading records back for tables.

Every record names the Redis transport it ran on (``transport``: "brokerstack" or "kombu"; None on
RabbitMQ; records from before it was recorded read as "brokerstack"), and a soak (a run with
``parameters.duration``) is kept apart from the fixed-size runs, so tables show both transports and
both modes side by side.

Layout: ``<results dir>/chaos/<scenario>/<setup>/<UTC timestamp>-<run id>.json``; the results dir
is ``--results-dir``, else ``$BROKERSTACK_RESULTS_DIR``, else ``results/``. A run's bulky side
(worker and API logs, the full history as SQLite) goes to ``<results dir>/tmp/chaos/<run id>/``.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from lab.experiments.chaos.ledger import Counts
from lab.harness.setups import DEFAULT_TRANSPORT, SETUPS
from lab.harness.vendors import VENDORS

#: Bumped when the record's layout changes incompatibly.
SCHEMA = "brokerstack.chaos/1"
RESULTS_ENV = "BROKERSTACK_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "results"
#: The broker of records that name neither their broker nor a known setup (the first runs).
EARLIEST_RECORDS_BROKER = "redis"

#: The counts the CLI's --json promises, in table order.
HEADLINE_COUNTS = ("attempted", "acknowledged", "executed", "lost", "duplicated", "recovered")


def results_dir(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS_DIR)


def package_versions() -> dict[str, str]:
    versions = {}
    for label, dist in (
        ("celery", "celery"),
        ("kombu", "kombu"),
        ("redis-py", "redis"),
        ("amqp", "amqp"),
        ("brokerstack", "brokerstack"),
    ):
        try:
            versions[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[label] = "?"
    versions["python"] = platform.python_version()
    return versions


@dataclass
class RunRecord:
    """What one run measured. ``to_dict()`` is the JSON record."""

    scenario: str
    setup: str
    run_id: str
    started_at: str
    driver: str
    parameters: dict[str, Any]
    counts: Counts | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    drained: bool = False
    #: Redis: the transport that carried the messages (REDIS_TRANSPORT); None on RabbitMQ.
    transport: str | None = None
    #: "lost == 0" (or "lost == 0, duplicated == 0") when the setup promises it, else None.
    guarantee: str | None = None
    #: True/False when a guarantee applies and the run completed, else None.
    guarantee_held: bool | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str = "running"  # completed | failed | interrupted
    error: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    path: Path | None = None
    workdir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "scenario": self.scenario,
            "setup": self.setup,
            "run_id": self.run_id,
            "status": self.status,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "driver": self.driver,
            "transport": self.transport,
            "versions": self.versions,
            "parameters": self.parameters,
            "counts": self.counts.to_dict() if self.counts is not None else None,
            "drained": self.drained,
            "guarantee": self.guarantee,
            "guarantee_held": self.guarantee_held,
            "timings": self.timings,
            "faults": self.faults,
            "details": self.details,
            "notes": self.notes,
            "workdir": str(self.workdir) if self.workdir else None,
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=str)


def record_path(base: Path, record: RunRecord) -> Path:
    stamp = record.started_at.replace("-", "").replace(":", "").split(".")[0].rstrip("Z") + "Z"
    return base / "chaos" / record.scenario / record.setup / f"{stamp}-{record.run_id}.json"


def write_record(record: RunRecord, base: Path) -> Path:
    path = record_path(base, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(record.to_json(indent=2) + "\n")
    tmp.replace(path)
    record.path = path
    return path


def record_transport(data: dict[str, Any]) -> str | None:
    """A record's Redis transport; records from before the choice existed ran on brokerstack's."""
    if "transport" in data:
        return data["transport"]
    broker = ((data.get("parameters") or {}).get("setup") or {}).get("broker")
    if broker is None:
        from lab.harness.setups import SETUPS

        setup = SETUPS.get(data.get("setup", ""))
        # The records without either came from the Redis runs that were all there was then.
        broker = setup.broker if setup else EARLIEST_RECORDS_BROKER
    vendor = VENDORS.get(broker)
    return vendor.default_transport if vendor is not None else None


def record_mode(data: dict[str, Any]) -> str:
    """ "soak" for a run that injected faults until a time was up, "fixed" for K faults in N tasks."""
    return "soak" if (data.get("parameters") or {}).get("duration") else "fixed"


def record_size(data: dict[str, Any]) -> int:
    """Tasks a run put through: its --tasks, or for a soak (which has no fixed size) what it attempted."""
    if record_mode(data) == "soak":
        return int((data.get("counts") or {}).get("attempted") or 0)
    return int((data.get("parameters") or {}).get("tasks", 0) or 0)


def load_records(
    base: Path,
    *,
    latest_only: bool = True,
    min_tasks: int = 0,
    driver: str | None = None,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Records under ``base/chaos`` (completed runs only), by default the newest per scenario x setup x
    transport x mode (so both Redis transports, and a soak beside the fixed run, appear side by side).
    Each comes with ``transport`` filled in (old records: brokerstack's) and ``_path``."""
    found: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for path in sorted((base / "chaos").glob("*/*/*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("schema") != SCHEMA or data.get("status") != "completed":
            continue
        if record_size(data) < min_tasks:
            continue
        if driver is not None and data.get("driver") != driver:
            continue
        if keep is not None and not keep(data):
            continue
        data["_path"] = str(path)
        data["transport"] = record_transport(data)
        key = (data["scenario"], data["setup"], data["transport"] or "", record_mode(data))
        found.setdefault(key, []).append(data)
    out = []
    for key in sorted(found, key=_table_order):
        runs = sorted(found[key], key=lambda d: d["started_at"])
        out.extend(runs[-1:] if latest_only else runs)
    return out


def summary_row(data: dict[str, Any]) -> dict[str, Any]:
    """The table row of a record (a dict as written by :meth:`RunRecord.to_dict`)."""
    counts = data.get("counts") or {}
    timings = data.get("timings") or {}
    faults = len(data.get("faults") or [])
    return {
        "scenario": data["scenario"],
        "setup": data["setup"],
        "transport": record_transport(data),
        "mode": record_mode(data),
        "faults": faults,
        **{key: counts.get(key) for key in HEADLINE_COUNTS},
        "lost_per_fault": _per(counts.get("lost"), faults),
        "duplicated_per_fault": _per(counts.get("duplicated"), faults),
        # Effects, not runs (ledger.Counts); None in records made before effects were counted.
        "duplicated_effects": counts.get("duplicated_effects"),
        "unexpected": counts.get("unexpected"),
        "redelivery_s": (timings.get("redelivery_delay_s") or {}).get("max"),
        "recovery_s": (timings.get("recovery_s") or {}).get("max"),
        "consumer_recovery_s": (timings.get("consumer_recovery_s") or {}).get("max"),
        "drained": data.get("drained"),
        **_promise_today(data),
        "duration_s": data.get("duration_s"),
        "status": data.get("status"),
    }


def _promise_today(data: dict[str, Any]) -> dict[str, Any]:
    """The record's promise and whether it held, unless its setup has since withdrawn that promise
    (as rabbitmq-confirms did for power loss once runs showed classic queues confirm before they
    fsync): a table then judges every run by the promises the setups make today."""
    setup = SETUPS.get(data["setup"])
    if setup is not None and data.get("guarantee") and not setup.promises(data["scenario"], record_transport(data)):
        return {"guarantee": None, "held": None}
    return {"guarantee": data.get("guarantee"), "held": data.get("guarantee_held")}


def _per(value: int | None, faults: int) -> float | None:
    return None if value is None or not faults else value / faults


def _table_order(key: tuple[str, str, str, str]) -> tuple[Any, ...]:
    """By scenario and setup (the order labels in the report follow), brokerstack's transport before kombu's,
    the fixed run before the soak."""
    scenario, setup, transport, mode = key
    return (scenario, setup, transport not in ("", DEFAULT_TRANSPORT), transport, mode != "fixed")
