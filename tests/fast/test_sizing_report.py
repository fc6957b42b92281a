"""docs/sizing.md from sizing records: the slopes, their labels and the worked example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.experiments.sizing import SCHEMA, Sample, SizingRecord, figures_from, fit_line, verdict
from lab.report.sizing import maxmemory_bytes, render_sizing, write_sizing

REPO = Path(__file__).resolve().parents[2]


def _samples(item: str, metric: str, per_item: list[float], fixed: float = 5000.0) -> list[Sample]:
    """Growth exactly ``fixed + per_item[rep] x items`` at three sizes, one slope per repetition."""
    return [
        Sample(item, rep, items, {metric: fixed + slope * items, "settled": 1.0})
        for rep, slope in enumerate(per_item)
        for items in (500, 1000, 2000)
    ]


def _record(broker: str, queued: list[float], result: list[float], letter: list[float]) -> SizingRecord:
    metric = "used_memory" if broker == "redis" else "queue_memory"
    samples = [
        *_samples("queued_task", metric, queued),
        *_samples("result", "used_memory", result),
        *_samples("dead_letter", metric, letter),
        *_samples("failed_task_in_redis", "used_memory", [1500.0, 1500.0, 1500.0]),
    ]
    return SizingRecord(
        schema=SCHEMA,
        broker=broker,
        broker_version="8.0.0",
        driver="docker",
        queue="default",
        queue_type=None if broker == "redis" else "classic",
        task_sizes=[500, 1000, 2000],
        dead_letter_sizes=[100, 200, 400],
        repetitions=3,
        result_expires_s=86400,
        message_bytes=941,
        figures=figures_from(samples),
        samples=samples,
    )


def _write(root: Path, record: SizingRecord) -> None:
    path = root / "sizing" / f"{record.broker}-docker.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.as_dict()))


def test_the_slope_is_the_bytes_per_item_and_the_fixed_cost_is_left_out() -> None:
    fit = fit_line([(500, 5000 + 300 * 500), (1000, 5000 + 300 * 1000), (2000, 5000 + 300 * 2000)])
    assert fit.slope == pytest.approx(300)
    assert fit.intercept == pytest.approx(5000)
    assert fit.r2 == pytest.approx(1.0)


def test_negative_and_scattered_slopes_are_labelled_not_clipped() -> None:
    assert verdict([300, 310, 305], [0.99, 0.99, 0.99]) == "ok"
    assert verdict([-50, -40, -60], [0.9, 0.9, 0.9]) == "negative"
    assert verdict([300, -10, 310], [0.99, 0.99, 0.99]) == "noisy"
    assert verdict([100, 300, 200], [0.99, 0.99, 0.99]) == "noisy"
    assert verdict([300, 300, 300], [0.5, 0.99, 0.99]) == "noisy"
    assert verdict([300, 300, 300], [0.99, 0.99, 0.99], settled=False) == "unsettled"
    figures = figures_from(_samples("queued_task", "used_memory", [-20.0, -10.0, -30.0]))
    assert [(f.median, f.min, f.max, f.verdict) for f in figures] == [(-20.0, -30.0, -10.0, "negative")]


def test_a_record_survives_the_round_trip_through_json() -> None:
    record = _record("redis", [1000, 1100, 1050], [300, 310, 305], [1200, 1180, 1190])
    again = SizingRecord.from_dict(json.loads(json.dumps(record.as_dict())))
    assert again == record
    figure = again.figure("result", "used_memory")
    assert figure is not None and (figure.median, figure.min, figure.max) == (305.0, 300.0, 310.0)


def test_the_doc_shows_medians_ranges_and_the_worked_example(tmp_path: Path) -> None:
    _write(tmp_path, _record("redis", [1000, 1100, 1050], [300, 310, 305], [1200, 1180, 1190]))
    _write(tmp_path, _record("rabbitmq", [400, 420, 410], [296, 296, 296], [2000, 2100, 2050]))
    out = write_sizing(tmp_path, tmp_path / "sizing.md", conf=REPO / "deploy/redis/redis.conf")
    assert out is not None
    doc = out.read_text()
    assert "1,050 B (1,000-1,100)" in doc  # Redis queued task: median and range of the slopes
    assert "305 B (300-310)" in doc
    assert "410 B (400-420)" in doc  # RabbitMQ's queue memory per queued task
    # 40/s for a day at 305 B per result, against the shipped 1 GiB.
    assert f"40 /s x 86,400 s x 305 B = {40 * 86400 * 305 / 1024**2:,.2f} MiB" in doc
    room = 1024**3 - 100_000 * 1050 - 10_000 * 1190
    assert f"**{room / (86400 * 305):,.0f} tasks/s**" in doc
    assert doc.index("redis") < doc.index("rabbitmq")


def test_a_negative_figure_gets_no_worked_example(tmp_path: Path) -> None:
    record = _record("redis", [1000, 1100, 1050], [-30, -20, -10], [1200, 1180, 1190])
    doc = render_sizing([{**record.as_dict(), "source": "results/sizing/redis-docker.json"}], 1024**3)
    assert "**negative**" in doc
    assert "tasks/s**" not in doc


def test_no_records_write_nothing(tmp_path: Path) -> None:
    assert write_sizing(tmp_path, tmp_path / "sizing.md") is None
    assert not (tmp_path / "sizing.md").exists()


def test_maxmemory_is_read_from_the_shipped_redis_conf(tmp_path: Path) -> None:
    assert maxmemory_bytes(REPO / "deploy/redis/redis.conf") == 1024**3
    conf = tmp_path / "redis.conf"
    conf.write_text("# maxmemory 2gb\nmaxmemory 512mb\n")
    assert maxmemory_bytes(conf) == 512 * 1024**2


def test_rabbitmq_queue_memory_that_does_not_grow_is_said_so_with_the_bytes_it_keeps(tmp_path: Path) -> None:
    redis = _record("redis", [1000, 1100, 1050], [300, 310, 305], [1200, 1180, 1190])
    rabbit = _record("rabbitmq", [-214, 75, -39], [296, 296, 296], [2000, 2100, 2050])
    for sample in rabbit.samples:  # the queue's body bytes, read beside its memory
        body = {"queued_task": 77.0, "dead_letter": 104.0}.get(sample.item)
        if body is not None:
            sample.bytes["message_bytes"] = body * sample.items
    rabbit.figures = figures_from(rabbit.samples)
    for record in (redis, rabbit):
        _write(tmp_path, record)
    out = write_sizing(tmp_path, tmp_path / "sizing.md", conf=REPO / "deploy/redis/redis.conf")
    assert out is not None
    doc = out.read_text()
    assert "did not grow measurably" in doc and "not measurable (slopes -214 to 75 B)" in doc
    assert "77 B per queued task and 104 B per dead letter" in doc
    assert "of queue memory" not in doc


def test_the_committed_sizing_doc_is_what_the_committed_records_render(monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.report.sizing import load_sizing

    monkeypatch.chdir(REPO)  # the doc names the records and the conf by their repository paths
    records = load_sizing(Path("results"))
    if not records:
        pytest.skip("no sizing records committed yet")
    rendered = render_sizing(records, maxmemory_bytes())
    assert (REPO / "docs" / "sizing.md").read_text() == rendered, "docs/sizing.md is stale: run `brokerstack report`"
