"""Metric names and values without a broker: the task-events exporter fed plain event dicts, the
API's /metrics on the in-memory app, and the monitoring files (dashboard, rules) against
docs/monitoring.md. The compose test (tests/compose/test_monitoring.py) runs all of it for real."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from services.monitoring.exporter import Exporter, Snapshot, consumers_by_queue, held_by_queue, with_silent_workers
from services.monitoring.grafana_check import refused_reason
from services.monitoring.healthcheck import check
from services.monitoring.task_events import HEARTBEAT_SLACK_SECONDS, TaskEvents, exception_type
from tests.fast.conftest import fast_settings, memory_celery
from worker.topology import WORK_QUEUES

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
DOCS = REPO / "docs" / "monitoring.md"
ADD = "worker.tasks.basic.add"
#: Names the issue asks for, under the well-known Celery exporter's names.
CELERY_EXPORTER_NAMES = (
    "celery_task_sent_total", "celery_task_received_total", "celery_task_started_total",
    "celery_task_succeeded_total", "celery_task_failed_total", "celery_task_retried_total",
    "celery_task_rejected_total", "celery_task_revoked_total", "celery_task_runtime_seconds",
    "celery_worker_up", "celery_worker_tasks_active", "celery_queue_length",
)  # fmt: skip


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the registry's text output, keyed by (name, labels)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    return samples(registry).get((metric, frozenset(labels.items())))


def event(kind: str, task_id: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": task_id, "timestamp": at, **fields}


@pytest.fixture
def events() -> tuple[TaskEvents, CollectorRegistry, Clock]:
    registry, clock = CollectorRegistry(), Clock()
    return TaskEvents(registry, clock=clock), registry, clock


# --- the task-events exporter -------------------------------------------------------------------


def test_a_task_life_counts_once_per_event_under_its_name_queue_and_worker(events) -> None:
    tracker, registry, clock = events
    t = clock.now
    where = {"name": ADD, "queue_name": "high_priority"}
    tracker.handle(event("task-sent", "t1", t, name=ADD, queue="high_priority", hostname="api@x"))
    tracker.handle(event("task-received", "t1", t + 1, name=ADD, hostname="w1@h"))
    tracker.handle(event("task-started", "t1", t + 2, hostname="w1@h"))
    tracker.handle(event("task-succeeded", "t1", t + 3, hostname="w1@h", runtime=0.75))

    assert sample(registry, "celery_task_sent_total", **where, hostname="api@x") == 1
    for name in ("received", "started", "succeeded"):
        assert sample(registry, f"celery_task_{name}_total", **where, hostname="w1@h") == 1, name
    assert sample(registry, "celery_task_runtime_seconds_count", **where, hostname="w1@h") == 1
    assert sample(registry, "celery_task_runtime_seconds_sum", **where, hostname="w1@h") == 0.75
    assert sample(registry, "celery_task_runtime_seconds_bucket", **where, hostname="w1@h", le="1.0") == 1
    assert sample(registry, "celery_task_runtime_seconds_bucket", **where, hostname="w1@h", le="0.5") == 0


def test_a_task_failed_for_good_keeps_its_name_after_the_reject(events) -> None:
    """Workers send task-rejected (acks_on_failure off: the broker dead-letters it) before
    task-failed: the failure must still carry the task's name and queue."""
    tracker, registry, clock = events
    t = clock.now
    tracker.handle(event("task-received", "f1", t, name="worker.tasks.tools.fail", hostname="w@h"))
    tracker.handle(event("task-started", "f1", t + 1, hostname="w@h"))
    tracker.handle(event("task-rejected", "f1", t + 2, hostname="w@h", requeue=False))
    tracker.handle(event("task-failed", "f1", t + 2.5, hostname="w@h", exception="InjectedFailure('boom')"))

    where = {"name": "worker.tasks.tools.fail", "queue_name": "default", "hostname": "w@h"}
    assert sample(registry, "celery_task_rejected_total", **where) == 1
    assert sample(registry, "celery_task_failed_total", **where, exception="InjectedFailure") == 1
    # No runtime in task-failed: from task-started on.
    assert sample(registry, "celery_task_runtime_seconds_sum", **where) == 1.5


def test_the_queue_defaults_to_the_route_when_no_task_sent_event_was_seen(events) -> None:
    tracker, registry, clock = events
    tracker.handle(event("task-received", "e1", clock.now, name="worker.tasks.email.send_email", hostname="w@h"))
    tracker.handle(event("task-retried", "e1", clock.now, hostname="w@h", exception="MailServerDown()"))
    tracker.handle(event("task-revoked", "e1", clock.now, hostname="w@h", expired=True))
    where = {"name": "worker.tasks.email.send_email", "queue_name": "high_priority", "hostname": "w@h"}
    assert sample(registry, "celery_task_retried_total", **where) == 1
    assert sample(registry, "celery_task_revoked_total", **where) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ValueError('x (y)')", "ValueError"), ("KeyError", "KeyError"), (None, "unknown"), ("", "unknown")],
)
def test_the_exception_label_is_the_type_only(text: str | None, expected: str) -> None:
    assert exception_type(text) == expected


