"""Priority on a backlog: 1,000 low-priority tasks, then 50 urgent ones, then a worker. Where the
urgent ones finish (their mean rank among completions) is measured per broker and queue type and
written to the results directory (lab.experiments.priority)."""

from __future__ import annotations

import pytest

from lab.experiments.priority import BACKLOG, URGENT, ideal_mean_rank, measure_priority
from lab.harness.settings import settings_for

pytestmark = pytest.mark.integration


def test_priority_classic_and_redis(broker, settings, tmp_path):
    record = measure_priority(settings, broker, log_dir=tmp_path)
    # Strict priority with prefetch 1: at most the one message the worker took before the urgent
    # ones were visible to it can finish ahead of them.
    assert record["mean_rank_high"] <= ideal_mean_rank() + 1, record["ranks_high"]


@pytest.mark.parametrize("own_broker", ["rabbitmq"], indirect=True)
def test_priority_quorum(own_broker, results_node, tmp_path):
    settings = settings_for(own_broker, results_node, rabbitmq_queue_type="quorum")
    record = measure_priority(settings, own_broker, log_dir=tmp_path)
    major = int(own_broker.version().split()[-1].split(".")[0])
    if major >= 4:
        # Two levels, delivered high:normal 2:1 while both wait: the urgent ones are done within
        # about the first 75 completions, long before their FIFO turn.
        assert record["mean_rank_high"] < 3 * URGENT / 2, record["ranks_high"]
    else:
        # RabbitMQ 3.x quorum queues ignore priority: FIFO. Recorded, not promised.
        assert record["mean_rank_high"] > BACKLOG / 2, record["ranks_high"]
