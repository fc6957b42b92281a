"""Where measured runs are kept: JSON records under one results directory, which the ops report
(docs/ops-comparison.md) is generated from."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

#: Overrides the results directory (default: ``results/`` in the current directory).
RESULTS_DIR_ENV = "BROKERSTACK_RESULTS_DIR"
PUBLISHED_RESULTS_DIR = Path("results")
#: Runs smaller than the published ones default to here (gitignored), so trying a command never
#: touches the tracked records the docs are generated from.
ADHOC_RESULTS_DIR = PUBLISHED_RESULTS_DIR / "tmp"
#: The rule, as ``--help`` and the README state it.
RESULTS_DIR_RULE = (
    "default: $BROKERSTACK_RESULTS_DIR, else results/ for a run of the published size (what `make measure` runs), "
    "else results/tmp/"
)


#: The published durability table counts only chaos runs this large (smaller ones are test runs)...
PUBLISHED_MIN_CHAOS_TASKS = 5000
#: ...except the routine operations, whose size is their faults (a rolling deploy runs a few tasks a
#: second: 5,000 of them would take an hour), and soaks, sized by their hard kills.
PUBLISHED_MIN_ROUTINE_FAULTS = 20
PUBLISHED_MIN_SOAK_FAULTS = 100


def is_published_size(
    scenario: str, *, tasks: int, faults: int, soak: bool, min_chaos_tasks: int = PUBLISHED_MIN_CHAOS_TASKS
) -> bool:
    """Whether a chaos run of this size belongs in the published tables. The report filters records
    with it, and the command line decides with it, before a run, where the record goes."""
    from lab.harness.setups import ROUTINE  # lazily: this module is imported by light commands too

    if soak:
        return faults >= PUBLISHED_MIN_SOAK_FAULTS
    if scenario in ROUTINE:
        return faults >= PUBLISHED_MIN_ROUTINE_FAULTS
    return tasks >= min_chaos_tasks


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_DIR_ENV) or PUBLISHED_RESULTS_DIR)


def default_results_dir(explicit: str | Path | None, *, published: bool) -> Path:
    """``--results-dir`` if given, else ``$BROKERSTACK_RESULTS_DIR``, else ``results/`` for a run of
    the published size and ``results/tmp/`` for any other."""
    if explicit:
        return Path(explicit)
    if os.environ.get(RESULTS_DIR_ENV):
        return Path(os.environ[RESULTS_DIR_ENV])
    return PUBLISHED_RESULTS_DIR if published else ADHOC_RESULTS_DIR


def client_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("celery", "kombu", "amqp", "redis"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine()}


class Record(Protocol):
    """A typed record: its JSON object is ``to_dict()``."""

    def to_dict(self) -> dict[str, Any]: ...


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """``data`` as indented JSON at ``path``, atomically: a reader sees the old file or the new one,
    never half of one (written beside it, then renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def write_record(category: str, name: str, record: dict[str, Any] | Record, *, root: str | Path | None = None) -> Path:
    """Write ``record`` as ``<results>/<category>/<name>.json`` (replacing an older run of the
    same name), headed by ``written_at``, and return the path. ``<results>`` is ``root`` if given,
    else :func:`results_dir`."""
    data = record if isinstance(record, dict) else record.to_dict()
    path = (Path(root) if root else results_dir()) / category / f"{name}.json"
    return write_json(path, {"written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data})
