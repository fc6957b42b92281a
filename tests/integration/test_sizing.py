"""``brokerstack sizing`` on a real broker: queued tasks, results and dead letters take memory that
grows with their number, and the record it writes reads back as it was measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.experiments.sizing import NODE_OPTIONS, SizingRecord, measure_sizing
from lab.harness.nodes import BrokerKind, DriverName, make_node
from lab.harness.settings import settings_for
from lab.report.sizing import HEADLINE, load_sizing
from tests.conftest import BROKER_KINDS

pytestmark = pytest.mark.integration

#: A node that needs options to be measured (RabbitMQ: the management plugin, whose statistics are
#: read until they settle) takes over a minute here: slow, measured by `make measure` as well.
KINDS = [pytest.param(kind, marks=pytest.mark.slow) if NODE_OPTIONS[kind] else kind for kind in BROKER_KINDS]


@pytest.mark.parametrize("kind", KINDS)
def test_sizing_measures_positive_bytes_per_item_and_writes_its_record(
    kind: BrokerKind, driver: DriverName, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKERSTACK_RESULTS_DIR", str(tmp_path))
    with (
        make_node("redis", driver) as results,
        make_node(kind, driver, **NODE_OPTIONS[kind]) as broker,
    ):
        record = measure_sizing(
            settings_for(broker, results),
            broker,
            task_sizes=(40, 80),
            dead_letter_sizes=(10, 20),
            repetitions=1,
            warm_up=False,
        )
    exact = "keys_memory" if kind == "redis" else "message_bytes"  # counted, not sampled from an allocator
    queued = record.figure("queued_task", exact)
    assert queued is not None
    # Every queued task is stored whole: at least its body's bytes each.
    assert queued.median >= record.message_bytes > 0
    for item in ("result", "failed_task_in_redis"):
        figure = record.figure(item, "keys_memory")
        assert figure is not None and figure.median > 0, item
    letters = record.figure("dead_letter", exact)
    assert letters is not None and letters.median > 0
    # The figure sizing is done with is there, measured (whatever its verdict: RabbitMQ's queue
    # memory need not grow per message).
    assert record.figure("queued_task", HEADLINE[kind]) is not None

    [loaded] = load_sizing(tmp_path)
    assert loaded["source"].endswith(f"sizing/{kind}-{driver}.json")
    assert SizingRecord.from_dict(json.loads(json.dumps(loaded))) == record
