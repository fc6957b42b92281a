"""The measured runs a report is made of, each with a citation label.

Every number the report prints is followed by the label of the record it came from (``[C3]``,
``[B1]``, ``[P2]``), and the report ends with the list of labels and their files, so a reader can
open the JSON (and rerun the command that wrote it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.chaos.record import load_records as load_chaos_records
from lab.chaos.record import record_mode, record_size
from lab.chaos.setups import ROUTINE

#: The published durability table counts only chaos runs this large (smaller ones are test runs)...
PUBLISHED_MIN_CHAOS_TASKS = 5000
#: ...except the routine operations, whose size is their faults (a rolling deploy runs a few tasks a
#: second: 5,000 of them would take an hour), and soaks, sized by their hard kills.
PUBLISHED_MIN_ROUTINE_FAULTS = 20
PUBLISHED_MIN_SOAK_FAULTS = 100

BENCH_SCHEMA = "brokerstack.bench/1"
PRIORITY_SCHEMA = "brokerstack.priority/1"


@dataclass
class Source:
    label: str
    path: Path
    summary: str


@dataclass
class Sources:
    """All records under one results directory, labelled in a stable order."""

    root: Path
    chaos: list[dict[str, Any]] = field(default_factory=list)
    bench: list[dict[str, Any]] = field(default_factory=list)
    priority: list[dict[str, Any]] = field(default_factory=list)
    cited: dict[str, Source] = field(default_factory=dict)

    def cite(self, record: dict[str, Any]) -> str:
        """The record's label, as a Markdown reference link."""
        return f"[{record['_label']}]"

    def label_all(self) -> None:
        for prefix, records, describe in (
            ("C", self.chaos, _describe_chaos),
            ("B", self.bench, _describe_bench),
            ("P", self.priority, _describe_priority),
        ):
            for number, record in enumerate(records, start=1):
                record["_label"] = f"{prefix}{number}"
                self.cited[record["_label"]] = Source(record["_label"], Path(record["_path"]), describe(record))


def load_sources(root: Path, *, min_chaos_tasks: int = 0) -> Sources:
    sources = Sources(root=root)
    sources.chaos = load_chaos_records(root, latest_only=True, keep=_published(min_chaos_tasks))
    sources.bench = _latest_bench(root)
    sources.priority = _json_records(root / "priority", PRIORITY_SCHEMA)
    sources.label_all()
    return sources


def _published(min_chaos_tasks: int) -> Any:
    """Which chaos records a report at this size counts (0: every completed one)."""
    if not min_chaos_tasks:
        return None

    def keep(data: dict[str, Any]) -> bool:
        faults = len(data.get("faults") or [])
        if record_mode(data) == "soak":
            return faults >= PUBLISHED_MIN_SOAK_FAULTS
        if data.get("scenario") in ROUTINE:
            return faults >= PUBLISHED_MIN_ROUTINE_FAULTS
        return record_size(data) >= min_chaos_tasks

    return keep


def _json_records(directory: Path, schema: str) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("schema") == schema:
            data["_path"] = str(path)
            records.append(data)
    return records


def _latest_bench(root: Path) -> list[dict[str, Any]]:
    """One completed bench record per setup and driver: a full run if there is one, else quick."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for record in _json_records(root / "bench", BENCH_SCHEMA):
        if record.get("status") != "completed":
            continue
        key = (record["setup"], record["driver"])
        current = best.get(key)
        rank = (record.get("mode") == "full", record.get("started_at", ""))
        if current is None or rank > (current.get("mode") == "full", current.get("started_at", "")):
            best[key] = record
    return [best[key] for key in sorted(best)]


def _describe_chaos(r: dict[str, Any]) -> str:
    p = r.get("parameters") or {}
    return (
        f"chaos {r['scenario']} on {r['setup']} ({r['driver']}, {r['versions'].get('broker', '?')}), "
        f"run {r['run_id']} of {r['started_at'][:16]}Z, {p.get('tasks')} tasks, {p.get('kills')} faults"
    )


def _describe_bench(r: dict[str, Any]) -> str:
    return (
        f"bench {r['setup']} ({r['mode']}, {r['driver']}, {r.get('broker_version', '?')}), "
        f"run {r['run_id']} of {r.get('started_at', '?')[:16]}Z"
    )


def _describe_priority(r: dict[str, Any]) -> str:
    return (
        f"priority on {r['broker_version']} {r['queue_type']} ({r['driver']}), "
        f"{r['backlog_low']} low then {r['urgent_high']} urgent, written {r.get('written_at', '?')}"
    )
