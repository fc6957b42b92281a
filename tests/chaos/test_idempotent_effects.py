"""The chaos load's guarded tasks (issue 15), on real brokers: every task of the default stream
delivered twice (the producer that retries every publish), and the ledger counts the guarded part's
duplicated executions while its duplicated effects stay at 0, checked against the outbox itself."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest

from lab.experiments.chaos.ledger import ExecutionLog, ProducerLedger, account, committed_effects
from lab.experiments.chaos.load import CeleryLoad, is_guarded
from tests.helpers import wait_for
from worker.outbox import Outbox
from worker.tasks.tools import GUARDED_NOOP_OUTBOX

pytestmark = pytest.mark.chaos

#: Tasks in the stream; each is published twice.
TASKS = 120


def test_guarded_tasks_delivered_twice_run_twice_and_have_their_effect_once(settings, results_node, start_worker):
    run = f"idem-{uuid.uuid4().hex[:12]}"
    settings = settings.model_copy(update={"ledger_url": results_node.url, "ledger_run": run})
    ledger = ProducerLedger()
    # Two loads with one id prefix: every task id is published twice, as by a producer that retried
    # each publish after a lost confirm.
    for _ in range(2):
        load = CeleryLoad(settings, ledger, total=TASKS, rate=0, id_prefix=run)
        load.start()
        load.join(60)
        assert not load.is_alive() and load.error is None, load.error
    assert ledger.acknowledged == 2 * TASKS
    start_worker(settings, pool="prefork", concurrency=2)
    log = ExecutionLog(results_node.url, run)
    try:

        def both_deliveries_succeeded() -> bool:
            log.poll()
            ok = Counter(e.task_id for e in log.entries if e.event == "finish" and e.state == "SUCCESS")
            return len(ok) == TASKS and min(ok.values()) >= 2

        wait_for(both_deliveries_succeeded, 90, "both deliveries of every task to succeed", interval=0.2)
        log.poll_all()
    finally:
        log.close()
    counts = account(ledger.attempts(), log.entries)

    guarded = sum(is_guarded(i) for i in range(TASKS))
    assert 0 < guarded < TASKS
    assert counts.guarded == guarded
    # Executions are still counted: every guarded id ran twice...
    assert counts.guarded_duplicated == guarded
    # ...and its effect happened once.
    assert counts.guarded_duplicated_effects == 0
    assert counts.effects == guarded and counts.guarded_without_effect == 0
    # The plain no-ops had their effect on every run: the counter does count duplicated effects.
    assert counts.duplicated == TASKS
    assert counts.duplicated_effects == TASKS - guarded
    assert counts.lost == 0
    # The effect itself, not the ledger's word for it: one outbox entry per guarded task id.
    entries = Outbox(settings.result_backend).read(GUARDED_NOOP_OUTBOX)
    per_id = Counter(e["task_id"] for e in entries if str(e.get("task_id", "")).startswith(f"{run}-"))
    assert per_id == Counter({f"{run}-{i:07d}": 1 for i in range(TASKS) if is_guarded(i)}), json.dumps(per_id)
    # Counted from the outbox, as the chaos runs do: the same, and no effect without its ledger entry.
    from_outbox = account(ledger.attempts(), log.entries, outbox=committed_effects(settings))
    assert from_outbox.effects == guarded and from_outbox.guarded_duplicated_effects == 0
    assert (from_outbox.guarded_without_effect, from_outbox.guarded_effects_unlogged) == (0, 0)
