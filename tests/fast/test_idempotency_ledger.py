"""The chaos ledger counts duplicated executions and duplicated effects apart (issue 15): a task
with the guarantee (IdempotentTask) that ran twice committed its effect once; one without it
(noop) had its effect every time it ran."""

from __future__ import annotations

import json

from lab.experiments.chaos.ledger import Attempt, Execution, account, load_history, save_history

GUARDED = "worker.tasks.email.send_email"
PLAIN = "worker.tasks.tools.noop"


def acked(task_id: str, index: int = 0) -> Attempt:
    return Attempt(index=index, task_id=task_id, invoked_at=0.0, outcome="ok")


def run(task_id: str, name: str, *, effect: bool) -> list[Execution]:
    events = [Execution("start", task_id, name=name), Execution("finish", task_id, name=name, state="SUCCESS")]
    if effect:
        events.insert(1, Execution("effect", task_id, name=name))
    return events


def test_a_guarded_task_run_twice_is_a_duplicated_execution_not_a_duplicated_effect() -> None:
    history = run("g", GUARDED, effect=True) + run("g", GUARDED, effect=False)  # the second found it done
    counts = account([acked("g")], history)
    assert (counts.duplicated, counts.duplicated_effects, counts.effects) == (1, 0, 1)
    assert counts.executed == 1 and counts.lost == 0


def test_a_plain_task_run_twice_is_both() -> None:
    counts = account([acked("p")], run("p", PLAIN, effect=False) * 2)
    assert (counts.duplicated, counts.duplicated_effects, counts.effects) == (1, 1, 0)


def test_a_guarded_effect_committed_twice_is_counted() -> None:
    """What the guarantee must prevent, so the count can show it if it ever happens."""
    counts = account([acked("g")], run("g", GUARDED, effect=True) * 2)
    assert counts.duplicated_effects == 1


def test_a_guarded_run_that_found_its_id_done_is_known_by_name() -> None:
    """An id whose only run skipped its body (done by an earlier run the ledger missed) has no effect
    event; it is still a guarded task: its runs are not effects."""
    history = run("g1", GUARDED, effect=True) + run("g2", GUARDED, effect=False) * 2
    counts = account([acked("g1", 0), acked("g2", 1)], history)
    assert (counts.duplicated, counts.duplicated_effects) == (1, 0)


def test_both_kinds_in_one_run() -> None:
    history = run("g", GUARDED, effect=True) + run("g", GUARDED, effect=False) + run("p", PLAIN, effect=False) * 2
    counts = account([acked("g", 0), acked("p", 1)], history)
    assert (counts.duplicated, counts.duplicated_effects) == (2, 1)


def test_effect_events_survive_the_saved_history(tmp_path) -> None:
    history = run("g", GUARDED, effect=True) + run("g", GUARDED, effect=False)
    path = save_history(tmp_path / "h.sqlite", [acked("g")], history)
    loaded = load_history(path)
    assert account(loaded.attempts, loaded.executions) == account([acked("g")], history)


def test_the_worker_entry_of_an_effect_parses() -> None:
    raw = json.dumps({"event": "effect", "task_id": "g", "name": GUARDED, "effects": 1, "t": 1.0})
    assert Execution.from_json(raw).event == "effect"


def test_an_effect_committed_without_its_ledger_entry_counts_from_the_outbox() -> None:
    """A worker killed between the effect's commit and its ledger entry: the ledger alone says
    "effect pending"; the outbox, where the effect is, says it happened once."""
    history = run("g", GUARDED, effect=False) + run("h", GUARDED, effect=True)
    attempts = [acked("g", 0), acked("h", 1)]
    assert account(attempts, history).guarded_without_effect == 1  # the ledger's word alone
    counts = account(attempts, history, outbox={"g": 1, "h": 1})
    assert (counts.guarded, counts.guarded_without_effect, counts.guarded_effects_unlogged) == (2, 0, 1)
    assert (counts.effects, counts.duplicated_effects, counts.guarded_duplicated_effects) == (2, 0, 0)


def test_the_outbox_is_the_effect_count_when_given() -> None:
    """Two entries in the outbox for one id is a duplicated effect, whatever the ledger says; an
    id with none is pending, even if the ledger logged one."""
    history = run("g", GUARDED, effect=True) + run("g", GUARDED, effect=False) + run("h", GUARDED, effect=True)
    counts = account([acked("g", 0), acked("h", 1)], history, outbox={"g": 2})
    assert (counts.guarded_duplicated, counts.guarded_duplicated_effects, counts.duplicated_effects) == (1, 1, 1)
    assert counts.guarded_without_effect == 1


def test_a_guarded_attempt_without_any_effect_is_not_a_duplicated_effect_when_run_twice() -> None:
    """The guarded part is known from the attempt's kind: its runs are not its effects."""
    attempt = Attempt(index=0, task_id="g", invoked_at=0.0, outcome="ok", kind="guarded")
    counts = account([attempt], run("g", GUARDED, effect=False) * 2, outbox={})
    assert (counts.guarded_duplicated, counts.duplicated_effects, counts.guarded_without_effect) == (1, 0, 1)
