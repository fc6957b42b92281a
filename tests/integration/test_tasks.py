"""API -> broker -> worker -> result for every task kind, on both profiles with the same bodies."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import enqueue, run_task, wait_for, wait_for_task
from worker.backends import redis_client
from worker.celery_app import create_celery
from worker.inspection import queue_depths
from worker.outbox import Outbox

pytestmark = pytest.mark.integration


@pytest.fixture
def api(settings, make_api):
    return make_api(settings)


@pytest.fixture
def worker(settings, start_worker):
    return start_worker(settings)


@pytest.fixture
def outbox(settings):
    return Outbox(settings.result_backend)


@pytest.fixture
def address():
    """A fresh e-mail address, so outbox entries of other tests (and profiles) never match."""
    return lambda name: f"{name}-{uuid.uuid4().hex[:8]}@example.com"


def test_add_and_multiply(api, worker):
    assert run_task(api, "add", args=[2, 3])["result"] == 5
    assert run_task(api, "multiply", args=[5, 6])["result"] == 30
    status = run_task(api, "add", kwargs={"x": 40, "y": 2})
    assert (status["state"], status["result"], status["error"]) == ("SUCCESS", 42, None)


def test_task_with_info_knows_itself(api, worker):
    task_id = enqueue(api, "task_with_info", args=["hello"], priority=7)
    info = wait_for_task(api, task_id)["result"]
    assert info["task_id"] == task_id
    assert info["task_name"] == "worker.tasks.basic.task_with_info"
    assert info["retries"] == 0
    assert info["args"] == ["hello"]
    assert info["queue"] == "default"
    assert info["priority"] == 7  # the user's number, on both brokers
    assert info["hostname"] == worker.hostname


def test_send_email_retries_automatically_then_succeeds(api, worker, outbox, address):
    email = address("flaky")
    status = run_task(api, "send_email", args=["u1", email], kwargs={"fail_times": 2}, timeout=45)
    assert status["state"] == "SUCCESS"
    assert status["result"] == {"status": "sent", "user_id": "u1", "email": email, "attempts": 3}
    sent = [e for e in outbox.read("email") if e["to"] == email]
    assert [e["attempt"] for e in sent] == [3]


def test_send_email_manual_retry_waits_what_the_server_asked(api, worker):
    status = run_task(api, "send_email", args=["u2", "slow@example.com"], kwargs={"rate_limited_times": 1})
    assert status["state"] == "SUCCESS"
    assert status["result"]["attempts"] == 2
    # The manual path retries with countdown=1: the RETRY state lasts long enough to be seen.
    assert "RETRY" in status["seen"]


def test_send_email_gives_up_after_max_retries(api, worker, outbox, address):
    email = address("down")
    status = run_task(api, "send_email", args=["u3", email], kwargs={"fail_times": 99}, timeout=60)
    assert status["state"] == "FAILURE"
    assert status["error"]["type"] == "EmailDeliveryError"
    assert "attempt 4" in status["error"]["message"]  # the first try and max_retries=3 retries
    assert not [e for e in outbox.read("email") if e["to"] == email]


def test_long_batch_job_completes(api, worker):
    status = run_task(api, "long_batch_job", kwargs={"items": 5, "seconds_per_item": 0.01})
    assert status["result"] == {"processed": 5, "total": 5}


def test_soft_time_limit_saves_progress_before_failing(settings, start_worker, outbox):
    # Celery enforces time limits in the prefork pool only.
    start_worker(settings, pool="prefork", concurrency=1, queues=["low_priority"])
    app = create_celery(settings, producer_only=True)
    result = app.tasks["worker.tasks.batch.long_batch_job"].apply_async(
        kwargs={"items": 1000, "seconds_per_item": 0.01}, soft_time_limit=1, time_limit=10
    )
    wait_for(lambda: result.state == "FAILURE", 30, "the job to hit its soft time limit")
    assert type(result.result).__name__ == "SoftTimeLimitExceeded"
    checkpoint = [e for e in outbox.read("batch_checkpoint") if e["task_id"] == result.id]
    assert len(checkpoint) == 1 and 0 < checkpoint[0]["done"] < 1000
    app.close()


def test_canvas_chain_group_chord(api, worker):
    chain = api.post(
        "/workflows/chain", json={"tasks": [{"name": "step1", "args": ["data"]}, {"name": "step2"}, {"name": "step3"}]}
    ).json()
    assert len(chain["task_ids"]) == 3 and chain["task_ids"][-1] == chain["task_id"]
    assert wait_for_task(api, chain["task_id"])["result"] == "[step3:[step2:[step1:data]]]"

    group = api.post(
        "/workflows/group",
        json={
            "tasks": [
                {"name": "add", "args": [1, 2]},
                {"name": "add", "args": [3, 4]},
                {"name": "multiply", "args": [5, 6]},
            ]
        },
    ).json()
    done = wait_for(
        lambda: (s := api.get(group["status_url"]).json())["completed"] == 3 and s, 30, "the group to finish"
    )
    assert [t["result"] for t in done["tasks"]] == [3, 7, 30]

    chord = api.post(
        "/workflows/chord",
        json={
            "header": [
                {"name": "add", "args": [1, 2]},
                {"name": "add", "args": [3, 4]},
                {"name": "add", "args": [5, 6]},
            ],
            "callback": {"name": "sum_results"},
        },
    ).json()
    assert wait_for_task(api, chord["task_id"])["result"] == 21


def test_signup_fires_and_forgets(api, worker, outbox, address):
    email = address("new.user")
    response = api.post("/users/signup", json={"email": email.replace("new.user", "New.User"), "name": "New"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert api.post("/users/signup", json={"email": email, "name": "Again"}).status_code == 409
    for task_id in body["tasks"].values():
        assert wait_for_task(api, task_id)["state"] == "SUCCESS"
    welcome = [e for e in outbox.read("welcome_email") if e["user_id"] == body["user_id"]]
    assert welcome and welcome[0]["to"] == email
    assert [e for e in outbox.read("admin_notification") if e["user_id"] == body["user_id"]]


def test_tools_noop_sleep_fail(api, worker):
    assert run_task(api, "noop")["state"] == "SUCCESS"
    assert run_task(api, "sleep", args=[0.2])["result"] == 0.2
    failed = run_task(api, "fail", args=["boom"])
    assert failed["state"] == "FAILURE"
    assert failed["error"] == {"type": "InjectedFailure", "message": "boom"}
    assert "RETRY" not in failed["seen"]


def test_workers_consume_only_their_queues(api, settings, start_worker):
    start_worker(settings, queues=["high_priority"])
    default_task = enqueue(api, "add", args=[1, 1])
    urgent = enqueue(api, "send_email", args=["u4", "fast@example.com"])
    routed = enqueue(api, "task_with_info", args=["routed"], queue="high_priority")
    assert wait_for_task(api, urgent)["state"] == "SUCCESS"
    assert wait_for_task(api, routed)["result"]["queue"] == "high_priority"
    # The default queue has no consumer: its task stays queued.
    assert api.get(f"/tasks/{default_task}").json()["state"] == "PENDING"
    start_worker(settings, queues=["default"])
    assert wait_for_task(api, default_task)["result"] == 2


def test_priority_backlog_high_ones_overtake(api, settings, start_worker):
    low = [enqueue(api, "noop", priority=0) for _ in range(30)]
    high = [enqueue(api, "noop", priority=9) for _ in range(5)]
    app = create_celery(settings, producer_only=True)
    start_worker(settings, queues=["default"])  # the worker starts only once the backlog is there
    wait_for(lambda: all(app.AsyncResult(t).state == "SUCCESS" for t in low + high), 60, "the backlog to drain")
    finished = sorted(low + high, key=lambda t: app.backend.get_task_meta(t)["date_done"])
    ranks = sorted(finished.index(t) for t in high)
    assert ranks == [0, 1, 2, 3, 4], f"high-priority tasks finished at ranks {ranks} of {len(finished)}"
    app.close()


def test_revoke_a_waiting_task(api, worker):
    task_id = enqueue(api, "add", args=[1, 2], countdown=2)
    response = api.delete(f"/tasks/{task_id}")
    assert response.status_code == 202
    assert response.json() == {"task_id": task_id, "revoked": True, "terminate": False}
    status = wait_for_task(api, task_id, timeout=20)
    assert status["state"] == "REVOKED"
    assert status["result"] is None


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_late_acks_let_the_next_task_in_at_once(settings, start_worker, pool):
    """With acks_late and prefetch 1 the broker sends the next task only once the last one is
    acked. Celery queues that ack on the event loop, which then sleeps until its next timer before
    sending it: a local broker's backlog drained at about one task per second or two. The
    consumer sends it at once (worker.consumer)."""
    assert (settings.worker_prefetch_multiplier, create_celery(settings).conf.task_acks_late) == (1, True)
    producer = create_celery(settings, producer_only=True)
    noop = producer.tasks["worker.tasks.tools.noop"]
    backlog = 200
    for _ in range(backlog):
        noop.apply_async(ignore_result=True)  # nothing else on the worker's connections to wake it
    assert queue_depths(producer)["default"] == backlog
    start_worker(settings, pool=pool, concurrency=1)
    # Well under a second of work; with the late acks held back it takes minutes.
    wait_for(lambda: queue_depths(producer)["default"] == 0, 15, f"{backlog} no-op tasks to be taken", interval=0.1)
    producer.close()


def test_the_api_tells_unknown_ids_from_pending_ones(api, settings):
    """Every id the API hands out is recorded beside the results for RESULT_EXPIRES: it polls as
    PENDING while it waits (no worker here); an id nobody published is 404, for GET and DELETE."""
    task_id = enqueue(api, "add", args=[1, 2], countdown=60)
    assert api.get(f"/tasks/{task_id}").json()["state"] == "PENDING"
    results = redis_client(settings.result_backend, settings)
    try:
        ttl = results.ttl(f"celery-task-meta-{task_id}/published")
    finally:
        results.close()
    assert settings.result_expires - 10 <= ttl <= settings.result_expires
    unknown = str(uuid.uuid4())
    assert api.get(f"/tasks/{unknown}").status_code == 404
    assert api.delete(f"/tasks/{unknown}").status_code == 404
    assert api.delete(f"/tasks/{task_id}").status_code == 202
