"""Every worker pool the walkthrough recommends, on both brokers, with the same test body.

prefork, threads, solo, gevent (``--pool=gevent --concurrency=100``, the walkthrough's choice for
e-mail) and ``--autoscale=10,3``: tasks sent through the API reach SUCCESS, their late acks reach
the broker at once (nothing is left unacked shortly after the last SUCCESS), and a warm shutdown
(SIGTERM) lets the running tasks finish, acks them, gives the prefetched ones back and exits 0.

Runs on whichever Redis transport ``REDIS_TRANSPORT`` selects (brokerstack's or kombu's).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kombu import Connection

from lab.harness.nodes import BrokerNode
from lab.harness.processes import CeleryWorker
from tests.helpers import enqueue, wait_for, wait_for_task
from worker.brokers.redis import PRIORITY_STEPS
from worker.settings import Settings
from worker.topology import WORK_QUEUES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: How long after the last SUCCESS an ack may still be on its way. A late ack is sent when the
#: task returns; a transport that holds acks back until its next poll (up to a second when idle)
#: or a consumer that queues them behind the event loop's timers misses this.
ACK_DEADLINE = 0.5
#: Redis: the hash kombu's transport (and brokerstack's) keeps delivered-but-unacked messages in.
REDIS_UNACKED_KEY = "unacked"
REDIS_PRIORITY_SEP = "\x06\x16"
TASKS = 30
#: Long enough to be running when SIGTERM arrives, short enough for a warm shutdown to wait for.
RUNNING_TASK_SECONDS = 2.0
#: A backlog for a green pool of GREEN_CONCURRENCY (its prefetch window), and how long draining it
#: may take: a loop that refills the window only at its 2 s poll timeout needs 2 s per window (40 s
#: here); refilled as tasks finish, it takes a second or two.
GREEN_BACKLOG = 200
GREEN_CONCURRENCY = 10
GREEN_DRAIN_LIMIT = 15.0

#: The threads pool as a throughput-tuned deployment runs it (the bench's fire-and-forget), a
#: backlog, and how long draining it may take, worker start included (one stalled event flush
#: waits for the broker's next heartbeat, a minute).
THREADS_CONCURRENCY = 2
THREADS_PREFETCH = 16
THREADS_BACKLOG = 3000
THREADS_DRAIN_LIMIT = 30.0

#: The stacks' gevent worker (the walkthrough's -c 100, prefetch multiplier 1, results stored), a
#: backlog of a few windows, and how long draining it may take, worker start included.
GREEN_RESULTS_CONCURRENCY = 100
GREEN_RESULTS_BACKLOG = 1000
GREEN_RESULTS_DRAIN_LIMIT = 20.0

HAS_GEVENT = importlib.util.find_spec("gevent") is not None

POOLS = [
    pytest.param({"pool": "prefork", "concurrency": 2}, id="prefork"),
    pytest.param({"pool": "threads", "concurrency": 4}, id="threads"),
    pytest.param({"pool": "solo", "concurrency": 1}, id="solo"),
    pytest.param(
        {"pool": "gevent", "concurrency": 100},
        id="gevent",
        marks=pytest.mark.skipif(not HAS_GEVENT, reason="gevent is an extra: pip install -e '.[gevent]'"),
    ),
    pytest.param({"pool": "prefork", "concurrency": 3, "extra_args": ("--autoscale=10,3",)}, id="autoscale"),
]


class BrokerLook:
    """What the broker holds in the work queues: ready, and delivered but not acked."""

    def __init__(self, broker: BrokerNode, settings: Settings) -> None:
        self.broker = broker
        self.kind = broker.kind
        if self.kind == "redis":
            self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
        else:
            with Connection(settings.rabbitmq_url) as conn:
                self._vhost = conn.virtual_host

    def counts(self) -> tuple[int, int]:
        """(ready, unacked) over the work queues."""
        if self.kind == "redis":
            pipe = self._client.pipeline(transaction=False)
            for queue in WORK_QUEUES:
                for step in PRIORITY_STEPS:
                    pipe.llen(queue if step == 0 else f"{queue}{REDIS_PRIORITY_SEP}{step}")
            pipe.hlen(REDIS_UNACKED_KEY)
            *ready, unacked = pipe.execute()
            return sum(ready), int(unacked)
        node: Any = self.broker  # both rabbitmq node kinds have rabbitmqctl(); BrokerNode does not declare it
        out = node.rabbitmqctl(
            "list_queues",
            "-q",
            "-p",
            self._vhost,
            "--formatter",
            "json",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        )
        rows = [row for row in json.loads(out or "[]") if row["name"] in WORK_QUEUES]
        return (
            sum(int(row.get("messages_ready") or 0) for row in rows),
            sum(int(row.get("messages_unacknowledged") or 0) for row in rows),
        )

    def unacked(self) -> int:
        return self.counts()[1]

    def close(self) -> None:
        if self.kind == "redis":
            self._client.close()


@pytest.fixture
def look(broker: BrokerNode, settings: Settings) -> Any:
    looker = BrokerLook(broker, settings)
    yield looker
    looker.close()


def wait_acked(look: BrokerLook, what: str) -> None:
    """Nothing unacked within ACK_DEADLINE; the failure says how long it did take, if it did."""
    started = time.monotonic()
    deadline = started + ACK_DEADLINE
    while (left := look.unacked()) and time.monotonic() < deadline:
        time.sleep(0.02)
    if left:
        # How late the acks are, or whether they never come, makes the failure actionable.
        late = time.monotonic()
        while look.unacked() and time.monotonic() - late < 5:
            time.sleep(0.05)
        then = look.unacked()
        pytest.fail(
            f"{what}: {left} message(s) still unacked {ACK_DEADLINE:g} s after the last SUCCESS; "
            + (
                f"{then} still after {time.monotonic() - started:.1f} s"
                if then
                else f"acked {time.monotonic() - started:.2f} s after it"
            )
        )


@pytest.mark.parametrize("options", POOLS)
def test_pool_runs_acks_at_once_and_shuts_down_warm(
    options: dict[str, Any],
    settings: Settings,
    start_worker: Callable[..., CeleryWorker],
    make_api: Callable[[Settings], Any],
    look: BrokerLook,
) -> None:
    worker = start_worker(settings, **options)
    api = make_api(settings)

    # Tasks through the API, each to SUCCESS with its own result.
    ids = [enqueue(api, "add", args=[i, 1000]) for i in range(TASKS)]
    for i, task_id in enumerate(ids):
        status = wait_for_task(api, task_id, timeout=60)
        assert (status["state"], status["result"]) == ("SUCCESS", i + 1000), status
    wait_acked(look, f"{options['pool']} after {TASKS} tasks")
    assert look.counts() == (0, 0)

    # Warm shutdown with tasks running (and, on small pools, more waiting): the running ones finish
    # and are acked, the rest go back to the broker for the next worker, and the worker exits 0.
    sleepers = [enqueue(api, "sleep", args=[RUNNING_TASK_SECONDS]) for _ in range(4)]
    # SUCCESS too: on a starved machine the poll may miss the two seconds it runs.
    wait_for_task(api, sleepers[0], timeout=30, states=("STARTED", "SUCCESS"))
    # To the main process alone, as `docker stop` and Kubernetes do: it tells its pool what to do.
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGTERM)
    wait_for(lambda: not worker.is_running(), 60, f"the {options['pool']} worker to finish its warm shutdown")
    assert worker.returncode == 0, worker.logs()[-3000:]
    states = [api.get(f"/tasks/{task_id}").json()["state"] for task_id in sleepers]
    # Started means finished: a warm shutdown never leaves a task half done.
    assert states[0] == "SUCCESS" and set(states) <= {"SUCCESS", "PENDING"}, states

    def settled() -> tuple[int, int] | None:
        ready, unacked = look.counts()
        return (ready, unacked) if unacked == 0 else None

    # Every task not run is back in its queue, none run is: the broker requeues what the closed
    # connection held unacked, which takes RabbitMQ a moment.
    ready, _ = wait_for(settled, 10, "nothing unacked after the warm shutdown")
    # More ready than PENDING: a task that ran was given back as well, and would run twice.
    tail = "\n".join(worker.logs().splitlines()[-40:])
    assert ready == states.count("PENDING"), f"{ready} ready in the broker, task states {states}; worker log:\n{tail}"


def green_drain_seconds(
    settings: Settings,
    start_worker: Callable[..., CeleryWorker],
    look: BrokerLook,
    *,
    backlog: int,
    concurrency: int,
    ignore_result: bool,
    deadline: float,
) -> float:
    """How long a fresh gevent worker takes to drain a backlog of no-ops, its start included (an
    error once ``deadline`` seconds have passed)."""
    from worker.celery_app import create_celery

    app = create_celery(settings, producer_only=True)
    try:
        for _ in range(backlog):
            app.send_task("worker.tasks.tools.noop", ignore_result=ignore_result)
    finally:
        app.close()
    assert look.counts()[0] == backlog
    started = time.monotonic()
    start_worker(settings, pool="gevent", concurrency=concurrency)
    wait_for(lambda: look.counts() == (0, 0), deadline, f"a backlog of {backlog} to drain")
    return time.monotonic() - started


@pytest.mark.skipif(not HAS_GEVENT, reason="gevent is an extra: pip install -e '.[gevent]'")
def test_a_green_pool_refills_its_prefetch_window_as_tasks_finish(
    settings: Settings, start_worker: Callable[..., CeleryWorker], look: BrokerLook
) -> None:
    """gevent runs Celery's loop without a hub: its acks free the prefetch window without waking
    the loop's poll, so a transport that fills the window in one fetch must look again soon."""
    took = green_drain_seconds(
        settings,
        start_worker,
        look,
        backlog=GREEN_BACKLOG,
        concurrency=GREEN_CONCURRENCY,
        ignore_result=True,
        deadline=60,
    )
    assert took < GREEN_DRAIN_LIMIT, f"{GREEN_BACKLOG} no-ops took {took:.1f} s on gevent -c {GREEN_CONCURRENCY}"


