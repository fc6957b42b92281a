"""The bench's peers (issue 17): brokerstack's defaults, stock Celery with the same settings,
Dramatiq with its own defaults and brokerstack fire-and-forget, drained alternately in one run.

The run is tiny (100 tasks, 2 repetitions, solo pool, one Redis setup): it checks what the record
says and that every system really drained the backlog, never the speeds. It took 2 minutes on a
loaded 2-core machine, so it is slow (`make test-slow`). The goal verdicts and the
record names are checked without a broker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lab.experiments.bench import REDIS_TRANSPORTS, SECTIONS, record_name
from lab.experiments.bench.peers import GOALS, SYSTEMS, dramatiq_default_threads, judge
from lab.experiments.bench.records import load_record
from lab.experiments.bench.stats import median_of_runs
from lab.harness.nodes import resolve_driver
from lab.report.peers import peers_table
from lab.report.sources import load_sources
from services.cli import app

SETUP = "redis-everysec"
TASKS = 100
REPEATS = 2


def runs(*rates: float) -> dict[str, Any]:
    return median_of_runs([{"messages": 100, "seconds": 100 / r, "per_s": r} for r in rates])


@pytest.mark.parametrize(
    ("ours", "theirs", "goal", "verdict"),
    [
        ((90.0, 100.0), (100.0, 110.0), 0.8, "met"),  # 90 > 0.8 x 110
        ((70.0, 80.0), (100.0, 110.0), 0.8, "no difference"),  # 80 is inside 0.8 x (100-110)
        ((60.0, 70.0), (100.0, 110.0), 0.8, "missed"),  # 70 < 0.8 x 100
        ((120.0, 130.0), (100.0, 110.0), 1.0, "met"),
        ((100.0, 115.0), (100.0, 110.0), 1.0, "no difference"),
        ((200.0,), (100.0,), 1.0, "unknown"),  # one run each: no range to judge the noise by
    ],
)
def test_a_goal_is_judged_against_the_noise(
    ours: tuple[float, ...], theirs: tuple[float, ...], goal: float, verdict: str
) -> None:
    judged = judge(runs(*ours), runs(*theirs), goal)
    assert judged["verdict"] == verdict
    assert judged["met"] is {"met": True, "missed": False}.get(verdict)
    assert judged["ratio"] == pytest.approx(runs(*ours)["per_s"] / runs(*theirs)["per_s"], rel=1e-3)


def test_a_run_of_some_sections_never_takes_a_full_records_name() -> None:
    full = record_name(SETUP, "docker", "full", REDIS_TRANSPORTS)
    assert record_name(SETUP, "docker", "full", REDIS_TRANSPORTS, SECTIONS) == full
    no_peers = tuple(s for s in SECTIONS if s != "peers")
    assert record_name(SETUP, "docker", "full", REDIS_TRANSPORTS, no_peers) == full
    assert record_name(SETUP, "docker", "full", REDIS_TRANSPORTS, ("peers",)) == f"{full}-peers"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("peers-results")
    argv = ["bench", "--section", "peers", "--setup", SETUP, "--tasks", str(TASKS), "--repeats", str(REPEATS)]
    argv += ["--peers-pool", "solo", "--json", "--results-dir", str(root)]
    outcome = CliRunner().invoke(app, argv, catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    return root


def record_path(results: Path) -> Path:
    return results / "bench" / f"{record_name(SETUP, resolve_driver(), 'full', REDIS_TRANSPORTS, ('peers',))}.json"


@pytest.fixture(scope="module")
def record(results: Path) -> dict[str, Any]:
    path = record_path(results)
    assert path.exists(), sorted(results.rglob("*.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_peer_drained_the_same_backlog_alternately(record: dict[str, Any]) -> None:
    assert record["status"] == "completed", record["errors"]
    assert all(record[section] is None for section in SECTIONS if section != "peers")
    peers = record["peers"]
    assert (peers["tasks"], peers["repeats"], peers["pool"], peers["concurrency"]) == (TASKS, REPEATS, "solo", 1)
    assert list(peers["systems"]) == list(SYSTEMS)
    for key, system in peers["systems"].items():
        consume = system["consume"]
        assert consume["repeats"] == REPEATS and len(consume["per_s_runs"]) == REPEATS, key
        assert all(isinstance(v, float) and v > 0 for v in consume["per_s_runs"]), (key, consume)
        assert consume["per_s_min"] <= consume["per_s"] <= consume["per_s_max"], (key, consume)
        # Every message left the queue (a tiny backlog is never cut short by drain_max_seconds).
        assert consume["truncated"] is False and consume["messages"] > TASKS // 2, (key, consume)
        assert system["enqueue"]["per_s"] > 0, key
    order = [entry["system"] for entry in peers["drain_order"]]
    assert order == list(SYSTEMS) + list(reversed(SYSTEMS))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_each_peer_ran_with_the_settings_it_stands_for(record: dict[str, Any]) -> None:
    systems = record["peers"]["systems"]
    ours, stock = systems["brokerstack_defaults"], systems["celery_defaults"]
    assert ours["results_stored"] is True and ours["acks_late"] is True
    assert ours["prefetch_multiplier"] == record["parameters"]["settings"]["WORKER_PREFETCH_MULTIPLIER"]
    # Stock Celery: brokerstack's Celery settings, Celery's own consumer, backend and kombu's transport.
    assert (stock["system"], stock["consumer"], stock["result_backend"]) == ("celery", "celery's", "celery's")
    assert stock["transport"] == "kombu" and "worker." not in stock["kombu_transport"]
    assert stock["prefetch_multiplier"] == ours["prefetch_multiplier"]
    assert stock["acks_late"] is True and stock["track_started"] is True and stock["results_stored"] is True
    dramatiq = systems["dramatiq_defaults"]
    assert (dramatiq["processes"], dramatiq["threads"]) == (1, dramatiq_default_threads())
    assert dramatiq["results_stored"] is False and "Results" not in dramatiq["middleware"]
    fire = systems["brokerstack_fire_and_forget"]
    assert (
        fire["results_stored"] is False and fire["prefetch_multiplier"] == record["parameters"]["throughput_prefetch"]
    )


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_goals_are_in_the_record_and_the_report(record: dict[str, Any], results: Path) -> None:
    peers = record["peers"]
    assert list(peers["goals"]) == [name for name, *_ in GOALS]
    for name, ours, theirs, goal in GOALS:
        expected = judge(peers["systems"][ours]["consume"], peers["systems"][theirs]["consume"], goal)
        assert peers["goals"][name] == {"ours": ours, "theirs": theirs, **expected}
        assert record["ratios"]["peers"][name] == expected["ratio"]
        assert record["ratios"]["peers_verdicts"][name] == expected["verdict"]
    assert load_record(record_path(results)).to_dict() == record
    text = peers_table(load_sources(results))
    assert f"{SETUP} [B1]" in text
    for name, *_ in GOALS:
        goal = peers["goals"][name]
        assert f"{goal['ratio']:.2f}x" in text


COMMITTED = Path(__file__).resolve().parents[2] / "results" / "bench"


def test_a_peers_only_record_leads_the_speed_section_and_never_replaces_a_full_one(tmp_path: Path) -> None:
    from lab.report.render import Report

    peers_only = sorted(COMMITTED.glob("*-peers.json"))
    if not peers_only:
        pytest.skip("no committed peers record")
    peers_path = peers_only[0]
    setup = json.loads(peers_path.read_text())["setup"]
    full_path = next(p for p in COMMITTED.glob(f"{setup}-*.json") if p != peers_path)
    (tmp_path / "bench").mkdir()
    for path in (full_path, peers_path):
        (tmp_path / "bench" / path.name).write_text(path.read_text())
    sources = load_sources(tmp_path)
    assert [r.source.name for r in sources.bench if r.source] == [full_path.name]
    assert [r.source.name for r in sources.bench_peers if r.source] == [peers_path.name]
    text = Report(sources, tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    speed = text.split("## Speed\n\n", 1)[1]
    assert speed.startswith("### brokerstack beside what users would otherwise run")
    assert "### Throughput against the raw client ceiling" in speed
    # Without a peers record the speed section reads as before.
    (tmp_path / "bench" / peers_path.name).unlink()
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    assert text.split("## Speed\n\n", 1)[1].startswith("### Throughput against the raw client ceiling")