def test_workers_are_up_while_heartbeats_arrive_and_down_once_they_stop_or_say_goodbye(events) -> None:
    tracker, _, clock = events
    tracker.handle({"type": "worker-online", "hostname": "a@h", "freq": 2.0, "local_received": clock.now})
    tracker.handle(
        {"type": "worker-heartbeat", "hostname": "b@h", "freq": 2.0, "active": 3, "local_received": clock.now}
    )
    assert tracker.workers() == [("a@h", True, 0), ("b@h", True, 3)]
    assert tracker.live_workers() == 2

    tracker.handle({"type": "worker-offline", "hostname": "a@h", "local_received": clock.now})
    clock.now += 2 * 2.0 + HEARTBEAT_SLACK_SECONDS - 0.1
    assert tracker.workers() == [("a@h", False, 0), ("b@h", True, 3)]
    clock.now += 0.2  # b's heartbeats stopped: expired, and its active tasks no longer count
    assert tracker.workers() == [("a@h", False, 0), ("b@h", False, 0)]


def test_oldest_waiting_counts_sent_tasks_until_they_start_and_etas_from_when_they_are_due(events) -> None:
    tracker, _, clock = events
    t = clock.now
    tracker.handle(event("task-sent", "old", t - 30, name=ADD, queue="default"))
    tracker.handle(event("task-sent", "new", t - 5, name=ADD, queue="default"))
    future = "2100-01-01T00:00:00+00:00"
    tracker.handle(event("task-sent", "later", t - 60, name=ADD, queue="low_priority", eta=future))
    assert tracker.oldest_waiting(WORK_QUEUES) == {"high_priority": 0.0, "default": 30.0, "low_priority": 0.0}

    tracker.handle(event("task-started", "old", t, hostname="w@h"))
    assert tracker.oldest_waiting(WORK_QUEUES)["default"] == 5.0
    # The broker and the workers hold nothing of default: the exporter missed "new"'s events.
    tracker.forget_waiting("default", before=t)
    assert tracker.oldest_waiting(WORK_QUEUES)["default"] == 0.0


def test_what_workers_hold_is_counted_by_the_queue_it_came_from() -> None:
    def request(name: str, routing_key: str | None) -> dict[str, Any]:
        return {"name": name, "delivery_info": {"routing_key": routing_key}}

    active = {"w1": [request(ADD, "default"), request(ADD, "high_priority")], "w2": []}
    reserved = {"w1": [request("worker.tasks.batch.long_batch_job", None)]}  # no key: its route
    scheduled = {"w2": [{"eta": "...", "request": request(ADD, "default")}]}
    held = held_by_queue(active) + held_by_queue(reserved) + held_by_queue(scheduled, key="request")
    assert held == {"default": 2, "high_priority": 1, "low_priority": 1}
    assert held_by_queue(None) == {}

    queues = {"w1": [{"name": "high_priority"}], "w2": [{"name": "default"}, {"name": "low_priority"}], "w3": None}
    assert consumers_by_queue(queues) == {"high_priority": 1, "default": 1, "low_priority": 1}


def test_a_live_worker_that_misses_a_broadcast_keeps_its_queues_and_a_stopped_one_does_not() -> None:
    last = {"w1": [{"name": "high_priority"}], "w2": [{"name": "default"}]}
    replies = {"w2": [{"name": "default"}]}
    # w1 beats but did not answer in time: still counted; w2 answered.
    assert with_silent_workers(replies, {"w1", "w2"}, last) == last
    # w1 stopped (offline or silent): its queues are gone.
    assert with_silent_workers(replies, {"w2"}, last) == replies
    assert consumers_by_queue(with_silent_workers(None, set(), last)) == {}


def test_the_exporter_serves_every_name_and_leaves_broker_series_out_while_the_broker_is_down() -> None:
    exporter = Exporter(memory_celery(fast_settings()))
    exporter.events.handle({"type": "worker-heartbeat", "hostname": "w@h", "freq": 2.0, "active": 1})
    exporter.snapshot = Snapshot(
        broker_up=True, depths={"default": 4}, consumers={"default": 2}, unacked={"default": 1},
        dead_letters={"failed": 3, "not_read": 2},
    )  # fmt: skip
    text = generate_latest(exporter.registry).decode()
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    # Counters and histograms appear once they have a sample; the gauges always.
    for gauge in ("celery_worker_up", "celery_worker_tasks_active", "celery_queue_length"):
        assert gauge in names
    assert sample(exporter.registry, "celery_queue_length", queue_name="default") == 4
    assert sample(exporter.registry, "celery_queue_length", queue_name="low_priority") == 0
    assert sample(exporter.registry, "celery_active_worker_count", queue_name="default") == 2
    assert sample(exporter.registry, "brokerstack_queue_unacked", queue="default") == 1
    assert sample(exporter.registry, "brokerstack_dead_letters_by_reason", reason="failed") == 3
    assert sample(exporter.registry, "brokerstack_dead_letters_by_reason", reason="expired") == 0
    assert sample(exporter.registry, "brokerstack_dead_letters_by_reason", reason="not_read") == 2
    assert sample(exporter.registry, "celery_worker_tasks_active", hostname="w@h") == 1

    exporter.snapshot = Snapshot(broker_up=False)
    assert sample(exporter.registry, "brokerstack_exporter_broker_up") == 0
    assert sample(exporter.registry, "celery_queue_length", queue_name="default") is None


