"""Chaos tests: every run must leave nothing behind (no container, no worker or API process)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.harness.nodes import docker_available


def _lab_containers() -> set[str]:
    """Names of lab containers created by this process (session fixtures included)."""
    if not docker_available():
        return set()
    from lab.harness.nodes.docker import LABEL, OWNER_LABEL, docker_client, owner_token

    client = docker_client()
    try:
        mine = {"label": [f"{LABEL}=1", f"{OWNER_LABEL}={owner_token()}"]}
        containers = client.containers.list(all=True, filters=mine)
        return {c.name for c in containers}
    finally:
        client.close()


def processes_of_run(run_id: str) -> list[int]:
    """Live processes (workers, API) started for a chaos run: their environment names its ledger."""
    marker = f"LEDGER_RUN={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state not in ("Z", "X"):
            found.append(int(entry))
    return found


@pytest.fixture
def results(tmp_path: Path) -> Iterator[Path]:
    """A results dir for the test's runs; afterwards, nothing a run started may still exist."""
    before = _lab_containers()
    yield tmp_path
    leftover_containers = _lab_containers() - before
    leftover_processes = {}
    for record in tmp_path.glob("chaos/*/*/*.json"):
        run_id = json.loads(record.read_text())["run_id"]
        if pids := processes_of_run(run_id):
            leftover_processes[run_id] = pids
    assert not leftover_containers, f"containers left behind: {leftover_containers}"
    assert not leftover_processes, f"processes left behind: {leftover_processes}"
