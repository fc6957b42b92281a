"""``brokerstack bench --quick`` on one Redis and one RabbitMQ setup: the records are complete.

This checks the shape of what the bench writes (every section present and measured, versions and
machine info there, ratios computed, on Redis both transports side by side and alternated), never
the speeds: those depend on the machine. Three of the four pools keep the run short; gevent is one
of them because it is the extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lab.cli.bench import transport_table
from lab.experiments.bench import REDIS_TRANSPORTS, SCHEMA, SECTIONS, record_name
from lab.harness.nodes import resolve_driver
from services.cli import app

# 6-10 minutes on a 2-core machine: `make test-slow` (and `make measure` runs the bench itself).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

SETUPS = ("redis-everysec", "rabbitmq-confirms")
POOLS = ("solo", "prefork", "gevent")
REPEATS = 2
VERDICTS = {"brokerstack faster", "kombu faster", "no difference"}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    results = tmp_path_factory.mktemp("bench-results")
    argv = ["bench", "--quick", "--json", "--results-dir", str(results), "--repeats", str(REPEATS)]
    for setup in SETUPS:
        argv += ["--setup", setup]
    for pool in POOLS:
        argv += ["--pool", pool]
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


def repeated(rate: dict[str, Any]) -> None:
    """A median of REPEATS runs with its range."""
    assert rate["repeats"] == REPEATS and len(rate["per_s_runs"]) == REPEATS, rate
    assert all(positive(v) for v in rate["per_s_runs"]), rate
    assert rate["per_s_min"] == min(rate["per_s_runs"]) and rate["per_s_max"] == max(rate["per_s_runs"])
    assert rate["per_s_min"] <= rate["per_s"] <= rate["per_s_max"], rate


@pytest.mark.parametrize("setup", SETUPS)
def test_record_header(records: dict[str, dict[str, Any]], setup: str) -> None:
    record = records[setup]
    assert record["schema"] == SCHEMA
    assert record["status"] == "completed", record["errors"]
    assert record["errors"] == []
    assert record["setup"] == setup and record["mode"] == "quick"
    redis = record["broker"] == "redis"
    assert record["transport"] == ("brokerstack" if redis else None)
    assert record["transports"] == (list(REDIS_TRANSPORTS) if redis else None)
    assert record["broker"] in record["broker_version"]
    for package in ("python", "celery", "kombu", "amqp", "redis"):
        assert record["clients"][package]
    assert positive(record["machine"]["cpus"]) and record["machine"]["platform"]
    assert positive(record["duration_s"]) and record["started_at"]
    params = record["parameters"]
    assert params["mode"] == "quick" and positive(params["tasks"]) and positive(params["backlog_tasks"])
    assert params["settings"]["BROKER_PROFILE"] == record["broker"]
    assert params["settings"].get("REDIS_TRANSPORT") == record["transport"]
    assert tuple(params["pools"]) == POOLS and params["repeats"] == REPEATS and params["gevent_concurrency"] == 100
    assert positive(params["message_bytes"])
    for section in SECTIONS:
        assert isinstance(record[section], dict) and "error" not in record[section], section


@pytest.mark.parametrize("setup", SETUPS)
def test_raw_ceiling(records: dict[str, dict[str, Any]], setup: str) -> None:
    raw = records[setup]["raw"]
    keys: tuple[str, ...] = ("publish", "consume")
    keys += (
        ("publish_pipelined", "consume_reliable", "consume_batched")
        if records[setup]["broker"] == "redis"
        else ("publish_confirm", "publish_confirm_pipelined", "consume_prefetch1", "consume_batched")
    )
    for key in keys:
        assert raw[key]["messages"] == raw["messages"], key
        assert positive(raw[key]["per_s"]), key
        repeated(raw[key])
    # The ceiling is the best client at the setup's durability (rabbitmq-confirms has confirms).
    ratios = records[setup]["ratios"]
    redis = records[setup]["broker"] == "redis"
    assert ratios["raw_consume_basis"] == "consume_batched"
    assert ratios["raw_publish_basis"] == ("publish_pipelined" if redis else "publish_confirm_pipelined")
    assert ratios["raw_consume_per_s"] == raw["consume_batched"]["per_s"]


@pytest.mark.parametrize("setup", SETUPS)
def test_end_to_end_per_pool(records: dict[str, dict[str, Any]], setup: str) -> None:
    e2e = records[setup]["end_to_end"]
    assert set(e2e["pools"]) == set(POOLS) and e2e["repeats"] == REPEATS
    per_transport = e2e["transports"] if records[setup]["broker"] == "redis" else {None: {"pools": e2e["pools"]}}
    for transport, measured in per_transport.items():
        assert set(measured["pools"]) == set(POOLS), transport
        for pool, result in measured["pools"].items():
            pool_complete(e2e, pool, result, transport)


def pool_complete(e2e: dict[str, Any], pool: str, result: dict[str, Any], transport: str | None) -> None:
    assert result.get("transport") == transport
    assert result["concurrency"] == {"solo": 1, "gevent": 100}.get(pool, 2)
    assert result["enqueue"]["messages"] == e2e["tasks"] and positive(result["enqueue"]["per_s"])
    repeated(result["enqueue"])
    latency_complete(result["enqueue"]["call_latency_ms"])
    assert positive(result["consume"]["messages"]) and positive(result["consume"]["per_s"])
    repeated(result["consume"])
    assert (result["consume"]["prefetch_multiplier"], result["consume"]["results_stored"]) == (16, False)
    defaults = result["defaults"]
    assert (defaults["consume"]["prefetch_multiplier"], defaults["consume"]["results_stored"]) == (1, True)
    assert positive(defaults["consume"]["per_s"]) and defaults["enqueue"]["messages"] == e2e["tasks"]
    repeated(defaults["consume"])
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
        # Each row is the median of the run's repetitions, with their range.
        assert run["repeats"] == record["parameters"]["repeats"] == len(run["rps_runs"])
        assert run["rps_min"] <= run["rps"] <= run["rps_max"]
    if record["broker"] == "rabbitmq":
        assert record["ratios"]["api_confirm_verdict"]["verdict"] in (
            "no difference",
            "unconfirmed faster",
            "confirmed faster",
        )


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


def test_redis_transports_side_by_side(records: dict[str, dict[str, Any]]) -> None:
    """Both Redis transports, every pool, both drains: medians, ranges, ratio and a verdict that
    follows from the ranges; the drains of the two alternated (A B, then B A)."""
    record = records["redis-everysec"]
    e2e = record["end_to_end"]
    comparison = e2e["comparison"]
    assert set(comparison) == set(POOLS)
    a, b = REDIS_TRANSPORTS
    for pool, entry in comparison.items():
        for config in ("fire_and_forget", "defaults", "enqueue"):
            side = entry[config]
            for transport in (a, b):
                assert side[transport]["repeats"] == REPEATS and positive(side[transport]["per_s"]), (pool, config)
            assert side["ratio"] == pytest.approx(side[a]["per_s"] / side[b]["per_s"], rel=1e-2)
            apart = side[a]["per_s_min"] > side[b]["per_s_max"] or side[b]["per_s_min"] > side[a]["per_s_max"]
            assert side["outside_noise"] is apart and side["verdict"] in VERDICTS, side
            assert (side["verdict"] == "no difference") is (not apart)
        assert entry["fire_and_forget"][a]["per_s"] == e2e["transports"][a]["pools"][pool]["consume"]["per_s"]
        assert entry["defaults"][b]["per_s"] == e2e["transports"][b]["pools"][pool]["defaults"]["consume"]["per_s"]
        assert entry["latency_to_finish_ms"][a]["p50"] and entry["latency_to_finish_ms"][b]["p50"]
        # The same steady load on both, which the slower of them can take with the defaults.
        results = [e2e["transports"][t]["pools"][pool] for t in (a, b)]
        targets = {r["latency"]["rate_target_per_s"] for r in results}
        assert len(targets) == 1, targets
        assert targets.pop() <= min(r["defaults"]["consume"]["per_s"] for r in results) / 2 + 0.1
    for config in ("fire_and_forget", "defaults"):
        assert set(record["ratios"]["brokerstack_vs_kombu"][config]) == set(POOLS)
        for pool in POOLS:
            order = [d["transport"] for d in e2e["drain_order"] if (d["pool"], d["config"]) == (pool, config)]
            assert order == [a, b, b, a], (pool, config, order)
    assert records["rabbitmq-confirms"]["end_to_end"].get("comparison") is None
    assert records["rabbitmq-confirms"]["ratios"]["brokerstack_vs_kombu"] is None


def test_side_by_side_table(records: dict[str, dict[str, Any]]) -> None:
    console = Console(record=True, width=300)
    console.print(transport_table(list(records.values())))
    text = console.export_text()
    assert "fire-and-forget brokerstack" in text and "defaults brokerstack" in text and "kombu" in text
    rows = [line for line in text.splitlines() if "redis-everysec" in line]
    assert sorted(pool for line in rows for pool in POOLS if f" {pool} " in line) == sorted(POOLS)
    assert all(sum(line.count(verdict) for verdict in VERDICTS) == 2 for line in rows), rows
    assert "rabbitmq-confirms" not in text
