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

from lab.experiments.bench.records import READABLE_SCHEMAS as BENCH_SCHEMAS
from lab.experiments.bench.records import BenchRecord, read_record
from lab.experiments.bench.runner import BenchParams
from lab.experiments.chaos.record import load_records as load_chaos_records
from lab.experiments.chaos.record import record_mode, record_size, record_transport
from lab.harness.results import (
    PUBLISHED_MIN_CHAOS_TASKS,
    PUBLISHED_MIN_ROUTINE_FAULTS,
    PUBLISHED_MIN_SOAK_FAULTS,
    is_published_size,
)

__all__ = [
    "PUBLISHED_MIN_CHAOS_TASKS",
    "PUBLISHED_MIN_ROUTINE_FAULTS",
    "PUBLISHED_MIN_SOAK_FAULTS",
    "Source",
    "Sources",
    "is_published_size",
    "load_sources",
]

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
    bench: list[BenchRecord] = field(default_factory=list)
    #: Per setup and driver, the bench record whose peers section the speed section leads with.
    bench_peers: list[BenchRecord] = field(default_factory=list)
    priority: list[dict[str, Any]] = field(default_factory=list)
    cited: dict[str, Source] = field(default_factory=dict)
    #: Chaos records left out for being below the published size (one line each, for a warning).
    unpublished: list[str] = field(default_factory=list)
    #: Bench records left out for the same reason, a line each for the speed section.
    bench_unpublished: list[str] = field(default_factory=list)

    #: Labels of the typed records (which carry no ``_label`` key), by identity.
    _labels: dict[int, str] = field(default_factory=dict)

    def cite(self, record: dict[str, Any] | BenchRecord) -> str:
        """The record's label, as a Markdown reference link."""
        if isinstance(record, BenchRecord):
            return f"[{self._labels[id(record)]}]"
        return f"[{record['_label']}]"

    def label_all(self) -> None:
        self._label_dicts("C", self.chaos, _describe_chaos)
        for number, bench in enumerate(self.bench, start=1):
            label = f"B{number}"
            self._labels[id(bench)] = label
            assert bench.source is not None
            self.cited[label] = Source(label, bench.source, _describe_bench(bench))
        for bench in self.bench_peers:
            if id(bench) not in self._labels:
                label = f"B{len(self._labels) + 1}"
                self._labels[id(bench)] = label
                assert bench.source is not None
                self.cited[label] = Source(label, bench.source, _describe_bench(bench))
        self._label_dicts("P", self.priority, _describe_priority)

    def _label_dicts(self, prefix: str, records: list[dict[str, Any]], describe: Any) -> None:
        for number, record in enumerate(records, start=1):
            record["_label"] = f"{prefix}{number}"
            self.cited[record["_label"]] = Source(record["_label"], Path(record["_path"]), describe(record))


def load_sources(root: Path, *, min_chaos_tasks: int = 0) -> Sources:
    sources = Sources(root=root)
    sources.chaos = load_chaos_records(root, latest_only=True, keep=_published(min_chaos_tasks, sources.unpublished))
    sources.bench, sources.bench_peers = _latest_bench(root, sources.bench_unpublished if min_chaos_tasks else None)
    sources.unpublished += sources.bench_unpublished
    sources.priority = _json_records(root / "priority", (PRIORITY_SCHEMA,))
    sources.label_all()
    return sources


def _published(min_chaos_tasks: int, skipped: list[str]) -> Any:
    """Which chaos records a report at this size counts (0: every completed one); the others are
    named in ``skipped``. Filtering happens before the newest run per pair is chosen, so a smaller
    newer run never hides a published one."""
    if not min_chaos_tasks:
        return None

    def keep(data: dict[str, Any]) -> bool:
        faults = len(data.get("faults") or [])
        soak = record_mode(data) == "soak"
        size = record_size(data)
        if is_published_size(
            data.get("scenario", ""), tasks=size, faults=faults, soak=soak, min_chaos_tasks=min_chaos_tasks
        ):
            return True
        skipped.append(
            f"{data.get('scenario')} on {data.get('setup')} ({record_transport(data) or '-'} transport, "
            f"run {data.get('run_id')}): {size} tasks, {faults} faults"
        )
        return False

    return keep


def _json_records(directory: Path, schemas: tuple[str, ...]) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("schema") in schemas:
            data["_path"] = str(path)
            records.append(data)
    return records


def _latest_bench(root: Path, skipped: list[str] | None = None) -> tuple[list[BenchRecord], list[BenchRecord]]:
    """One completed bench record per setup and driver, read as the current schema: a full run
    before a quick one, then one that compared both Redis transports, then the newest; and, apart,
    the one whose peers the speed section leads with (a full run first, then the newest). A run
    of the peers alone (``--section peers``) is only ever the second. With ``skipped`` (a report
    of the published size), a record whose drains are not the published repetitions is left out
    and named there."""
    best: dict[tuple[str, str], BenchRecord] = {}
    peers: dict[tuple[str, str], BenchRecord] = {}
    for raw in _json_records(root / "bench", BENCH_SCHEMAS):
        if raw.get("status") != "completed":
            continue
        path = raw.pop("_path")
        record = read_record(raw, path)
        key = (record.setup, record.driver or "")
        if record.peers is not None and record.peers.systems:
            rival = peers.get(key)
            if rival is None or _peers_rank(record) > _peers_rank(rival):
                peers[key] = record
        if record.end_to_end is None:
            continue
        if skipped is not None and (why := _below_published_bench(record)):
            skipped.append(f"bench {record.setup} ({record.driver}, run {record.run_id} of {record.started_at}): {why}")
            continue
        current = best.get(key)
        if current is None or _bench_rank(record) > _bench_rank(current):
            best[key] = record
    return [best[key] for key in sorted(best)], [peers[key] for key in sorted(peers)]


def _below_published_bench(record: BenchRecord) -> str | None:
    """Why a bench record cannot stand for its setup in the published report, or None: every
    published figure is the median of ``make measure``'s repetitions, with their range."""
    published = BenchParams().repeats
    if record.mode != "full":
        return f"a --{record.mode} run (small sizes, not speeds)"
    if record.repeats < published:
        return (
            f"{record.repeats} drain(s) per pool, not the median of {published} "
            f"(measure again: brokerstack bench --setup {record.setup})"
        )
    return None


def _peers_rank(record: BenchRecord) -> tuple[bool, str]:
    return (record.mode == "full", record.started_at or "")


def _bench_rank(record: BenchRecord) -> tuple[bool, int, str]:
    return (record.mode == "full", len(record.transports or []), record.started_at or "")


def _describe_chaos(r: dict[str, Any]) -> str:
    p = r.get("parameters") or {}
    return (
        f"chaos {r['scenario']} on {r['setup']} ({r['driver']}, {r['versions'].get('broker', '?')}), "
        f"run {r['run_id']} of {r['started_at'][:16]}Z, {p.get('tasks')} tasks, {p.get('kills')} faults"
    )


def _describe_bench(r: BenchRecord) -> str:
    return (
        f"bench {r.setup} ({r.mode}, {r.driver}, {r.broker_version or '?'}), "
        f"run {r.run_id} of {(r.started_at or '?')[:16]}Z"
    )


def _describe_priority(r: dict[str, Any]) -> str:
    return (
        f"priority on {r['broker_version']} {r['queue_type']} ({r['driver']}), "
        f"{r['backlog_low']} low then {r['urgent_high']} urgent, written {r.get('written_at', '?')}"
    )
