"""Dead letters on both brokers: the same outcomes, the same record, the same operations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from kombu import Exchange, Queue
from pydantic import SecretStr

from lab.harness.settings import settings_for
from tests.helpers import wait_for
from worker.celery_app import create_celery
from worker.dead_letters import store_for
from worker.outbox import Outbox
from worker.tasks.email import MAIL_SERVER_DOWN

pytestmark = pytest.mark.integration


@pytest.fixture
def app(settings):
    app = create_celery(settings, producer_only=True)
    yield app
    app.close()


@pytest.fixture
def dlq(app):
    store = store_for(app)
    store.ensure_declared()
    return store


def wait_for_letter(dlq, letter_id, timeout=30):
    return wait_for(lambda: dlq.get(letter_id), timeout, f"dead letter {letter_id}", interval=0.2)


def wait_for_state(app, task_id, state, timeout=30):
    wait_for(lambda: app.AsyncResult(task_id).state == state, timeout, f"task {task_id} to reach {state}")


def test_unregistered_task_is_dead_lettered_as_poison_once(app, settings, start_worker, dlq):
    worker = start_worker(settings)
    poison = app.send_task("worker.tasks.does_not_exist", args=[1], queue="default")
    letter = wait_for_letter(dlq, poison.id)
    assert (letter.reason, letter.queue, letter.name) == ("poison", "default", "worker.tasks.does_not_exist")
    # Not a crash loop: the worker goes on with the next task and saw the poison exactly once.
    after = app.tasks["worker.tasks.basic.add"].apply_async((1, 2))
    wait_for_state(app, after.id, "SUCCESS")
    assert worker.is_running()
    assert worker.logs().count(f"[{poison.id}]") <= 1 and worker.logs().count("does_not_exist") >= 1
    assert dlq.get(poison.id).death_count == 1


def test_undecodable_message_is_dead_lettered_not_acked_away(app, settings, start_worker, dlq):
    start_worker(settings)
    task_id = str(uuid.uuid4())
    queue = Queue("default", Exchange("default", type="direct"), routing_key="default")
    with app.producer_or_acquire() as producer:
        producer.publish(
            b"\xff\xfe this is not JSON",
            exchange=queue.exchange,
            routing_key="default",
            content_type="application/json",
            content_encoding="binary",
            headers={"task": "worker.tasks.basic.add", "id": task_id, "lang": "py", "retries": 0},
        )
    letter = wait_for_letter(dlq, task_id)
    assert letter.reason == "poison"
    assert letter.raw is not None and letter.raw.body == b"\xff\xfe this is not JSON"


def test_expired_task_is_dead_lettered(app, settings, start_worker, dlq):
    result = app.tasks["worker.tasks.basic.add"].apply_async((1, 2), expires=1)
    expired_at = time.monotonic() + 1.2
    # Nothing consumes the queue until the task has expired: RabbitMQ dead-letters it on its own
    # (per-message TTL); on Redis the worker finds it expired on receipt.
    wait_for(lambda: time.monotonic() > expired_at, 5, "the expiry time to pass")
    start_worker(settings)
    letter = wait_for_letter(dlq, result.id)
    assert (letter.reason, letter.name, letter.args) == ("expired", "worker.tasks.basic.add", [1, 2])


def test_exhausted_retries_land_with_the_exception_and_replay_after_the_fix(app, settings, start_worker, dlq):
    outbox = Outbox(settings.result_backend)
    email = f"dlq-{uuid.uuid4().hex[:8]}@example.com"
    outbox.set_switch(MAIL_SERVER_DOWN, True)
    try:
        start_worker(settings)
        failed = app.tasks["worker.tasks.email.send_email"].apply_async(("u9", email))
        letter = wait_for_letter(dlq, failed.id, timeout=60)
    finally:
        outbox.set_switch(MAIL_SERVER_DOWN, False)  # the fix
    assert letter.reason == "failed"
    assert letter.exception == "EmailDeliveryError: mail server down"
    assert "EmailDeliveryError" in (letter.traceback or "")
    assert (letter.name, letter.args, letter.queue, letter.retries) == (
        "worker.tasks.email.send_email",
        ["u9", email],
        "high_priority",
        3,
    )
    assert letter.first_death_at <= letter.last_death_at

    [outcome] = dlq.replay([letter.id])
    assert outcome.ok, outcome.error
    assert outcome.task_id != failed.id and outcome.queue == "high_priority"
    wait_for_state(app, outcome.task_id, "SUCCESS")
    assert app.AsyncResult(outcome.task_id).result["attempts"] == 1  # a new attempt counter
    assert dlq.get(letter.id) is None
    assert [e for e in outbox.read("email") if e["to"] == email]


def test_hard_time_limit_is_dead_lettered_too(app, settings, start_worker, dlq):
    # Celery acks a task killed by its hard limit (requeueing would kill the next worker too), so
    # the broker never sees it die: the worker dead-letters it itself, on both brokers.
    start_worker(settings, pool="prefork", concurrency=1)
    # Celery arms the hard limit only once the soft one fired: the task must outlive both.
    killed = app.tasks["worker.tasks.tools.sleep"].apply_async(
        (30,), {"ignore_soft_limit": True}, soft_time_limit=1, time_limit=2
    )
    letter = wait_for_letter(dlq, killed.id)
    assert letter.reason == "failed"
    assert letter.exception.startswith("TimeLimitExceeded")
    assert (letter.name, letter.args, letter.queue) == ("worker.tasks.tools.sleep", [30], "default")


def test_a_replay_that_fails_again_links_to_its_old_record(app, settings, start_worker, dlq):
    start_worker(settings)
    first = app.tasks["worker.tasks.tools.fail"].apply_async(("still broken",))
    letter = wait_for_letter(dlq, first.id)
    [outcome] = dlq.replay([letter.id])
    again = wait_for_letter(dlq, outcome.task_id)
    assert again.replay_of == letter.id and again.replays == 1
    assert again.exception == "InjectedFailure: still broken"


def test_replay_keeps_what_the_broker_did_not_take(app, settings, start_worker, dlq, monkeypatch):
    dlq.purge()
    worker = start_worker(settings)
    failed = [app.tasks["worker.tasks.tools.fail"].apply_async((f"n{i}",)) for i in range(3)]
    for result in failed:
        wait_for_letter(dlq, result.id)
    worker.stop()  # the replayed task would only die again: let it wait in its queue
    publish = type(dlq)._republish
    calls = []

    def broker_drops_on_second(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionResetError("broker went away mid-replay")
        return publish(self, *args)

    monkeypatch.setattr(type(dlq), "_republish", broker_drops_on_second)
    outcomes = dlq.replay()
    assert [o.ok for o in outcomes] == [True, False]
    assert "ConnectionResetError" in outcomes[1].error
    # One replayed (and gone), two still dead-lettered: nothing lost, nothing left half-done.
    remaining = {letter.id for letter in dlq.list_letters()}
    assert len(remaining) == 2 and outcomes[0].id not in remaining


def test_purge(app, settings, start_worker, dlq):
    start_worker(settings)
    result = app.tasks["worker.tasks.tools.fail"].apply_async(("purge me",))
    wait_for_letter(dlq, result.id)
    assert dlq.depth() >= 1
    assert dlq.purge() >= 1
    assert dlq.depth() == 0 and dlq.list_letters() == []


@pytest.mark.parametrize("own_broker", ["rabbitmq"], indirect=True)
def test_quorum_delivery_limit_dead_letters_a_task_that_kills_its_worker(own_broker, results_node, start_worker):
    settings = settings_for(own_broker, results_node, rabbitmq_queue_type="quorum", rabbitmq_delivery_limit=2)
    app = create_celery(settings, producer_only=True)
    dlq = store_for(app)
    dlq.ensure_declared()
    worker = start_worker(settings, pool="prefork", concurrency=1)
    crash = app.tasks["worker.tasks.tools.crash"].apply_async()
    letter = wait_for_letter(dlq, crash.id, timeout=90)
    assert letter.reason == "delivery-limit"
    assert letter.death_count == 1 and letter.queue == "default"
    assert worker.is_running()  # prefork replaced its dead child each time
    app.close()


OPERATOR = {"X-API-Key": "operator-key"}


def test_dead_letters_through_the_api_cli_and_metrics(settings, make_api, start_worker):
    settings = settings.model_copy(update={"api_key": SecretStr("operator-key")})
    api = make_api(settings)
    start_worker(settings)
    task_id = api.post("/tasks/fail", json={"args": ["via the api"]}, headers=OPERATOR).json()["task_id"]
    [listed] = wait_for(
        lambda: [r for r in api.get("/dlq", headers=OPERATOR).json() if r["task_id"] == task_id],
        30,
        "the API to list it",
        interval=0.2,
    )
    assert (listed["name"], listed["queue"], listed["reason"]) == ("worker.tasks.tools.fail", "default", "failed")
    assert listed["exception"] == "InjectedFailure: via the api"
    assert "InjectedFailure" in api.get(f"/dlq/{task_id}", headers=OPERATOR).json()["traceback"]
    assert api.get("/dlq/no-such-letter", headers=OPERATOR).status_code == 404
    # Dead letters carry other people's arguments and tracebacks: not without the key.
    assert api.get("/dlq").status_code == 401
    assert api.get(f"/dlq/{task_id}").status_code == 401
    metrics = api.get("/metrics").text
    assert f'brokerstack_dead_letters{{profile="{settings.broker_profile}"}}' in metrics
    assert f'brokerstack_queue_depth{{profile="{settings.broker_profile}",queue="default"}} 0' in metrics

    # The command line sees the same record.
    cli = subprocess.run(
        [sys.executable, "-m", "services.cli", "dlq", "list", "--json"],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert task_id in {r["task_id"] for r in json.loads(cli.stdout)}

    # Replay and purge are the operator's: the key is required.
    assert api.post("/dlq/replay", json={"ids": [task_id]}).status_code == 401
    assert api.delete("/dlq").status_code == 401
    # An id the store does not hold is said so, by both stores, and nothing is replayed.
    unknown = api.post("/dlq/replay", json={"ids": ["no-such-letter"]}, headers=OPERATOR)
    assert unknown.status_code == 404, unknown.text
    replayed = api.post("/dlq/replay", json={"ids": [task_id]}, headers=OPERATOR)
    assert replayed.status_code == 200, replayed.text
    replayed_body = replayed.json()
    assert replayed_body["replayed"] == 1 and replayed_body["outcomes"][0]["id"] == task_id
    # The replayed task is the API's own now: it polls (and finishes) like any other.
    new_id = replayed_body["outcomes"][0]["task_id"]
    final = wait_for(
        lambda: (
            (r := api.get(f"/tasks/{new_id}", headers=OPERATOR).json()).get("state") in ("SUCCESS", "FAILURE") and r
        ),
        30,
        "the replayed task to finish",
        interval=0.2,
    )
    assert final["state"] == "FAILURE"  # it fails again (the fault is not fixed): the point is it ran
    assert api.post("/dlq/replay", json={"ids": [task_id], "all": True}, headers=OPERATOR).status_code == 422
    assert api.delete("/dlq", headers=OPERATOR).status_code == 200
