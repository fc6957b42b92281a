"""Delayed tasks (countdown / ETA) are held by the broker, not by a worker (issue 14), on both
brokers with the same test bodies: a day-long countdown is accepted; a short one runs once, on time,
across a worker restart and (where the broker is durable) a broker restart; while it waits no worker
has it reserved or scheduled; revoking and expiry of a waiting task still work. On Redis the
transport-level promises are checked too: a due message lands on its priority's list, and movers
running at once move each message exactly once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from lab.harness.nodes import BrokerNode, RedisOptions, make_node
from lab.harness.settings import settings_for
from tests.conftest import BROKER_KINDS, _purged_settings
from tests.helpers import enqueue, wait_for, wait_for_task
from worker.brokers import profile_for
from worker.brokers.redis import TRANSPORT_PATH
from worker.brokers.redis.transport import delayed_key
from worker.celery_app import create_celery
from worker.dead_letters import store_for
from worker.ledger import events_key
from worker.settings import Settings

pytestmark = pytest.mark.integration

ADD = "worker.tasks.basic.add"
#: How late a task may start after it is due: issue 14 asks for "within a second of due".
ON_TIME = 1.0
#: The worker's clock and the test's are the same machine's: a start earlier than this before due
#: would be a task run early.
EARLY = 0.05


# --- fixtures and helpers ------------------------------------------------------------------------


def delayed_settings(broker: BrokerNode, results: BrokerNode, **overrides: Any) -> Settings:
    """Settings on ``broker`` (its queues purged) with the execution ledger on, a run per test."""
    return _purged_settings(broker, results, ledger_url=results.url, ledger_run=uuid.uuid4().hex, **overrides)


@pytest.fixture
def setup(broker: BrokerNode, results_node: BrokerNode) -> Settings:
    """The shared broker of each kind (RabbitMQ with classic queues; quorum has a test of its own)."""
    return delayed_settings(broker, results_node)


@pytest.fixture
def app(setup: Settings) -> Iterator[Celery]:
    app = create_celery(setup, producer_only=True)
    yield app
    app.close()


def in_seconds(seconds: float) -> tuple[str, float]:
    """An ETA ``seconds`` from now as the API takes it, and as a timestamp."""
    when = datetime.now(UTC) + timedelta(seconds=seconds)
    return when.isoformat(), when.timestamp()


def until(when: float) -> None:
    """Wait for a point in time (a task coming due): there is no condition to poll but the clock."""
    wait_for(lambda: time.time() >= when, when - time.time() + 5, "the clock")


def answers_ping(app: Celery, hostname: str) -> bool:
    """Whether the worker answers a ping through the broker (a pooled connection may still be the
    one the broker dropped: that is a no, not an error)."""
    with app.connection_for_write() as conn:
        errors = (*conn.connection_errors, *conn.channel_errors)
    try:
        return bool(app.control.ping([hostname], timeout=1.0))
    except errors:
        return False


def starts(settings: Settings, task_id: str) -> list[float]:
    """When a worker started ``task_id`` (time.time() in the worker), from the execution ledger."""
    client = redis.Redis.from_url(settings.ledger_url or "")
    try:
        events = [json.loads(e) for e in client.lrange(events_key(settings.ledger_run), 0, -1)]
    finally:
        client.close()
    return [e["t"] for e in events if e["event"] == "start" and e["task_id"] == task_id]


def held_by_workers(app: Celery, task_id: str, hostname: str) -> list[str]:
    """Where the worker holds ``task_id``: reserved (prefetched) or scheduled (an ETA it waits for)."""
    inspect = app.control.inspect(timeout=2.0, destination=[hostname])
    found = []
    for kind, replies in (("reserved", inspect.reserved()), ("scheduled", inspect.scheduled())):
        for worker, requests in (replies or {}).items():
            for request in requests:
                if task_id in json.dumps(request, default=str):
                    found.append(f"{kind} by {worker}")
    return found


def assert_waits_in_the_broker(
    app: Celery, settings: Settings, task_id: str, hostname: str, until: float, must_look: bool = True
) -> None:
    """Until ``until`` (a timestamp), the task is in the broker's delayed store and the worker does
    not hold it."""
    checks = 0
    while time.time() < until:
        assert held_by_workers(app, task_id, hostname) == [], "the worker holds the waiting task"
        assert profile_for(settings).delayed_depth(app) >= 1, "the waiting task is not in the broker"
        checks += 1
    assert checks or not must_look, "the task was due before the test could look"


def assert_ran_once_on_time(settings: Settings, task_id: str, due: float, late: float = ON_TIME) -> None:
    [started] = wait_for(lambda: starts(settings, task_id), 30, f"task {task_id} to start")
    assert -EARLY <= started - due <= late, f"started {started - due:+.3f} s from due"
    # A second run, if any, would come from a redelivery: give it a moment to show.
    until(time.time() + 0.5)
    assert len(starts(settings, task_id)) == 1, "the delayed task ran more than once"


# --- the API's answer ------------------------------------------------------------------------------


def test_a_day_long_countdown_is_accepted_and_waits_in_the_broker(setup, app, make_api):
    api = make_api(setup)
    before = profile_for(setup).delayed_depth(app)
    assert api.post("/tasks/add", json={"args": [1, 2], "countdown": 86400}).status_code == 202
    assert profile_for(setup).delayed_depth(app) == before + 1
    week_and_a_day = api.post("/tasks/add", json={"args": [1, 2], "countdown": 8 * 86400})
    assert week_and_a_day.status_code == 422
    assert "MAX_TASK_DELAY" in week_and_a_day.text


# --- running on time, once, whatever restarts --------------------------------------------------


def test_a_delayed_task_waits_in_the_broker_and_runs_once_on_time_across_a_worker_restart(
    setup, app, make_api, start_worker
):
    api = make_api(setup)
    worker = start_worker(setup)
    eta, due = in_seconds(10)
    task_id = enqueue(api, "add", args=[2, 3], eta=eta)
    assert_waits_in_the_broker(app, setup, task_id, worker.hostname, until=time.time() + 1)
    # Killed, as a crash or an OOM kill would: a worker that held the task would hand it back.
    worker.kill()
    worker.start()
    worker.wait_ready()
    back = time.time()
    assert_waits_in_the_broker(app, setup, task_id, worker.hostname, until=due - 1.5, must_look=False)
    # On time, unless the machine was so slow that the worker came back after it was due: then at
    # once after it was back.
    assert_ran_once_on_time(setup, task_id, due, late=ON_TIME + max(0.0, back - due))
    assert wait_for_task(api, task_id)["result"] == 5


@pytest.mark.parametrize("own_broker", ["rabbitmq"], indirect=True)
def test_the_same_on_quorum_queues(own_broker, results_node, make_api, start_worker):
    """Quorum queues are where Celery's own delayed delivery applies: its worker step declares the
    same ladder beside brokerstack's routing, and both must agree."""
    settings = delayed_settings(own_broker, results_node, rabbitmq_queue_type="quorum")
    app = create_celery(settings, producer_only=True)
    try:
        worker = start_worker(settings)
        eta, due = in_seconds(5)
        task_id = enqueue(make_api(settings), "add", args=[2, 3], eta=eta)
        assert_waits_in_the_broker(app, settings, task_id, worker.hostname, until=due - 1.5)
        assert_ran_once_on_time(settings, task_id, due)
    finally:
        app.close()


