"""``brokerstack wait-cost``: the options reach the measurement, the record lands in the results
directory, and bad options stop the command before any node is started."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import services.cli
from lab.experiments import wait_cost as experiment
from lab.harness.results import RESULTS_DIR_ENV

runner = CliRunner()


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stand in for the measurement (two Sentinel groups, minutes): what the command asked of it."""
    calls: list[dict[str, Any]] = []

    def measure(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        kwargs["tick"]("starting")
        rate = {"per_s": 100.0, "per_s_min": 90.0, "per_s_max": 110.0}
        return {
            "schema": experiment.SCHEMA,
            "started_at": "2026-11-29T14:00:00Z",
            "setups": {name: dict.fromkeys(experiment.RATES, rate) for name in experiment.SETUP_NAMES},
        }

    monkeypatch.setattr(experiment, "measure", measure)
    monkeypatch.delenv(RESULTS_DIR_ENV, raising=False)  # restored after the command sets it
    return calls


def test_the_options_reach_the_measurement_and_the_record_is_written(
    measured: list[dict[str, Any]], tmp_path: Path
) -> None:
    result = runner.invoke(
        services.cli.app,
        ["wait-cost", "--tasks", "50", "--repetitions", "2", "--driver", "process", "--results-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    [call] = measured
    assert {key: call[key] for key in ("tasks", "repetitions", "driver")} == {
        "tasks": 50,
        "repetitions": 2,
        "driver": "process",
    }
    written = tmp_path / experiment.CATEGORY / "20261129T140000Z.json"
    assert json.loads(written.read_text())["schema"] == experiment.SCHEMA
    assert result.output.strip().splitlines()[-1] == str(written)
    assert all(
        any(line.startswith(f"{name} ") for line in result.output.splitlines()) for name in experiment.SETUP_NAMES
    )


def test_the_defaults_are_the_published_run(measured: list[dict[str, Any]], tmp_path: Path) -> None:
    result = runner.invoke(services.cli.app, ["wait-cost", "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {key: measured[0][key] for key in ("tasks", "repetitions", "driver")} == {
        "tasks": experiment.TASKS,
        "repetitions": experiment.REPETITIONS,
        "driver": None,
    }


@pytest.mark.parametrize("options", [["--driver", "kafka"], ["--repetitions", "1"], ["--tasks", "0"]])
def test_bad_options_stop_before_anything_starts(measured: list[dict[str, Any]], options: list[str]) -> None:
    result = runner.invoke(services.cli.app, ["wait-cost", *options])
    assert result.exit_code == 2, result.output
    assert measured == []
