"""The chaos load's default stream mixes tasks with the exactly-once guarantee into the plain ones
(issue 15), and the ledger counts the guarded part apart."""

from __future__ import annotations

import inspect

from lab.experiments.chaos.ledger import Attempt, Execution, account
from lab.experiments.chaos.load import (
    GUARDED_SHARE,
    GUARDED_TASK,
    PLAIN_TASK,
    api_plan,
    is_guarded,
    mixed_plan,
    noop_plan,
)
from worker.idempotent import IdempotentTask
from worker.tasks.tools import GUARDED_NOOP_LEASE, guarded_noop


def test_the_default_stream_is_the_seeded_mix() -> None:
    plans = [mixed_plan(i) for i in range(4000)]
    share = sum(kind == "guarded" for _, _, kind in plans) / len(plans)
    assert abs(share - GUARDED_SHARE) < 0.03
    assert {name for name, _, _ in plans} == {GUARDED_TASK, PLAIN_TASK}
    # Fixed: the same indices are guarded in every run (and every scenario falls back to it).
    assert [noop_plan(i) for i in range(200)] == plans[:200]
    # The API load guards the same indices, through the product's guarded task.
    for i in range(200):
        path, _, kind = api_plan(i)
        assert (kind == "api-guarded") == is_guarded(i) == path.endswith("/send_email")


def test_the_guarded_task_has_the_guarantee_with_a_short_lease() -> None:
    assert isinstance(guarded_noop, IdempotentTask)
    assert guarded_noop.name == GUARDED_TASK
    assert guarded_noop.lease_seconds() == GUARDED_NOOP_LEASE


def test_api_plan_bodies_match_the_tasks_signatures() -> None:
    from worker.tasks.email import send_email

    parameters = list(inspect.signature(send_email.run).parameters)
    for i in range(50):
        _, body, kind = api_plan(i)
        if kind == "api-guarded":
            assert len(body["args"]) == 2 and parameters[:2] == ["user_id", "email"]
        else:
            assert body == {}


def acked(task_id: str, kind: str, index: int = 0) -> Attempt:
    return Attempt(index=index, task_id=task_id, invoked_at=0.0, outcome="ok", kind=kind)


def finish(task_id: str, name: str, state: str = "SUCCESS") -> list[Execution]:
    return [Execution("start", task_id, name=name), Execution("finish", task_id, name=name, state=state)]


def effect(task_id: str) -> Execution:
    return Execution("effect", task_id, name=GUARDED_TASK)


def test_the_guarded_part_is_counted_apart() -> None:
    attempts = [acked("g1", "guarded", 0), acked("g2", "guarded", 1), acked("p", "noop", 2)]
    history = [
        *finish("g1", GUARDED_TASK),
        effect("g1"),
        *finish("g1", GUARDED_TASK),  # redelivered: found done, no second effect
        *finish("p", PLAIN_TASK),
        *finish("p", PLAIN_TASK),
        *finish("g2", GUARDED_TASK, "RETRY"),  # found a dead run's claim: its effect is still to come
    ]
    counts = account(attempts, history)
    assert (counts.guarded, counts.guarded_duplicated, counts.guarded_duplicated_effects) == (2, 1, 0)
    assert counts.guarded_without_effect == 1
    assert (counts.duplicated, counts.duplicated_effects) == (2, 1)


def test_a_guarded_effect_committed_twice_shows_in_the_guarded_part() -> None:
    history = [*finish("g", GUARDED_TASK), effect("g"), *finish("g", GUARDED_TASK), effect("g")]
    counts = account([acked("g", "guarded")], history)
    assert (counts.guarded_duplicated, counts.guarded_duplicated_effects) == (1, 1)


def test_a_guarded_api_task_is_known_by_its_effect() -> None:
    """The API picks the id: the attempt knows it only from the 202; the effect names the task."""
    attempts = [acked("a", "api-guarded")]
    history = [
        *finish("a", "worker.tasks.email.send_email"),
        Execution("effect", "a", name="worker.tasks.email.send_email"),
    ]
    assert account(attempts, history).guarded == 1