@pytest.mark.skipif(not HAS_GEVENT, reason="gevent is an extra: pip install -e '.[gevent]'")
@pytest.mark.parametrize("confirms", [True, False], ids=["confirms", "noconfirm"])
def test_a_green_pool_storing_results_drains_at_full_speed(
    settings: Settings, start_worker: Callable[..., CeleryWorker], look: BrokerLook, confirms: bool
) -> None:
    """The stacks' gevent worker as deployed (results stored, prefetch multiplier 1) drains a
    backlog as fast as its tasks finish, with publisher confirms or without (Celery's default).
    Without confirms Celery's green loop waited 0.1 s per task on the quiet event connection."""
    tuned = settings.model_copy(update={"worker_prefetch_multiplier": 1, "rabbitmq_confirm_publish": confirms})
    took = green_drain_seconds(
        tuned,
        start_worker,
        look,
        backlog=GREEN_RESULTS_BACKLOG,
        concurrency=GREEN_RESULTS_CONCURRENCY,
        ignore_result=False,
        deadline=120,
    )
    assert took < GREEN_RESULTS_DRAIN_LIMIT, (
        f"{GREEN_RESULTS_BACKLOG} no-ops storing results took {took:.1f} s on gevent -c {GREEN_RESULTS_CONCURRENCY}"
    )