def test_the_healthcheck_passes_only_once_the_exporter_consumes_events() -> None:
    exporter = Exporter(memory_celery(fast_settings()))
    server, thread = start_http_server(0, "127.0.0.1", registry=exporter.registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        with pytest.raises(SystemExit, match="not consuming"):
            check(url)
        exporter.on_consuming()
        assert check(url) == "consuming events"
    finally:
        server.shutdown()
        thread.join(timeout=5)
    with pytest.raises(SystemExit, match="unhealthy"):
        check(url)  # nothing listens any more


# --- the API's /metrics ---------------------------------------------------------------------------


def test_api_requests_are_counted_by_route_template_and_status(
    make_memory_api: Callable[..., tuple[TestClient, Celery]],
) -> None:
    api, _ = make_memory_api(fast_settings(api_max_body_bytes=1024))
    assert api.post("/tasks/add", json={"args": [1, 2]}).status_code == 202
    assert api.post("/tasks/add", json={"args": ["x"]}).status_code == 422
    assert api.post("/tasks/add", content=b"{" + b" " * 2048 + b"}").status_code == 413
    assert api.get("/no/such/path").status_code == 404
    text = api.get("/metrics").text
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def requests(route: str, status: str, method: str = "POST") -> float | None:
        labels = (("method", method), ("route", route), ("status", status))
        return found.get(("brokerstack_http_requests_total", labels))

    assert requests("/tasks/{name}", "202") == 1
    assert requests("/tasks/{name}", "422") == 1
    # Refused by the body-size limit before routing: still under its route.
    assert requests("/tasks/{name}", "413") == 1
    assert requests("unmatched", "404", method="GET") == 1
    labels = (("method", "POST"), ("route", "/tasks/{name}"), ("status", "202"))
    assert found[("brokerstack_http_request_duration_seconds_count", labels)] == 1
    # The series the API had before prometheus_client are still there, with their labels.
    before = ("brokerstack_broker_up", "brokerstack_queue_depth", "brokerstack_dead_letters")
    assert {*before, "brokerstack_broker_calls_total"} <= {name for name, _ in found}


# --- grafana ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "refused"),
    [
        ({"ENVIRONMENT": "production", "GRAFANA_ADMIN_PASSWORD": "brokerstack-dev"}, True),
        ({"ENVIRONMENT": "production", "GRAFANA_ADMIN_PASSWORD": "admin"}, True),
        ({"ENVIRONMENT": "production"}, True),
        ({"ENVIRONMENT": "production", "GRAFANA_ADMIN_PASSWORD": "a-real-one-4f9e"}, False),
        ({"ENVIRONMENT": "development", "GRAFANA_ADMIN_PASSWORD": "brokerstack-dev"}, False),
    ],
)
def test_grafana_password_is_refused_in_production_when_it_is_a_development_one(
    environ: dict[str, str], refused: bool
) -> None:
    reason = refused_reason(environ)
    assert (reason is not None) == refused
    if reason:
        assert "GRAFANA_ADMIN_PASSWORD" in reason


# --- the monitoring files against the docs ----------------------------------------------------------


def metric_names(promql: str) -> set[str]:
    """Metric names a PromQL expression reads (identifiers that look like ours or an exporter's)."""
    return set(re.findall(r"\b((?:celery|brokerstack|redis|rabbitmq)_[a-z_]+)\b", promql)) | (
        {"up"} if re.search(r"(^|[^_a-z])up\s*==", promql) else set()
    )


def test_every_metric_the_dashboard_and_the_rules_read_is_documented() -> None:
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "brokerstack.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = (MONITORING / "prometheus" / "rules" / "brokerstack.yml").read_text()
    exprs += re.findall(r"^\s*expr: (.+)$", rules, flags=re.MULTILINE)
    alerts = re.findall(r"^\s*- alert: (\w+)$", rules, flags=re.MULTILINE)
    docs = DOCS.read_text()
    read = {name.removesuffix("_bucket") for expr in exprs for name in metric_names(expr)}
    assert sorted(name for name in read if f"`{name}" not in docs) == []
    assert sorted(alert for alert in alerts if f"### {alert}" not in docs) == []
    for name in CELERY_EXPORTER_NAMES:
        assert f"`{name}" in docs, name
