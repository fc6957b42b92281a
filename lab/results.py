"""Where measured runs are kept: JSON records under one results directory, which the ops report
(docs/ops-comparison.md) is generated from."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

#: Overrides the results directory (default: ``results/`` in the current directory).
RESULTS_DIR_ENV = "BROKERSTACK_RESULTS_DIR"


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_DIR_ENV) or "results")


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


def write_record(category: str, name: str, record: dict[str, Any]) -> Path:
    """Write ``record`` as ``<results>/<category>/<name>.json`` (replacing an older run of the
    same name) and return the path."""
    path = results_dir() / category / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