def test_revoking_a_waiting_task_keeps_it_from_running(setup, app, make_api, start_worker):
    api = make_api(setup)
    start_worker(setup)
    before = profile_for(setup).delayed_depth(app)
    eta, due = in_seconds(3)
    task_id = enqueue(api, "add", args=[1, 1], eta=eta)
    assert api.delete(f"/tasks/{task_id}").status_code == 202
    assert wait_for_task(api, task_id, timeout=30)["state"] == "REVOKED"
    # Once due, the worker that gets it drops it: out of the broker, and never started.
    until(due + 1.5)
    wait_for(lambda: profile_for(setup).delayed_depth(app) == before, 10, "the revoked task to leave the broker")
    assert starts(setup, task_id) == []
    assert app.AsyncResult(task_id).state == "REVOKED"


def test_a_waiting_task_that_expires_unrun_is_dead_lettered(setup, app, start_worker):
    dlq = store_for(app)
    dlq.ensure_declared()  # as the API does at start: RabbitMQ drops dead letters with no queue
    result = app.tasks[ADD].apply_async((4, 4), countdown=2, expires=3)
    # No worker until it has expired: whoever gets it then must not run it.
    until(time.time() + 3.5)  # expired
    start_worker(setup)
    letter = wait_for(lambda: dlq.get(result.id), 30, "the expired task's dead letter", interval=0.2)
    assert letter.reason == "expired"
    assert letter.death_count == 1
    assert starts(setup, result.id) == []


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_a_delayed_task_survives_a_broker_restart(kind, driver, results_node, start_worker, tmp_path):
    """On a durable broker (Redis with an fsync'd append-only file, RabbitMQ's durable queues)."""
    options: dict[str, Any] = {"redis": RedisOptions(appendonly=True, appendfsync="always")} if kind == "redis" else {}
    with make_node(kind, driver, name="delayed-restart", **options) as node:
        settings = delayed_settings(node, results_node)
        app = create_celery(settings, producer_only=True)
        try:
            worker = start_worker(settings)
            delay = 6 if kind == "redis" else 25  # RabbitMQ takes seconds to stop and boot
            eta = datetime.now(UTC) + timedelta(seconds=delay)
            due = eta.timestamp()
            result = app.tasks[ADD].apply_async((5, 5), eta=eta)
            node.restart(graceful=True)
            # The worker reconnects on its own; it answers a ping through the broker once it has.
            wait_for(lambda: answers_ping(app, worker.hostname), 60, "the worker to reconnect")
            back = time.time()
            # On time if the worker was back before due; if the machine was too slow for that, at
            # once after it was back. Once in any case.
            assert_ran_once_on_time(settings, result.id, due, late=ON_TIME + max(0.0, back - due))
        finally:
            app.close()


