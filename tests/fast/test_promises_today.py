"""A table judges every run by the promises the setups make today: a promise withdrawn after runs
showed a setup cannot keep it is not reported as held (or broken) by the runs made before."""

from __future__ import annotations

from lab.experiments.chaos.record import summary_row
from lab.harness.setups import SETUPS


def _record(setup: str, scenario: str, *, held: bool) -> dict[str, object]:
    return {
        "setup": setup,
        "scenario": scenario,
        "counts": {"lost": 0 if held else 23},
        "faults": [{}, {}, {}],
        "guarantee": "lost == 0",
        "guarantee_held": held,
    }


def test_rabbitmq_confirms_no_longer_promises_anything_against_a_power_cut():
    setup = SETUPS["rabbitmq-confirms"]
    assert not setup.promises("power-loss")
    assert setup.promises("broker-kill")  # a broker crash alone keeps what was confirmed


def test_rabbitmq_confirms_no_longer_promises_to_keep_delayed_tasks_but_quorum_queues_do():
    # Classic queues dead-letter at-most-once, and the delayed tasks hop through a ladder of them.
    assert not SETUPS["rabbitmq-confirms"].promises("delayed")
    assert "at-most-once" in SETUPS["rabbitmq-confirms"].guarantee
    assert SETUPS["rabbitmq-quorum"].promises("delayed")


def test_the_published_delayed_run_that_broke_the_withdrawn_promise_is_no_longer_reported_broken():
    row = summary_row(_record("rabbitmq-confirms", "delayed", held=False))
    assert row["guarantee"] is None and row["held"] is None
    assert row["lost"] == 23
    assert summary_row(_record("rabbitmq-quorum", "delayed", held=False))["held"] is False


def test_a_run_made_under_a_withdrawn_promise_is_judged_by_todays():
    row = summary_row(_record("rabbitmq-confirms", "power-loss", held=False))
    assert row["guarantee"] is None and row["held"] is None
    assert row["lost"] == 23  # the count itself is still reported


def test_a_promise_still_made_keeps_the_runs_verdict():
    assert summary_row(_record("rabbitmq-confirms", "broker-kill", held=False))["held"] is False
    assert summary_row(_record("redis-always", "power-loss", held=True))["held"] is True