def test_a_warm_shutdown_never_gives_back_a_message_whose_task_already_succeeded(
    settings: Settings, start_worker: Callable[..., CeleryWorker], look: BrokerLook
) -> None:
    """Celery keeps a worker's requests in weak sets. When the prefork pool loses a finished task's
    report as it stops (under load: its result is stored, the pool never reads the report), the
    request vanishes unacknowledged and the broker gets the message back: the task runs twice
    (celery/celery#3802). A worker that stops checks the stored state of every message it still
    holds and acks those whose task succeeded. Shown here with a message that is the same
    deterministically: a second delivery of a task that already succeeded, prefetched when the
    worker stops."""
    from worker.celery_app import create_celery

    prefetching = settings.model_copy(update={"worker_prefetch_multiplier": 4})
    worker = start_worker(prefetching, pool="prefork", concurrency=1)
    app = create_celery(prefetching, producer_only=True)
    try:
        done = app.send_task("worker.tasks.basic.add", args=[1, 2])
        assert done.get(timeout=30) == 3
        running = app.send_task("worker.tasks.tools.sleep", args=[RUNNING_TASK_SECONDS])
        wait_for(lambda: running.state == "STARTED", 30, "the sleep to start")
        # The same task id again (a producer's retry after a lost confirm): prefetched behind the sleep.
        app.send_task("worker.tasks.basic.add", args=[1, 2], task_id=done.id)
        wait_for(lambda: look.counts() == (0, 2), 10, f"both messages delivered (ready, unacked: {look.counts()})")
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGTERM)
        wait_for(lambda: not worker.is_running(), 60, "the prefork worker to finish its warm shutdown")
        assert worker.returncode == 0, worker.logs()[-3000:]
        assert running.state == "SUCCESS"
        wait_for(lambda: look.counts() == (0, 0), 10, f"nothing given back (ready, unacked: {look.counts()})")
    finally:
        app.close()