# --- Redis: the move itself --------------------------------------------------------------------


@pytest.fixture
def redis_broker(broker: BrokerNode) -> BrokerNode:
    if broker.kind != "redis":
        pytest.skip("Redis' delayed sets")
    return broker


def test_a_due_message_lands_on_the_list_of_its_priority(redis_broker, results_node):
    """Moved exactly where a publish at its due time would have put it, so any consumer, a stock
    kombu one too, takes it from there."""
    settings = delayed_settings(redis_broker, results_node)
    app = create_celery(settings, producer_only=True)
    client = redis.Redis.from_url(redis_broker.url)
    try:
        add = app.tasks[ADD]
        for priority in (9, 0):
            add.apply_async((1, priority), priority=priority, queue="low_priority")
        now_lists = {k for k in client.keys("low_priority*")}
        client.delete(*now_lists)
        for priority in (9, 0):
            add.apply_async((1, priority), priority=priority, queue="low_priority", countdown=0.3)
        assert client.keys("low_priority*") == []
        assert client.zcard(delayed_key("low_priority")) == 2
        until(time.time() + 0.4)  # due, and no one has moved them
        with Connection(redis_broker.url, transport=TRANSPORT_PATH) as conn:
            conn.default_channel._move_due(["low_priority"], force=True)
        assert set(client.keys("low_priority*")) == now_lists
        assert client.zcard(delayed_key("low_priority")) == 0
    finally:
        client.close()
        app.close()


