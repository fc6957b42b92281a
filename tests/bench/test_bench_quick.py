"""``brokerstack bench --quick`` on one Redis and one RabbitMQ setup: the records are complete.

This checks the shape of what the bench writes (every section present and measured, versions and
machine info there, ratios computed), never the speeds: those depend on the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lab.bench import SCHEMA, SECTIONS, record_name
from lab.nodes import resolve_driver
from services.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SETUPS = ("redis-everysec", "rabbitmq-confirms")
POOLS = ("solo", "threads", "prefork")


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    results = tmp_path_factory.mktemp("bench-results")
    argv = ["bench", "--quick", "--json", "--results-dir", str(results)]
    for setup in SETUPS:
        argv += ["--setup", setup]
    outcome = CliRunner().invoke(app, argv, catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    printed = json.loads(outcome.stdout)
    written = {}
    driver = resolve_driver()
    for setup in SETUPS:
        path = Path(results) / "bench" / f"{record_name(setup, driver, 'quick')}.json"
        assert path.exists(), f"no record at {path}"
        written[setup] = json.loads(path.read_text())
    assert [r["setup"] for r in printed] == list(SETUPS)
    return written


def positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def latency_complete(latency: dict[str, Any]) -> None:
    assert latency["n"] > 0
    for key in ("p50", "p95", "p99", "max", "mean"):
        assert positive(latency[key]), (key, latency)
    assert latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]


@pytest.mark.parametrize("setup", SETUPS)
def test_record_header(records: dict[str, dict[str, Any]], setup: str) -> None:
    record = records[setup]
    assert record["schema"] == SCHEMA
    assert record["status"] == "completed", record["errors"]
    assert record["errors"] == []
    assert record["setup"] == setup and record["mode"] == "quick"
    assert record["broker"] in record["broker_version"]
    for package in ("python", "celery", "kombu", "amqp", "redis"):
        assert record["clients"][package]
    assert positive(record["machine"]["cpus"]) and record["machine"]["platform"]
    assert positive(record["duration_s"]) and record["started_at"]
    params = record["parameters"]
    assert params["mode"] == "quick" and positive(params["tasks"]) and positive(params["backlog_tasks"])
    assert params["settings"]["BROKER_PROFILE"] == record["broker"]
    assert positive(params["message_bytes"])
    for section in SECTIONS:
        assert isinstance(record[section], dict) and "error" not in record[section], section


@pytest.mark.parametrize("setup", SETUPS)
def test_raw_ceiling(records: dict[str, dict[str, Any]], setup: str) -> None:
    raw = records[setup]["raw"]
    keys = ("publish", "consume")
    keys += (("publish_pipelined", "consume_reliable", "consume_batched") if records[setup]["broker"] == "redis"
             else ("publish_confirm", "publish_confirm_pipelined", "consume_prefetch1"))
    for key in keys:
        assert raw[key]["messages"] == raw["messages"], key
        assert positive(raw[key]["per_s"]), key


@pytest.mark.parametrize("setup", SETUPS)
def test_end_to_end_per_pool(records: dict[str, dict[str, Any]], setup: str) -> None:
    e2e = records[setup]["end_to_end"]
    assert set(e2e["pools"]) == set(POOLS)
    for pool, result in e2e["pools"].items():
        assert result["concurrency"] == (1 if pool == "solo" else 2)
        assert result["enqueue"]["messages"] == e2e["tasks"] and positive(result["enqueue"]["per_s"])
        latency_complete(result["enqueue"]["call_latency_ms"])
        assert positive(result["consume"]["messages"]) and positive(result["consume"]["per_s"])
        assert (result["consume"]["prefetch_multiplier"], result["consume"]["results_stored"]) == (16, False)
        defaults = result["defaults"]
        assert (defaults["consume"]["prefetch_multiplier"], defaults["consume"]["results_stored"]) == (1, True)
        assert positive(defaults["consume"]["per_s"]) and defaults["enqueue"]["messages"] == e2e["tasks"]
        steady = result["latency"]
        assert steady["finished"] == steady["tasks"] > 0
        for key in ("enqueue_call_ms", "enqueue_to_start_ms", "enqueue_to_finish_ms"):
            latency_complete(steady[key])
        res = result["resources"]
        assert positive(res["broker_total_cpu_s_per_10k"]) and positive(res["worker_cpu_s_per_10k"])
        assert positive(res["broker_rss_bytes"]["before"])


@pytest.mark.parametrize("setup", SETUPS)
def test_api_under_load(records: dict[str, dict[str, Any]], setup: str) -> None:
    record = records[setup]
    runs = record["api"]["runs"]
    modes = {run["confirm_publish"] for run in runs}
    assert modes == ({True, False} if record["broker"] == "rabbitmq" else {None})
    for run in runs:
        assert run["errors"] == 0 and positive(run["rps"]) and run["statuses"] == {"202": run["ok"]}
        latency_complete(run["latency_ms"])
        assert positive(run["api_cpu_ms_per_request"])


@pytest.mark.parametrize("setup", SETUPS)
def test_resources_and_ratios(records: dict[str, dict[str, Any]], setup: str) -> None:
    record = records[setup]
    backlog = record["resources"]["backlog"]
    assert backlog["held"] == backlog["tasks"] == record["parameters"]["backlog_tasks"]
    assert positive(backlog["rss_with_backlog_bytes"]) and backlog["bytes_per_task"] is not None
    assert set(record["resources"]["per_10k_tasks"]) == set(POOLS)
    ratios = record["ratios"]
    assert set(ratios["e2e_vs_raw_consume"]) == set(POOLS)
    assert all(positive(v) for v in ratios["e2e_vs_raw_consume"].values())
    assert set(ratios["e2e_defaults_vs_raw_consume"]) == set(POOLS)
    assert all(positive(v) for v in ratios["e2e_defaults_vs_raw_consume"].values())
    assert all(positive(v) for v in ratios["enqueue_vs_raw_publish"].values())
    assert ratios["best_pool"] in POOLS and isinstance(ratios["meets_goal_e2e"], bool)
    if record["broker"] == "rabbitmq":
        assert positive(ratios["api_confirm_cost"]) and positive(ratios["raw_confirm_cost"])
        assert isinstance(ratios["meets_goal_api_confirm_cost"], bool)
    else:
        assert ratios["api_confirm_cost"] is None
