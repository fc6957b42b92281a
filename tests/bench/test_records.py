"""Bench records without a broker: the noise rule of the side-by-side comparison, older records
read as the current schema, and every committed record read into the typed record and written back
unchanged."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lab.experiments.bench import SCHEMA, available_pools
from lab.experiments.bench.records import V1, BenchRecord, load_record, upgrade_record
from lab.experiments.bench.runner import BenchParams
from lab.experiments.bench.stats import compare, median_of_runs


def runs(*rates: float) -> dict[str, Any]:
    return median_of_runs([{"messages": 100, "seconds": 100 / r, "per_s": r} for r in rates])


def test_median_of_runs_keeps_the_range_and_the_run_nearest_the_median() -> None:
    summary = runs(300.0, 100.0, 200.0)
    assert (summary["per_s"], summary["per_s_min"], summary["per_s_max"]) == (200.0, 100.0, 300.0)
    assert summary["per_s_runs"] == [300.0, 100.0, 200.0] and summary["repeats"] == 3
    assert summary["seconds"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        ((100.0, 110.0), (120.0, 130.0), "kombu faster"),
        ((120.0, 130.0), (100.0, 110.0), "brokerstack faster"),
        ((100.0, 125.0), (120.0, 130.0), "no difference"),  # overlapping ranges: inside the noise
        ((100.0,), (200.0,), "unknown"),  # one run each: no range to judge the noise by
    ],
)
def test_compare_reports_a_difference_only_outside_the_noise(
    a: tuple[float, ...], b: tuple[float, ...], verdict: str
) -> None:
    result = compare(("brokerstack", runs(*a)), ("kombu", runs(*b)))
    assert result["verdict"] == verdict
    assert result["outside_noise"] is {"no difference": False, "unknown": None}.get(verdict, True)
    assert result["ratio"] == pytest.approx(runs(*a)["per_s"] / runs(*b)["per_s"], rel=1e-3)


@pytest.mark.parametrize(
    ("a", "b", "goal", "verdict"),
    [
        ((90.0, 100.0), (100.0, 110.0), 0.8, "brokerstack faster"),  # 90 > 0.8 x 110
        ((70.0, 80.0), (100.0, 110.0), 0.8, "no difference"),  # 80 is inside 0.8 x (100-110)
        ((60.0, 70.0), (100.0, 110.0), 0.8, "kombu faster"),  # 70 < 0.8 x 100
        ((120.0, 130.0), (100.0, 110.0), 1.25, "no difference"),  # 130 is inside 1.25 x (100-110)
    ],
)
def test_a_goal_scales_the_second_range_not_the_ratio(
    a: tuple[float, ...], b: tuple[float, ...], goal: float, verdict: str
) -> None:
    result = compare(("brokerstack", runs(*a)), ("kombu", runs(*b)), goal=goal)
    assert result["verdict"] == verdict
    assert result["ratio"] == compare(("brokerstack", runs(*a)), ("kombu", runs(*b)))["ratio"]


V1_RECORD: dict[str, Any] = {
    "schema": V1,
    "setup": "redis-everysec",
    "broker": "redis",
    "status": "completed",
    "mode": "full",
    "end_to_end": {
        "tasks": 10,
        "pools": {
            "solo": {
                "pool": "solo",
                "concurrency": 1,
                "enqueue": {"messages": 10, "seconds": 1.0, "per_s": 10.0},
                "consume": {"messages": 10, "seconds": 0.5, "per_s": 20.0},
                "defaults": {"enqueue": {"per_s": 9.0}, "consume": {"per_s": 5.0}},
            }
        },
    },
    "ratios": {"e2e_vs_raw_consume": {"solo": 0.5}},
}


def test_a_v1_record_reads_as_the_current_schema() -> None:
    original = copy.deepcopy(V1_RECORD)
    record = upgrade_record(V1_RECORD)
    assert original == V1_RECORD  # the caller's record is left alone
    assert record["schema"] == V1 and record["read_as"] == SCHEMA
    assert (record["transport"], record["transports"]) == ("brokerstack", ["brokerstack"])
    e2e = record["end_to_end"]
    assert e2e["repeats"] == 1 and e2e["comparison"] is None
    assert e2e["transports"]["brokerstack"]["pools"]["solo"]["consume"]["per_s"] == 20.0
    consume = e2e["pools"]["solo"]["consume"]
    spread = (consume["per_s_min"], consume["per_s_max"], consume["per_s_runs"], consume["repeats"])
    assert spread == (20.0, 20.0, [20.0], 1)
    assert e2e["pools"]["solo"]["defaults"]["consume"]["per_s_runs"] == [5.0]
    assert record["ratios"]["brokerstack_vs_kombu"] is None
    # The side-by-side rule has nothing to judge in a single run.
    assert compare(("brokerstack", consume), ("kombu", consume))["verdict"] == "unknown"


def test_a_rabbitmq_v1_record_has_no_transport() -> None:
    record = upgrade_record({**V1_RECORD, "broker": "rabbitmq", "setup": "rabbitmq-confirms"})
    assert record["transport"] is None and record["transports"] is None
    assert "transports" not in record["end_to_end"]


def test_unknown_schemas_are_refused() -> None:
    with pytest.raises(ValueError, match="not a bench record"):
        upgrade_record({"schema": "brokerstack.bench/0"})


def test_the_bench_pools_include_gevent_when_it_is_installed() -> None:
    pytest.importorskip("gevent")
    assert "gevent" in available_pools() and "gevent" in BenchParams().pools
    assert BenchParams().gevent_concurrency == 100


@pytest.mark.parametrize(
    "options",
    [
        {"transports": ()},
        {"transports": ("kombu", "kombu")},
        {"transports": ("celery",)},
        {"repeats": 0},
        {"pools": ("eventlet",)},
    ],
)
def test_invalid_bench_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BenchParams().with_options(**options)


def test_a_single_transport_run_never_replaces_the_side_by_side_record() -> None:
    from lab.experiments.bench import record_name

    assert record_name("redis-everysec", "docker", "full", ("brokerstack", "kombu")) == "redis-everysec-docker"
    assert record_name("redis-everysec", "docker", "quick", ("kombu",)) == "redis-everysec-docker-quick-kombu"
    assert record_name("rabbitmq-confirms", "process", "full") == "rabbitmq-confirms-process"


def test_the_raw_ceiling_is_the_median_of_alternated_runs_of_the_best_client() -> None:
    from lab.experiments.bench import raw
    from lab.experiments.bench.runner import compute_ratios
    from lab.experiments.bench.vendors import bench_vendor

    def run(publish: float, batched: float) -> dict[str, Any]:
        return {
            "client": "redis-py",
            "publish_pipelined": {"messages": 100, "seconds": 100 / publish, "per_s": publish},
            "consume": {"messages": 100, "seconds": 1.0, "per_s": 100.0},
            "consume_batched": {"messages": 100, "seconds": 100 / batched, "per_s": batched},
        }

    section = raw.repeated([run(900.0, 5000.0), run(1000.0, 4000.0), run(1100.0, 6000.0)])
    assert section["repeats"] == 3 and section["client"] == "redis-py"
    batched = section["consume_batched"]
    assert (batched["per_s"], batched["per_s_min"], batched["per_s_max"]) == (5000.0, 4000.0, 6000.0)
    record: dict[str, Any] = {
        "setup": "redis-everysec",
        "broker": "redis",
        "raw": section,
        "end_to_end": {"pools": {}},
        "parameters": {},
    }
    ratios = compute_ratios(BenchRecord.from_dict(record))
    assert (ratios.raw_consume_basis, ratios.raw_consume_per_s) == ("consume_batched", 5000.0)
    assert (ratios.raw_publish_basis, ratios.raw_publish_per_s) == ("publish_pipelined", 1000.0)
    # RabbitMQ: confirms in a window where the setup confirms, plain publishes where it does not.
    rabbitmq = bench_vendor("rabbitmq")
    assert rabbitmq.ceiling_keys(True) == ("publish_confirm_pipelined", "consume_batched")
    assert rabbitmq.ceiling_keys(False) == ("publish", "consume_batched")
    # Batching gains outside the noise here; pipelined publishes do not (the ranges overlap).
    assert ratios.raw_verdicts is not None
    assert ratios.raw_verdicts["consume_batched vs consume"]["verdict"] == "consume_batched faster"
    section["publish"] = median_of_runs([{"per_s": v} for v in (950.0, 1050.0, 1000.0)])
    verdicts = compute_ratios(BenchRecord.from_dict({**record, "raw": section})).raw_verdicts
    assert verdicts is not None and verdicts["publish_pipelined vs publish"]["verdict"] == "no difference"
    # A record from before the batched ceiling keeps the figures it has.
    old = {**record, "raw": {"consume": {"per_s": 100.0}, "publish": {"per_s": 50.0}}}
    assert compute_ratios(BenchRecord.from_dict(old)).raw_consume_basis == "consume"


def test_make_measure_runs_three_repetitions_by_default() -> None:
    assert BenchParams().repeats >= 3


COMMITTED = sorted((Path(__file__).resolve().parents[2] / "results" / "bench").glob("*.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_a_committed_record_reads_typed_and_writes_back_byte_for_byte(path: Path) -> None:
    """The published records are contracts: reading one into the typed record and writing it again
    gives the same JSON, same keys in the same order, nothing added or dropped."""
    text = path.read_text()
    data = json.loads(text)
    record = BenchRecord.from_dict(data)
    assert json.dumps(record.to_dict(), indent=2) + "\n" == text
    # Read as the current schema: typed sections, every pool's drains in reach by attribute.
    current = load_record(path)
    assert current.to_dict() == upgrade_record(data)
    assert current.source == path and current.setup == data["setup"] and current.broker == data["broker"]
    if current.peers is not None:
        assert current.peers.systems and current.ratios is not None and current.ratios.peers
        for key, system in current.peers.systems.items():
            assert system.consume is not None
            assert system.consume.per_s == data["peers"]["systems"][key]["consume"]["per_s"]
    if data.get("end_to_end") is None and data["parameters"].get("sections") == ["peers"]:
        return  # a run of the peers alone (``--section peers``): no other section to read
    assert current.end_to_end is not None and current.pools
    for name, result in current.pools.items():
        assert (
            result.consume is not None and result.consume.per_s == data["end_to_end"]["pools"][name]["consume"]["per_s"]
        )
        assert result.drain(defaults=True) is not None
    ceiling = current.ceiling()
    assert (
        ceiling is not None
        and ceiling.per_s == data["raw"][(data["ratios"].get("raw_consume_basis") or "consume")]["per_s"]
    )
    assert current.ratios is not None and current.ratios.e2e_vs_raw_consume == data["ratios"]["e2e_vs_raw_consume"]


def test_the_committed_records_are_all_read() -> None:
    assert len(COMMITTED) >= 6


def test_unknown_fields_survive_a_round_trip() -> None:
    data = {**V1_RECORD, "schema": SCHEMA, "from_a_newer_writer": {"x": 1}}
    data["end_to_end"] = {**V1_RECORD["end_to_end"], "later": [1, 2]}
    assert BenchRecord.from_dict(data).to_dict() == data


def test_a_record_built_in_code_writes_only_what_was_set(tmp_path: Path) -> None:
    from lab.harness.results import write_record

    record = BenchRecord(schema_=SCHEMA, setup="redis-everysec", broker="redis", status="completed", errors=[])
    record.aux_version = "redis 8"
    path = write_record("bench", "x", record, root=tmp_path)
    assert path == tmp_path / "bench" / "x.json"
    written = json.loads(path.read_text())
    assert list(written) == ["written_at", "schema", "setup", "broker", "status", "errors", "aux_version"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_every_broker_profile_has_a_bench_vendor() -> None:
    from lab.experiments.bench.vendors import BENCH_VENDORS
    from worker.brokers import PROFILES

    assert set(BENCH_VENDORS) == set(PROFILES)
    assert all(name == vendor.name for name, vendor in BENCH_VENDORS.items())


def test_the_report_says_which_ceiling_each_record_was_measured_against(tmp_path: Path) -> None:
    """The goal was set against the one-message ceiling: the report names the records measured
    against it, and says the batched ceiling is not judged by the goal."""
    from lab.report.render import Report
    from lab.report.sources import load_sources

    frozen = Path(__file__).resolve().parents[1] / "data" / "bench" / "redis-everysec-docker-v1.json"
    old = tmp_path / "bench" / "redis-everysec-docker.json"
    (tmp_path / "bench").mkdir()
    old.write_text(frozen.read_text())

    def speed() -> str:
        text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
        return text.split("### Throughput against the raw client ceiling", 1)[1].split("\n### ", 1)[0]

    assert "The records [B1] are older: their ceiling is the one-message client" in speed()
    data = json.loads(old.read_text())
    data["ratios"]["raw_consume_basis"] = "consume_batched"
    old.write_text(json.dumps(data))
    batched = speed()
    assert "are older" not in batched
    assert "RPOP with a count" in batched and "not judged by it" in batched
