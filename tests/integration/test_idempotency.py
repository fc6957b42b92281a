"""Exactly-once effects, end to end on real brokers (both profiles): an Idempotency-Key retried
across a broker outage and an API restart is one task and one e-mail; a task id delivered twice is
one e-mail; a worker killed between its claim and its completion leaves the e-mail to the
redelivered run, once; waiting on another run's claim leaves the task's retry budget alone and is
bounded on its own."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from lab.harness.processes import ApiServer
from lab.harness.settings import settings_for
from services.api.idempotency import HEADER, RedisIdempotencyStore
from tests.helpers import wait_for
from worker.backends import redis_client
from worker.celery_app import create_celery
from worker.idempotent import CLAIM_PREFIX, LEASE_MARGIN_SECONDS, WAIT_HEADER
from worker.ledger import events_key
from worker.outbox import Outbox
from worker.tasks.email import EMAIL_MAX_RETRIES, MAIL_SERVER_DOWN, MAIL_SERVER_SLOW
from worker.tasks.tools import GUARDED_NOOP_LEASE

pytestmark = pytest.mark.integration

SEND_EMAIL = "worker.tasks.email.send_email"
GUARDED_NOOP = "worker.tasks.tools.guarded_noop"
#: A claim another run holds, as that run's SET NX wrote it.
OTHER_RUNS_CLAIM = json.dumps({"state": "claimed", "token": "another-run"})


def emails_to(outbox: Outbox, address: str) -> list[dict]:
    return [entry for entry in outbox.read("email") if entry.get("to") == address]


def fresh_address() -> str:
    return f"once-{uuid.uuid4().hex[:8]}@example.com"


def test_one_key_across_a_broker_outage_and_an_api_restart_is_one_task_one_email(
    own_broker, own_settings, make_api, start_worker, tmp_path
):
    outbox = Outbox(own_settings.result_backend)
    address = fresh_address()
    body = {"args": ["u1", address]}
    headers = {HEADER: f"signup-mail-{uuid.uuid4()}"}
    start_worker(own_settings)
    api = make_api(own_settings)
    own_broker.stop()
    down = api.post("/tasks/send_email", json=body, headers=headers)
    assert down.status_code == 503, down.text
    own_broker.start()
    own_broker.wait_ready()
    # The careful client: the same key, until the API takes it.
    first = wait_for(
        lambda: (r := api.post("/tasks/send_email", json=body, headers=headers)).status_code == 202 and r,
        60,
        "the API to accept the retried request",
        interval=0.5,
    )
    task_id = first.json()["task_id"]
    api.__exit__(None, None, None)
    # Restarted: another process, nothing of the first one's memory.
    server = ApiServer(own_settings.to_env(), log_dir=tmp_path)
    server.start()
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=15) as client:
            again = client.post("/tasks/send_email", json=body, headers=headers)
            assert again.status_code == 202, again.text
            assert again.json() == first.json()
            wait_for(
                lambda: client.get(f"/tasks/{task_id}").json().get("state") == "SUCCESS",
                60,
                "the e-mail task to succeed",
                interval=0.2,
            )
    finally:
        server.stop(timeout=15)
    [sent] = emails_to(outbox, address)
    assert sent["task_id"] == task_id
    # The answer is kept in the result backend's Redis for IDEMPOTENCY_TTL, then forgotten.
    store = RedisIdempotencyStore(own_settings)
    assert 0 < store.client.ttl(store._key(headers[HEADER])) <= own_settings.idempotency_ttl


def test_a_task_id_delivered_twice_sends_one_email(settings, start_worker):
    """What a publish retried after a lost answer does: two messages, one task id."""
    run = uuid.uuid4().hex
    settings = settings.model_copy(update={"ledger_url": settings.result_backend, "ledger_run": run})
    outbox = Outbox(settings.result_backend)
    address = fresh_address()
    app = create_celery(settings)
    try:
        task_id = str(uuid.uuid4())
        for _ in range(2):
            app.send_task(SEND_EMAIL, args=["u1", address], task_id=task_id)
        start_worker(settings)
        ledger = redis_client(settings.result_backend, settings)
        # The second delivery runs too (a duplicated execution), and answers the first's result.
        wait_for(lambda: _finishes(ledger, run, task_id, "SUCCESS") >= 2, 60, "both deliveries to succeed")
    finally:
        app.close()
    assert len(emails_to(outbox, address)) == 1
    assert _events(ledger, run, task_id, "effect") == 1  # the ledger's duplicated_effects stays 0


def test_a_worker_killed_between_claim_and_completion_sends_once_after_the_lease(
    own_broker, results_node, start_worker
):
    """The guarantee chosen: the claim is a lease (the task's hard time limit + a margin); the
    effect is written in the transaction that completes the claim. A worker killed in between wrote
    nothing; the redelivered run waits out the lease, then sends: exactly one e-mail."""
    run = uuid.uuid4().hex
    settings = settings_for(
        own_broker,
        results_node,
        task_time_limit=6,
        task_soft_time_limit=5,
        # Redis hands an unacknowledged message back after its visibility timeout.
        redis_visibility_timeout=3,
        redis_unacked_restore_interval=0.5,
        redis_unacked_restore_throttle=1,
        ledger_url=results_node.url,
        ledger_run=run,
    )
    outbox = Outbox(settings.result_backend)
    claims = redis_client(settings.result_backend, settings)
    address = fresh_address()
    app = create_celery(settings)
    outbox.set_switch(MAIL_SERVER_SLOW, True)
    try:
        worker = start_worker(settings)
        task_id = str(uuid.uuid4())
        app.send_task(SEND_EMAIL, args=["u1", address], task_id=task_id)
        wait_for(lambda: _claim(claims, task_id).get("state") == "claimed", 30, "the first run to claim")
        claim_seen_at = time.time()
        worker.kill()
        outbox.set_switch(MAIL_SERVER_SLOW, False)
        assert _claim(claims, task_id).get("state") == "claimed"  # left behind, with its lease
        assert emails_to(outbox, address) == []
        start_worker(settings)
        wait_for(lambda: app.AsyncResult(task_id).state == "SUCCESS", 90, "the redelivered run to send")
    finally:
        outbox.set_switch(MAIL_SERVER_SLOW, False)
        app.close()
    [sent] = emails_to(outbox, address)
    assert _claim(claims, task_id)["state"] == "done"
    assert _events(claims, run, task_id, "start") >= 2  # it did run again...
    assert _events(claims, run, task_id, "effect") == 1  # ...and its effect happened once
    # Not before the dead run's lease lapsed (the claim was seen a poll interval after it was taken).
    lease = settings.task_time_limit + LEASE_MARGIN_SECONDS
    assert sent["at"] >= claim_seen_at + lease - 1, (sent["at"] - claim_seen_at, lease)


def test_waiting_on_another_runs_claim_leaves_the_retry_budget_to_the_task(settings, start_worker):
    """A delivery that finds its id claimed by another run waits for it, more often than the task
    may retry; once the claim is released (the other run's body failed), the body still gets its
    own max_retries: it runs 1 + EMAIL_MAX_RETRIES times against a mail server that is down."""
    run = uuid.uuid4().hex
    settings = settings.model_copy(update={"ledger_url": settings.result_backend, "ledger_run": run})
    outbox = Outbox(settings.result_backend)
    client = redis_client(settings.result_backend, settings)
    task_id = str(uuid.uuid4())
    key = CLAIM_PREFIX + task_id
    # Held for as long as the test says (no lease: the other run is alive until the test lets go),
    # so the delivery looks again every MIN_WAIT_SECONDS, and no lapse can come early on a busy machine.
    client.set(key, OTHER_RUNS_CLAIM)
    outbox.set_switch(MAIL_SERVER_DOWN, True)
    app = create_celery(settings)
    try:
        start_worker(settings)
        app.send_task(SEND_EMAIL, args=["u1", fresh_address()], task_id=task_id)

        def waited_past_the_budget() -> bool:
            return _finishes(client, run, task_id, "RETRY") > EMAIL_MAX_RETRIES

        wait_for(waited_past_the_budget, 60, "the delivery to wait on the claim more often than it may retry")
        client.delete(key)  # the other run's body raised: its claim is released
        wait_for(lambda: app.AsyncResult(task_id).state == "FAILURE", 60, "the task to fail for good")
        # The ledger's finish event is written after the state is stored: on a busy machine, later.
        wait_for(lambda: _finishes(client, run, task_id, "FAILURE"), 30, "the ledger to record the failure")
    finally:
        outbox.set_switch(MAIL_SERVER_DOWN, False)
        app.close()
    entries = [json.loads(raw) for raw in client.lrange(events_key(run), 0, -1)]
    mine = [e for e in entries if e["task_id"] == task_id and e["event"] == "finish"]
    # Every wait kept the task's retry count at 0; the body then used its whole budget, no more.
    assert sum(1 for e in mine if e["state"] == "RETRY" and e["attempt"] == 0) > EMAIL_MAX_RETRIES, mine
    [failed] = [e for e in mine if e["state"] == "FAILURE"]
    assert failed["attempt"] == EMAIL_MAX_RETRIES, mine
    assert "EmailDeliveryError" in repr(app.AsyncResult(task_id).result)


def test_a_claim_held_past_its_wait_limit_fails_the_task_clearly(settings, start_worker):
    """The wait on another run's claim is bounded in time (CLAIM_WAIT_LEASES leases), counted from
    the first time the id was found claimed and carried by every message it republishes: past it,
    the task fails with ClaimWaitExceeded and the body never ran."""
    outbox = Outbox(settings.result_backend)
    client = redis_client(settings.result_backend, settings)
    task_id = str(uuid.uuid4())
    key = CLAIM_PREFIX + task_id
    limit = 2 * GUARDED_NOOP_LEASE  # CLAIM_WAIT_LEASES leases of guarded_noop
    client.set(key, OTHER_RUNS_CLAIM)  # held until the test lets go
    app = create_celery(settings)
    try:
        start_worker(settings)
        # As if this delivery had first found the id claimed almost a whole limit ago: it waits
        # once or twice more, each look again a new message that must carry the first time.
        app.send_task(GUARDED_NOOP, task_id=task_id, headers={WAIT_HEADER: time.time() - limit + 3})

        wait_for(lambda: app.AsyncResult(task_id).state == "FAILURE", 60, "the task to give up waiting on the claim")
        result = app.AsyncResult(task_id).result
    finally:
        client.delete(key)
        app.close()
    assert type(result).__name__ == "ClaimWaitExceeded", repr(result)
    assert not [e for e in outbox.read("guarded_noop") if e.get("task_id") == task_id]


def _claim(client, task_id: str) -> dict:
    raw = client.get(CLAIM_PREFIX + task_id)
    return json.loads(raw) if raw else {}


def _events(client, run: str, task_id: str, event: str) -> int:
    entries = (json.loads(raw) for raw in client.lrange(events_key(run), 0, -1))
    return sum(1 for e in entries if e["task_id"] == task_id and e["event"] == event)


def _finishes(client, run: str, task_id: str, state: str) -> int:
    entries = (json.loads(raw) for raw in client.lrange(events_key(run), 0, -1))
    return sum(1 for e in entries if e["task_id"] == task_id and e["event"] == "finish" and e.get("state") == state)
