"""A run stops everything it started, interrupted or not; the CLI prints what it promises."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.experiments.chaos import ChaosRun, Progress, RunOptions

from .conftest import processes_of_run

pytestmark = pytest.mark.chaos

CLI = [sys.executable, "-c", "from services.cli import main; main()", "chaos"]


def test_ctrl_c_mid_run_stops_every_node_and_process(results: Path):
    def interrupt(progress: Progress) -> None:
        if progress.phase == "load" and progress.acknowledged >= 20:
            raise KeyboardInterrupt

    run = ChaosRun(
        "broker-kill",
        "redis-volatile",
        RunOptions(tasks=2000, kills=3, rate=50, seed=1),
        progress=interrupt,
        results=results,
    )
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert run.closed and run.stack.closed
    assert not run.stack.started()
    assert run.stack.broker is not None and run.stack.aux is not None
    assert not run.stack.broker.is_running() and not run.stack.aux.is_running()
    assert run.stack.workers and not any(worker.is_running() for worker in run.stack.workers)
    assert not processes_of_run(run.run_id)
    # The record says how the run ended, and closing again is harmless.
    data = json.loads(run.record.path.read_text())  # type: ignore[union-attr]
    assert data["status"] == "interrupted"
    run.close()
    run.stack.close()


def test_a_failing_run_cleans_up_and_keeps_its_record(results: Path):
    def fail(progress: Progress) -> None:
        if progress.phase == "load":
            raise RuntimeError("injected failure")

    run = ChaosRun("publish-kill", "redis-volatile", RunOptions(tasks=50, kills=1), progress=fail, results=results)
    with pytest.raises(RuntimeError, match="injected failure"):
        run.run()
    assert run.closed and not run.stack.started()
    data = json.loads(run.record.path.read_text())  # type: ignore[union-attr]
    assert data["status"] == "failed" and "injected failure" in data["error"]


def test_cli_list_names_every_scenario_and_setup():
    done = subprocess.run([*CLI, "list", "--json"], capture_output=True, text=True, timeout=60, check=True)
    listing = json.loads(done.stdout)
    assert {s["name"] for s in listing["scenarios"]} >= {"broker-kill", "worker-kill", "node-loss"}
    assert {s["name"] for s in listing["setups"]} >= {"redis-always", "rabbitmq-quorum"}


def test_cli_run_json_prints_only_the_record_as_one_line(results: Path):
    done = subprocess.run(
        [
            *CLI,
            "run",
            "--scenario",
            "publish-kill",
            "--setup",
            "redis-volatile",
            "--tasks",
            "200",
            "--kills",
            "1",
            "--seed",
            "3",
            "--json",
            "--no-keep-logs",
            "--results-dir",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    record = json.loads(lines[0])
    assert set(record["counts"]) >= {"attempted", "acknowledged", "executed", "lost", "duplicated", "recovered"}
    assert record["scenario"] == "publish-kill" and record["setup"] == "redis-volatile"
    assert record["parameters"]["seed"] == 3
    assert Path(results, "chaos", "publish-kill", "redis-volatile").is_dir()
    assert record["workdir"] is None and not Path(results, "tmp", "chaos", record["run_id"]).exists()


def test_cli_refuses_unknown_names_and_pairs_that_do_not_apply():
    unknown = subprocess.run(
        [*CLI, "run", "--scenario", "nope", "--setup", "redis-always"], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2 and "unknown scenario" in unknown.stderr
    wrong = subprocess.run(
        [*CLI, "run", "--scenario", "node-loss", "--setup", "redis-always"], capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == 2 and "does not apply" in wrong.stderr


def test_cli_soak_stopped_by_sigterm_still_writes_what_it_counted(results: Path):
    soak = subprocess.Popen(
        [*CLI, "run", "--scenario", "worker-kill", "--setup", "redis-volatile", "--duration", "3m",
         "--fault-interval", "2", "--visibility-timeout", "5", "--rate", "30", "--seed", "4", "--json",
         "--results-dir", str(results)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # A replacement worker's log means a worker was killed: the soak is under way.
        deadline = time.monotonic() + 120
        while len(list(results.glob("tmp/chaos/*/logs/chaos-w*.log"))) < 3 and time.monotonic() < deadline:
            assert soak.poll() is None, soak.stderr.read() if soak.stderr else ""
            time.sleep(0.2)
        soak.send_signal(signal.SIGTERM)
        out, err = soak.communicate(timeout=300)
    finally:
        if soak.poll() is None:
            soak.kill()
            soak.wait()
    assert soak.returncode == 0, err
    record = json.loads(out.splitlines()[-1])
    assert record["status"] == "completed" and record["drained"] is True
    assert record["details"]["soak"]["stopped_by"] == "interrupt" and record["details"]["soak"]["ran_s"] < 170
    assert len(record["faults"]) >= 1 and record["counts"]["acknowledged"] > 0
    assert record["transport"] == "brokerstack" and record["counts"]["lost"] == 0