def test_a_thread_pool_drains_at_full_speed_with_task_events_and_a_large_prefetch(
    settings: Settings, start_worker: Callable[..., CeleryWorker], look: BrokerLook
) -> None:
    """Celery registers the event connection with the event loop (for its heartbeats), which then
    reads that socket whenever it is readable, and lets a task thread that fills the event buffer
    flush it at once. With publisher confirms the thread then waits on the same socket for the
    confirm: when the loop read it first, the thread waited for the broker's next heartbeat (a
    minute) holding the dispatcher's lock, and the loop, flushing too, waited for the lock (the
    bench measured 7 tasks/s instead of over 1,000 on RabbitMQ)."""
    from worker.celery_app import create_celery

    tuned = settings.model_copy(update={"worker_prefetch_multiplier": THREADS_PREFETCH})
    app = create_celery(tuned, producer_only=True)
    succeeded: set[str] = set()
    try:
        for _ in range(THREADS_BACKLOG):
            app.send_task("worker.tasks.tools.noop", ignore_result=True)
        assert look.counts()[0] == THREADS_BACKLOG
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"task-succeeded": lambda e: succeeded.add(e["uuid"])})
            with receiver.consumer_context(wakeup=False) as (events, _, _):

                def listen(seconds: float) -> None:
                    with contextlib.suppress(TimeoutError):
                        events.drain_events(timeout=seconds)

                listen(0.2)  # subscribed before the worker starts (Redis pub/sub: on the first drain)
                started = time.monotonic()
                start_worker(tuned, pool="threads", concurrency=THREADS_CONCURRENCY)
                took = None
                while took is None and time.monotonic() - started < 180:
                    listen(0.2)
                    if look.counts() == (0, 0):
                        took = time.monotonic() - started
                assert took is not None, f"{look.counts()} (ready, unacked) of {THREADS_BACKLOG} left after 180 s"
                assert took < THREADS_DRAIN_LIMIT, (
                    f"{THREADS_BACKLOG} no-ops took {took:.1f} s on threads -c {THREADS_CONCURRENCY}"
                )
                # The loop publishes every event a task thread buffered: none is lost on the way.
                deadline = time.monotonic() + 15
                while len(succeeded) < THREADS_BACKLOG and time.monotonic() < deadline:
                    listen(0.5)
    finally:
        app.close()
    assert len(succeeded) == THREADS_BACKLOG
