"""docs/ops-comparison.md is exactly what `brokerstack report` renders from the committed records,
so no number in it was typed or edited by hand, and every chart it links to is committed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

from lab.report import Report, load_sources
from lab.report.render import PUBLISHED_MIN_CHAOS_TASKS

REPO = Path(__file__).resolve().parents[2]
#: Bench records as schema /1 wrote them (one drain per pool, the one-message ceiling), frozen here:
#: the published ones in results/ are measured again and change.
V1_BENCH = REPO / "tests" / "data" / "bench"
DOC = REPO / "docs" / "ops-comparison.md"


def test_committed_ops_comparison_is_rendered_from_the_committed_results():
    sources = load_sources(REPO / "results", min_chaos_tasks=PUBLISHED_MIN_CHAOS_TASKS)
    assert sources.chaos and sources.bench and sources.priority
    rendered = Report(sources, DOC, DOC.parent / "img", draw_charts=False).render()
    assert DOC.read_text() == rendered, "docs/ops-comparison.md differs from its records: run `brokerstack report`"


def test_every_chart_the_doc_links_to_is_committed():
    charts = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", DOC.read_text())
    assert charts
    for chart in charts:
        assert (DOC.parent / chart).is_file(), chart


def _chaos_record(
    root: Path,
    scenario: str,
    setup: str,
    run_id: str,
    *,
    transport: str | None = "brokerstack",
    duration: float | None = None,
    lost: int = 0,
    tasks: int = 10,
) -> None:
    from lab.experiments.chaos import Attempt, Execution, RunRecord, account
    from lab.experiments.chaos.record import write_record

    record = RunRecord(
        scenario=scenario,
        setup=setup,
        run_id=run_id,
        started_at=f"2026-01-02T03:04:{run_id[-2:]}.0Z",
        driver="process",
        parameters={"tasks": tasks, "kills": 4, "duration": duration},
        transport=transport,
        versions={"broker": "redis 8.0"},
    )
    attempts = [Attempt(index=i, task_id=f"t{i}", invoked_at=i, outcome="ok", completed_at=i) for i in range(10)]
    executions = [Execution("finish", f"t{i}") for i in range(lost, 10)]
    record.counts = account(attempts, executions)
    record.faults = [{"n": i} for i in range(4)]
    record.status = "completed"
    path = write_record(record, root)
    if transport == "old":  # written before records named their transport
        data = json.loads(path.read_text())
        del data["transport"]
        path.write_text(json.dumps(data))


def test_the_report_puts_kombus_transport_beside_ours_and_soaks_per_fault(tmp_path: Path):
    _chaos_record(tmp_path, "idle-kill", "redis-everysec", "00000001", transport="old")
    _chaos_record(tmp_path, "idle-kill", "redis-everysec", "00000002", transport="kombu", lost=1)
    _chaos_record(tmp_path, "worker-kill", "redis-everysec", "00000003", duration=1200.0)
    _chaos_record(tmp_path, "worker-kill", "redis-everysec", "00000004", transport="kombu", duration=1200.0, lost=2)
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    durability = text.split("## Durability", 1)[1].split("\n## ", 1)[0]
    assert "| setup | transport | scenario |" in durability
    assert "| redis-everysec | brokerstack | idle-kill | 4 | 10 | 10 | 0 |" in durability
    assert "| redis-everysec | kombu | idle-kill | 4 | 10 | 10 | 1 |" in durability
    assert "worker-kill" not in durability  # soaks have their own table
    soak = text.split("## Soak", 1)[1].split("\n## ", 1)[0]
    assert "0.14-0.20" in soak
    assert "| worker-kill | redis-everysec | brokerstack |" in soak and "| 0 | 0.000 |" in soak
    assert "| worker-kill | redis-everysec | kombu |" in soak and "| 2 | 0.500 |" in soak


def test_without_kombus_transport_the_durability_table_keeps_its_columns(tmp_path: Path):
    _chaos_record(tmp_path, "idle-kill", "redis-everysec", "00000001", transport="old")
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    assert "| setup | scenario | faults |" in text and "## Soak" not in text


def _rate(median: float, low: float, high: float) -> dict[str, Any]:
    return {"per_s": median, "per_s_min": low, "per_s_max": high, "per_s_runs": [low, median, high], "repeats": 3}


def _current(v1_name: str) -> dict[str, Any]:
    """A committed /1 bench record, upgraded and written as a record of the current schema."""
    from lab.experiments.bench import SCHEMA
    from lab.experiments.bench.records import upgrade_record

    record = upgrade_record(json.loads((V1_BENCH / v1_name).read_text()))
    record.pop("read_as", None)
    record["schema"] = SCHEMA
    return record


def _bench_v2(root: Path, *, started_at: str = "2026-02-01T00:00:00Z") -> Path:
    """The committed /1 Redis record, rewritten as a /2 one that compared both transports (3 repeats):
    solo apart (brokerstack faster), threads overlapping (no difference), gevent measured."""
    from lab.experiments.bench import transport_comparison

    record = _current("redis-everysec-docker-v1.json")
    rates = {
        "brokerstack": {"solo": (900, 880, 920), "threads": (600, 560, 640), "gevent": (700, 690, 710)},
        "kombu": {"solo": (500, 480, 520), "threads": (590, 550, 630), "gevent": (300, 290, 310)},
    }
    transports = {
        name: {
            pool: {"consume": _rate(*r), "defaults": {"consume": _rate(r[0] / 4, r[1] / 4, r[2] / 4)}}
            for pool, r in pools.items()
        }
        for name, pools in rates.items()
    }
    record.update(started_at=started_at, transports=["brokerstack", "kombu"])
    record["end_to_end"].update(
        repeats=3,
        pools=transports["brokerstack"],
        transports={name: {"pools": pools} for name, pools in transports.items()},
        comparison=transport_comparison(dict(transports.items())),
    )
    path = root / "bench" / "redis-everysec-docker.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_bench_v2_puts_the_redis_transports_side_by_side_with_medians_and_ranges(tmp_path: Path):
    _bench_v2(tmp_path)
    sources = load_sources(tmp_path)
    assert len(sources.bench) == 1
    text = Report(sources, tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    side = text.split("### Redis transports side by side", 1)[1].split("\n### ", 1)[0]
    assert (
        "| redis-everysec | solo | fire-and-forget | 900/s [880-920] | 500/s [480-520] | 1.80 | "
        "brokerstack faster | 3 | [B1] |" in side
    )
    assert (
        "| redis-everysec | threads | fire-and-forget | 600/s [560-640] | 590/s [550-630] | 1.02 | "
        "no difference | 3 | [B1] |" in side
    )
    assert "| redis-everysec | gevent |" in side
    assert "- no difference: " in side and "threads fire-and-forget" in side.split("- no difference: ", 1)[1]
    assert "the median of *repeats* drains" in side
    speed = text.split("### Throughput against the raw client ceiling", 1)[1].split("\n### ", 1)[0]
    assert "e2e gevent" in speed and "| 3 | [B1] |" in speed


def test_a_v1_bench_record_renders_as_one_run_without_range(tmp_path: Path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "redis-everysec-docker.json").write_text(
        (V1_BENCH / "redis-everysec-docker-v1.json").read_text()
    )
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    assert "1 (one run, no range)" in text
    assert "No benchmark record compares brokerstack's Redis transport with kombu's yet" in text
    assert "[" not in text.split("| redis-everysec |", 1)[1].split("\n", 1)[0].replace("[B1]", "")


def test_a_backlog_that_shrank_the_brokers_rss_shows_no_negative_size_per_task(tmp_path: Path):
    """RabbitMQ keeps a classic queue's messages on disk and its VM may return memory while a
    backlog fills: a fall in RSS is no size per task (docs/sizing.md measures that)."""
    path = _bench_v2(tmp_path)
    record = json.loads(path.read_text())
    record["resources"]["backlog"].update(rss_growth_bytes=-7_331_840, bytes_per_task=-73.3)
    path.write_text(json.dumps(record))
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    resources = text.split("## Broker resources", 1)[1].split("\n## ", 1)[0]
    row = resources.split("| redis-everysec |", 1)[1].split("\n", 1)[0]
    assert "none measurable" in row and "-73" not in row, row
    assert "sizing.md" in resources


def test_a_record_comparing_both_transports_wins_over_a_newer_one_that_did_not(tmp_path: Path):
    _bench_v2(tmp_path, started_at="2026-01-01T00:00:00Z")
    newer = json.loads((tmp_path / "bench" / "redis-everysec-docker.json").read_text())
    newer.update(started_at="2026-03-01T00:00:00Z", transports=["kombu"], run_id="newer")
    (tmp_path / "bench" / "redis-everysec-docker-kombu.json").write_text(json.dumps(newer))
    (bench,) = load_sources(tmp_path).bench
    assert bench.transports == ["brokerstack", "kombu"]


def test_charts_mark_zero_lost_and_show_defaults_and_every_pool(tmp_path: Path):
    _bench_v2(tmp_path)
    _chaos_record(tmp_path, "idle-kill", "redis-everysec", "00000001")
    _chaos_record(tmp_path, "idle-kill", "redis-always", "00000002", lost=6)
    sources = load_sources(tmp_path)
    report = Report(sources, tmp_path / "doc.md", tmp_path / "img")
    report.render()
    for name in ("durability.png", "throughput.png"):
        assert (tmp_path / "img" / name).stat().st_size > 10_000


def test_the_report_command_leaves_out_runs_below_the_published_size(tmp_path: Path):
    from typer.testing import CliRunner

    from lab.cli import report as report_cli

    app = typer.Typer()
    app.command()(report_cli.report)
    _chaos_record(tmp_path, "broker-kill", "redis-everysec", "00000001", tasks=5000)
    _chaos_record(tmp_path, "broker-kill", "redis-everysec", "00000002", tasks=300, lost=3)  # newer, smaller
    result = CliRunner().invoke(
        app, ["--results-dir", str(tmp_path), "--output", str(tmp_path / "doc.md"), "--charts-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "not published (below the published size): broker-kill on redis-everysec" in result.stderr
    assert "run 00000002" in result.stderr
    doc = (tmp_path / "doc.md").read_text()
    assert "run 00000001" in doc and "00000002" not in doc


def test_brokers_whose_ranges_overlap_are_not_ranked(tmp_path: Path):

    _bench_v2(tmp_path)  # Redis: best fire-and-forget is solo, 900/s [880-920]
    record = _current("rabbitmq-confirms-docker-v1.json")
    record["end_to_end"]["repeats"] = 3
    for pool, section in record["end_to_end"]["pools"].items():
        section["consume"] = _rate(890, 850, 910) if pool == "solo" else _rate(100, 90, 110)
        section["defaults"]["consume"] = _rate(200, 190, 210)
    (tmp_path / "bench" / "rabbitmq-confirms-docker.json").write_text(json.dumps(record))
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    bullet = next(line for line in text.splitlines() if "Redis is fast, RabbitMQ slow" in line)
    fire_and_forget, defaults = bullet.split("Once every task's state is stored")
    assert "no difference" in fire_and_forget and "ahead" not in fire_and_forget, bullet
    assert "900/s [880-920]" in fire_and_forget and "890/s [850-910]" in fire_and_forget
    # The defaults' ranges (Redis 220-230, RabbitMQ 190-210) do not overlap: that one is ranked.
    assert "(Redis ahead)" in defaults and "200/s [190-210]" in defaults, bullet


def test_a_confirm_cost_inside_the_noise_reads_no_difference_and_api_rates_show_their_range(tmp_path: Path):
    """A ratio of two medians below 1 ("confirms faster than none") is noise when the ranges
    overlap, and the table says so instead of printing it bare; a ratio outside the noise stays bare."""
    from lab.experiments.bench import compute_ratios
    from lab.experiments.bench.records import read_record

    record = _current("rabbitmq-confirms-docker-v1.json")
    raw = record["raw"]
    raw["publish"].update(_rate(6400, 4600, 7100))
    raw["publish_confirm"].update(_rate(1700, 1200, 1750))
    raw["publish_confirm_pipelined"].update(_rate(9300, 5400, 9900))
    for run in record["api"]["runs"]:
        median = run["rps"]
        run.update(rps_min=median - 20, rps_max=median + 20, rps_runs=[median - 20, median, median + 20], repeats=3)
    record["ratios"] = compute_ratios(read_record(record)).model_dump()
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "rabbitmq-confirms-docker.json").write_text(json.dumps(record))
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    confirms = text.split("### What publisher confirms cost", 1)[1].split("\n## ", 1)[0]
    [row] = [line for line in confirms.splitlines() if line.startswith("| rabbitmq-confirms |")]
    per_message, pipelined = row.split(" | ")[1:3]
    assert per_message == "3.76", row
    assert pipelined == "0.69: no difference (the ranges overlap)", row
    api = text.split("### The API under load", 1)[1].split("\n### ", 1)[0]
    first = record["api"]["runs"][0]["rps"]
    assert f"{first:,.0f}/s [{first - 20:,.0f}-{first + 20:,.0f}]" in api


def test_the_published_report_leaves_out_a_bench_record_of_one_drain_and_says_so(tmp_path: Path):
    """A published figure is a median with its range: a /1 record (one drain per pool) does not
    stand for its setup there, whatever it measured; a report of one's own runs still shows it."""
    _bench_v2(tmp_path)  # redis-everysec: 3 drains per pool
    (tmp_path / "bench" / "rabbitmq-confirms-docker.json").write_text(
        (V1_BENCH / "rabbitmq-confirms-docker-v1.json").read_text()
    )
    published = load_sources(tmp_path, min_chaos_tasks=5000)
    assert [r.setup for r in published.bench] == ["redis-everysec"]
    [line] = published.bench_unpublished
    assert line.startswith("bench rabbitmq-confirms (docker, run f3e080f8")
    assert "1 drain(s) per pool, not the median of 3" in line
    assert "brokerstack bench --setup rabbitmq-confirms" in line
    assert line in published.unpublished
    text = Report(published, tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    speed = text.split("### Throughput against the raw client ceiling", 1)[1].split("\n### ", 1)[0]
    assert f"- {line}" in speed and "| rabbitmq-confirms |" not in speed
    everything = load_sources(tmp_path, min_chaos_tasks=0)
    assert sorted(r.setup for r in everything.bench) == ["rabbitmq-confirms", "redis-everysec"]
    assert not everything.bench_unpublished


def test_a_small_ratio_keeps_two_significant_digits_instead_of_reading_zero():
    from lab.report.render import ratio

    # A worker against the batched ceiling: ~940/s over ~219,000/s.
    assert ratio(940 / 218_843) == "0.0043"
    assert ratio(0.5) == "0.50" and ratio(0.0) == "0.00" and ratio(None) == "—"


def test_the_peers_table_says_whether_its_brokerstack_drains_agree_with_the_throughput_table(tmp_path: Path):
    """The peers table and the throughput table both drain brokerstack on prefork -c 2, in separate
    runs: the report puts the two figures side by side and judges them by their ranges."""
    path = _bench_v2(tmp_path)
    record = json.loads(path.read_text())
    record["parameters"]["concurrency"] = 2
    prefork = {"consume": _rate(600, 580, 620), "defaults": {"consume": _rate(320, 300, 330)}}
    record["end_to_end"]["pools"]["prefork"] = prefork
    path.write_text(json.dumps(record))
    peers = V1_BENCH / "redis-everysec-docker-peers.json"  # defaults 311 (308-326), f&f 506 (480-555)
    (tmp_path / "bench" / peers.name).write_text(peers.read_text())
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    lines = [line for line in text.splitlines() if line.startswith("- ") and "in the throughput table" in line]
    assert len(lines) == 2, lines
    defaults, fire_and_forget = lines
    assert "its defaults" in defaults and "311 (308-326) here (3,000 tasks" in defaults
    assert "320 (300-330) in the throughput table" in defaults and defaults.endswith("no difference.")
    assert "fire-and-forget" in fire_and_forget and "600 (580-620) in the throughput table" in fire_and_forget
    assert fire_and_forget.endswith("the runs differ beyond their ranges (compare within a table).")


def test_the_restart_time_cites_every_run_it_pools_and_is_not_the_recovery_time():
    """The walkthrough table's restart figure pools every broker-kill run of a broker: it cites each
    of them (it once cited the first, whose own recovery column read differently) and says what it
    measures (the broker starting again), with its range."""
    import statistics

    from lab.harness.setups import SETUPS

    sources = load_sources(REPO / "results", min_chaos_tasks=PUBLISHED_MIN_CHAOS_TASKS)
    text = Report(sources, DOC, DOC.parent / "img", draw_charts=False).render()
    row = next(line for line in text.splitlines() if line.startswith("| Setup / operations |"))
    durability = text.split("## Durability", 1)[1].split("\n## ", 1)[0]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in durability.splitlines() if r.startswith("| ")]
    for broker in ("rabbitmq", "redis"):
        part = next(p for p in row.split("; ") if f"{broker} took " in p)
        cited = re.findall(r"\[C\d+\]", part)
        rows = [c[-1] for c in cells if c[0] in SETUPS and c[2] == "broker-kill" and SETUPS[c[0]].broker == broker]
        assert sorted(cited) == sorted(re.findall(r"\[C\d+\]", "".join(rows))) and len(cited) == 3, part
        faults = [
            f["restart_s"]
            for record in sources.chaos
            if record.get("scenario") == "broker-kill" and SETUPS[record["setup"]].broker == broker
            for f in record.get("faults") or []
            if f.get("restart_s") is not None
        ]
        assert f"median of {len(faults)} restarts" in part, part
        assert "to start again after `kill -9`" in part and " back " not in part
        median = statistics.median(faults)
        assert (f"{median:.2f} s" if median < 10 else f"{median:.0f} s") in part


def test_rows_of_different_sittings_are_said_to_be_so_and_the_broker_comparison_carries_it(tmp_path: Path):
    """The machine drifts between sittings (the same configuration measured on two days differed
    beyond its ranges): the report says which rows were measured together and flags a comparison
    across sittings."""

    def write(redis_started_at: str, rabbit_started_at: str) -> str:
        _bench_v2(tmp_path, started_at=redis_started_at)
        record = _current("rabbitmq-confirms-docker-v1.json")
        record.update(started_at=rabbit_started_at, duration_s=600)
        (tmp_path / "bench" / "rabbitmq-confirms-docker.json").write_text(json.dumps(record))
        return Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()

    apart = write("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z")
    assert "measured in 2 sittings" in apart
    bullet = next(line for line in apart.splitlines() if "Redis is fast, RabbitMQ slow" in line)
    assert "different sittings" in bullet
    together = write("2026-02-01T00:00:00Z", "2026-01-31T23:55:00Z")  # RabbitMQ's 10 min overlap Redis' start
    assert "Every row was measured in one sitting" in together
    bullet = next(line for line in together.splitlines() if "Redis is fast, RabbitMQ slow" in line)
    assert "different sittings" not in bullet