def test_movers_running_at_once_move_each_message_once(redis_broker, results_node):
    settings = delayed_settings(redis_broker, results_node)
    app = create_celery(settings, producer_only=True)
    client = redis.Redis.from_url(redis_broker.url)
    count = 1100  # more than one move's MAX_MOVE, so movers interleave
    try:
        with app.producer_or_acquire() as producer:
            for n in range(count):
                app.tasks[ADD].apply_async((n, 0), countdown=0.5, producer=producer, ignore_result=True)
        assert client.zcard(delayed_key("default")) == count
        until(time.time() + 0.6)  # due
        connections = [Connection(redis_broker.url, transport=TRANSPORT_PATH) for _ in range(4)]

        def move(conn: Connection) -> None:
            while client.zcard(delayed_key("default")):
                conn.default_channel._move_due(["default"], force=True)  # type: ignore[attr-defined]

        threads = [threading.Thread(target=move, args=(c,)) for c in connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for conn in connections:
            conn.close()
        bodies = [
            json.loads(item)["headers"]["id"] for key in client.keys("default*") for item in client.lrange(key, 0, -1)
        ]
        assert len(bodies) == len(set(bodies)) == count
    finally:
        client.close()
        app.close()


@pytest.mark.parametrize("own_broker", ["rabbitmq"], indirect=True)
def test_the_test_fixtures_purge_leaves_no_waiting_task_for_the_next_test(own_broker, results_node):
    """Regression: a countdown task of one test, waiting in RabbitMQ's shared ladder, landed in the
    queue of a later test on the same broker (test_pools counted it as a task given back twice)."""
    settings = settings_for(own_broker, results_node)
    app = create_celery(settings)
    try:
        app.tasks["worker.tasks.basic.add"].apply_async((1, 2), countdown=60)
        profile = profile_for(settings)
        assert profile.delayed_depth(app) == 1
        _purged_settings(own_broker, results_node)
        assert profile.delayed_depth(app) == 0
    finally:
        app.close()


def test_the_count_of_waiting_tasks_never_misses_one_that_moves_while_it_is_counted(setup, app):
    """A waiting task moves between stores while it waits (RabbitMQ: down the ladder, one level per
    bit of its delay), and the count reads them one after another: read in the wrong order, a task
    that moves between two reads is in neither (CI once saw a count of 0 with one task waiting,
    in the test after this one's). Many tasks hop here all the time; no count may fall below
    the tasks not yet due."""
    tasks = 300
    dues: list[float] = []
    with app.producer_or_acquire() as producer:
        for n in range(tasks):
            countdown = 3 + n % 8  # 3..10 s: the low levels of the ladder busy with hops throughout
            dues.append(time.time() + countdown)
            app.tasks[ADD].apply_async((n, 0), countdown=countdown, producer=producer)
    profile = profile_for(setup)
    counts = []
    while time.time() < max(dues) - 1:
        count = profile.delayed_depth(app)
        # Cannot have left the broker's store before the count's last read (the ladder holds whole
        # seconds, and rounds down): on a busy machine one count takes a good part of a second, and
        # a task that left while the shortest levels were still to be read is rightly not counted.
        waiting = sum(due > time.time() + 1.2 for due in dues)
        counts.append((count, waiting))
    short = [(count, waiting) for count, waiting in counts if count < waiting]
    assert len(counts) > 20 and not short, f"{len(short)} of {len(counts)} counts missed waiting tasks: {short[:5]}"


# --- RabbitMQ classic setups: waiting tasks across a broker kill ---------------------------------

#: Delayed tasks waiting across the broker kill: enough that hops are under way at any moment.
KILL_TASKS = 400
#: Their countdowns cycle through 3 .. 3 + KILL_SPREAD - 1 s, so every low level of the ladder holds
#: some, and some come due while the broker is down.
KILL_SPREAD = 13


def started_ids(settings: Settings) -> set[str]:
    """Every task a worker started in this test's ledger run."""
    client = redis.Redis.from_url(settings.ledger_url or "")
    try:
        events = [json.loads(e) for e in client.lrange(events_key(settings.ledger_run), 0, -1)]
    finally:
        client.close()
    return {e["task_id"] for e in events if e["event"] == "start"}


@pytest.mark.xfail(
    reason=(
        "a documented limit, no longer promised: classic queues dead-letter at-most-once (at-least-once "
        "dead lettering is for quorum source queues only: "
        "https://www.rabbitmq.com/blog/2022/03/29/at-least-once-dead-lettering), so rabbitmq-confirms "
        "does not promise lost == 0 for delayed tasks (lab.harness.setups; quorum queues do); 19 of 400 "
        "lost here. A quorum ladder ending in a quorum due queue emptied by a mover in each worker "
        "(tried, reverted) still stranded dead letters in the quorum ladder after a kill -9 "
        "(rabbitmq-server#12625): 10 of 400 here in 1 of 7 runs, 924 of 10,000 in the delayed chaos scenario"
    ),
    strict=False,
)
@pytest.mark.slow  # ~30 s when it passes; failing, it waits out its 90 s deadline
@pytest.mark.parametrize("own_broker", ["rabbitmq"], indirect=True)
def test_delayed_tasks_in_the_ladder_survive_a_broker_kill_on_classic_queues(own_broker, results_node, start_worker):
    """Regression: every hop of the ladder is a dead-lettering, and classic queues dead-letter
    at-most-once: ``delayed`` on rabbitmq-confirms lost 211 of 10,000 waiting tasks over three
    ``kill -9`` of the broker. Hundreds of tasks wait, hopping, when the broker is killed; every
    one of them runs (at least once) once it is back."""
    settings = delayed_settings(own_broker, results_node)
    assert settings.rabbitmq_queue_type == "classic"
    app = create_celery(settings, producer_only=True)
    try:
        start_worker(settings)
        with app.producer_or_acquire() as producer:
            ids = {
                app.tasks[ADD].apply_async((n, 0), countdown=3 + n % KILL_SPREAD, producer=producer).id
                for n in range(KILL_TASKS)
            }
        wait_for(lambda: started_ids(settings), 30, "the first delayed task to come due")  # hops under way
        own_broker.kill()
        own_broker.start()
        own_broker.wait_ready()
        # The worker reconnects on its own.
        deadline = time.time() + 90
        while (missing := ids - started_ids(settings)) and time.time() < deadline:
            time.sleep(0.5)
        if missing:  # where they are (messages counts ready and unacknowledged ones) says why
            queues = own_broker.rabbitmqctl("list_queues", "name", "type", "messages", "messages_unacknowledged")
        assert not missing, f"{len(missing)} of {KILL_TASKS} delayed tasks never ran after the broker kill:\n{queues}"
    finally:
        app.close()
