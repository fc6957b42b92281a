"""Monitoring in the compose stacks (profile ``monitoring``): each stack comes up once with
Prometheus, Alertmanager and the exporters (the stack test_stacks.py then goes on with, see
conftest.py); tasks run through the API (one fails for good) and
Prometheus has them; every query of the Grafana dashboard (there is no Grafana image here, so its
JSON is read and each panel's PromQL is asked of Prometheus) returns data; stopping the workers
fires the no-worker alert. The alert rules pass ``promtool check rules``.

Run with ``pytest tests/compose/test_monitoring.py -m compose``. Prometheus scrapes every 2 s and
every rule's ``for:`` is shortened (PROMETHEUS_SCRAPE_INTERVAL, PROMETHEUS_ALERT_FOR: stack.py's
MONITORING_TEST_ENV) so that the alert fires within seconds; the shipped rules are checked as they are.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.compose.stack import (
    MONITORING_PORT_VARIABLES,
    MONITORING_SERVICES,
    REPO,
    STACKS,
    ComposeStack,
    StackSpec,
    clean_environ,
)
from tests.helpers import wait_for
from worker.topology import WORK_QUEUES

pytestmark = pytest.mark.compose

MONITORING = REPO / "deploy" / "monitoring"
RULES_DIR = MONITORING / "prometheus" / "rules"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "brokerstack.json"
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.3"
ALERTMANAGER_IMAGE = "prom/alertmanager:v0.28.1"
SUCCEEDING_TASKS = 6
#: Prometheus scrape jobs of each stack; every one must be up.
JOBS = {
    "redis": {"prometheus", "alertmanager", "api", "celery", "redis"},
    "rabbitmq": {"prometheus", "alertmanager", "api", "celery", "redis", "rabbitmq", "rabbitmq-queues"},
}


# ``stack`` (one per broker with the profile ``monitoring``, shared with test_stacks.py; this
# module's tests run first on it) and ``docker_compose`` come from conftest.py.


@pytest.fixture
def prometheus(stack: ComposeStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.port('PROMETHEUS_PORT')}/api/v1", timeout=15) as client:
        yield client


def query(prometheus: httpx.Client, expr: str) -> list[dict[str, Any]]:
    response = prometheus.get("/query", params={"query": expr})
    assert response.status_code == 200, f"{expr}: {response.text}"
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def value(prometheus: httpx.Client, expr: str) -> float | None:
    """The single value of a scalar-like query (``sum(...)``), None while it has no data."""
    result = query(prometheus, expr)
    return float(result[0]["value"][1]) if result else None


def eventually(condition: Callable[[], bool], timeout: float, what: Callable[[], str], interval: float = 1) -> None:
    """Poll ``condition`` until true; on timeout fail with ``what()``, evaluated then (it shows
    what was last seen)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what()}")
        time.sleep(interval)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel in the dashboard JSON."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


def enqueue(api: httpx.Client, name: str, **body: Any) -> str:
    response = api.post(f"/tasks/{name}", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def final_state(api: httpx.Client, task_id: str) -> str | None:
    response = api.get(f"/tasks/{task_id}")
    state = response.json().get("state") if response.status_code == 200 else None
    return state if state in ("SUCCESS", "FAILURE") else None


# --- the files (no stack) ---------------------------------------------------------------------------


def test_promtool_and_amtool_accept_the_shipped_files(docker_compose: None) -> None:
    rules = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{RULES_DIR}:/rules:ro", "--entrypoint", "promtool", PROMETHEUS_IMAGE,
         "check", "rules", "/rules/brokerstack.yml"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout
    # Every stack's Prometheus config (HA stacks included), with the rules where it loads them.
    for stack_config in sorted((MONITORING / "prometheus").glob("*.yml")):
        checked = subprocess.run(
            ["docker", "run", "--rm", "-v", f"{MONITORING / 'prometheus'}:/etc/brokerstack/prometheus:ro",
             "-v", f"{RULES_DIR}:/tmp/prometheus/rules:ro", "--entrypoint", "promtool", PROMETHEUS_IMAGE,
             "check", "config", f"/etc/brokerstack/prometheus/{stack_config.name}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert checked.returncode == 0, f"{stack_config.name}: {checked.stdout}{checked.stderr}"
    config = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{MONITORING / 'alertmanager'}:/am:ro", "--entrypoint", "amtool",
         ALERTMANAGER_IMAGE, "check-config", "/am/alertmanager.yml"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.parametrize("spec", STACKS, ids=lambda spec: spec.name)
def test_monitoring_is_opt_in_and_local_only(spec: StackSpec, docker_compose: None, tmp_path) -> None:
    def services(*profiles: str) -> dict[str, Any]:
        env = clean_environ() | {"BROKERSTACK_ENV_FILE": str(tmp_path / "none")}
        env |= {var: str(40100 + index) for index, var in enumerate(MONITORING_PORT_VARIABLES)}
        flags = [arg for profile in profiles for arg in ("--profile", profile)]
        result = subprocess.run(
            ["docker", "compose", "--file", str(spec.path), *flags, "config", "--format", "json"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0 and result.stderr == "", result.stderr
        return dict(json.loads(result.stdout)["services"])

    default, monitoring, dashboards = services(), services("monitoring"), services("dashboards")
    assert not set(MONITORING_SERVICES) & set(default)
    assert set(monitoring) - set(default) == set(MONITORING_SERVICES)
    assert set(dashboards) - set(default) == {*MONITORING_SERVICES, "grafana-check", "grafana"}
    assert monitoring["prometheus"]["image"] == PROMETHEUS_IMAGE
    assert monitoring["alertmanager"]["image"] == ALERTMANAGER_IMAGE
    assert monitoring["redis-exporter"]["image"] == "oliver006/redis_exporter:v1.69.0"
    assert dashboards["grafana"]["image"].startswith("grafana/grafana:")
    published = {}
    for name, service in dashboards.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond localhost"
            published[name] = int(port["published"])
    # Every monitoring port comes from its variable.
    assert {published[s] for s in ("prometheus", "alertmanager", "grafana")} == set(range(40100, 40103))


# --- a stack that runs ------------------------------------------------------------------------------


def test_grafana_refuses_the_development_password_in_production(stack: ComposeStack) -> None:
    def grafana_check(**env: str) -> subprocess.CompletedProcess[str]:
        return stack.compose(
            "run", "--rm", "--no-deps", "grafana-check",
            env=stack.env | {"COMPOSE_PROFILES": "dashboards"} | env, check=False, timeout=120,
        )  # fmt: skip

    refused = grafana_check()  # GRAFANA_ADMIN_PASSWORD unset: the development default
    assert refused.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in refused.stdout + refused.stderr
    assert grafana_check(GRAFANA_ADMIN_PASSWORD="grafana-" + stack.project).returncode == 0


def test_prometheus_has_the_tasks_just_run(stack: ComposeStack, prometheus: httpx.Client) -> None:
    jobs: dict[str, str] = {}

    def every_job_up() -> bool:
        targets = prometheus.get("/targets", params={"state": "active"}).json()["data"]["activeTargets"]
        jobs.clear()
        jobs.update({t["labels"]["job"]: t["health"] for t in targets})
        return set(jobs) == JOBS[stack.spec.name] and set(jobs.values()) == {"up"}

    eventually(every_job_up, 60, lambda: f"every scrape job up (now: {jobs})")
    rendered = stack.compose(
        "exec", "-T", "prometheus", "promtool", "check", "config", "/tmp/prometheus/prometheus.yml"
    )
    assert "SUCCESS" in rendered.stdout + rendered.stderr

    with stack.api() as api:
        ids = [enqueue(api, "add", args=[n, 1]) for n in range(SUCCEEDING_TASKS)]
        failing = enqueue(api, "fail", kwargs={"message": "monitoring test"})

        def all_final() -> dict[str, str | None] | None:
            states = {task_id: final_state(api, task_id) for task_id in [*ids, failing]}
            return states if all(states.values()) else None

        states = wait_for(all_final, 60, "the tasks to finish", interval=0.5)
    assert states[failing] == "FAILURE" and all(states[i] == "SUCCESS" for i in ids)

    add = 'name="worker.tasks.basic.add"'
    expected = {
        f"sum(celery_task_sent_total{{{add}}})": SUCCEEDING_TASKS,
        f"sum(celery_task_received_total{{{add}}})": SUCCEEDING_TASKS,
        f"sum(celery_task_started_total{{{add}}})": SUCCEEDING_TASKS,
        f"sum(celery_task_succeeded_total{{{add}}})": SUCCEEDING_TASKS,
        f"sum(celery_task_runtime_seconds_count{{{add}}})": SUCCEEDING_TASKS,
        'sum(celery_task_failed_total{name="worker.tasks.tools.fail"})': 1,
        'sum(brokerstack_dead_letters_by_reason{reason="failed"})': 1,
        "sum(brokerstack_dead_letters)": 1,
        'sum(brokerstack_http_requests_total{route="/tasks/{name}",method="POST",status="202"})': SUCCEEDING_TASKS + 1,
    }
    seen: dict[str, float | None] = {}

    def all_there() -> bool:
        seen.update({expr: value(prometheus, expr) for expr in expected})
        return seen == {expr: float(count) for expr, count in expected.items()}

    eventually(all_there, 60, lambda: f"Prometheus to have the tasks (has {seen})")
    # The exception label is the type only: one series, whatever the message.
    failed = query(prometheus, 'celery_task_failed_total{name="worker.tasks.tools.fail"}')
    assert [r["metric"]["exception"] for r in failed] == ["InjectedFailure"]
    # Two workers (high, default) and the queues each consumes.
    assert value(prometheus, "sum(celery_worker_up)") == 2
    consumers = {
        r["metric"]["queue_name"]: float(r["value"][1]) for r in query(prometheus, "celery_active_worker_count")
    }
    assert consumers == dict.fromkeys(WORK_QUEUES, 1.0)
    wait_for(lambda: value(prometheus, "sum(celery_queue_length)") == 0, 30, "the queues to be empty", interval=1)

    # What the broker's own exporters add: Redis' memory against maxmemory (1 GB in
    # deploy/redis/redis.conf; the memory alert's input), RabbitMQ's per-queue counts.
    assert value(prometheus, "max(redis_memory_max_bytes)") == 1 << 30
    if stack.spec.name == "rabbitmq":
        per_queue = query(prometheus, "rabbitmq_detailed_queue_messages_unacked")
        assert set(WORK_QUEUES) <= {r["metric"]["queue"] for r in per_queue}


def test_every_dashboard_panel_returns_data(stack: ComposeStack, prometheus: httpx.Client) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    empty: list[str] = []

    def all_answer() -> bool:
        empty[:] = [f"{title}: {expr}" for title, expr in queries if not query(prometheus, expr)]
        return not empty

    eventually(all_answer, 60, lambda: f"every dashboard query to return data (empty: {empty})", interval=2)


def test_stopping_the_workers_fires_the_no_worker_alert(stack: ComposeStack, prometheus: httpx.Client) -> None:
    def firing() -> set[str]:
        alerts = prometheus.get("/alerts").json()["data"]["alerts"]
        return {
            a["labels"]["queue_name"]
            for a in alerts
            if a["labels"]["alertname"] == "BrokerstackNoWorkerConsuming" and a["state"] == "firing"
        }

    # Settled first: an earlier test of this module may have had compose recreate a worker (its
    # new hostname answers the exporter's broadcast a poll later), which can fire the alert briefly.
    wait_for(lambda: firing() == set(), 90, "no no-worker alert while the workers run", interval=1)
    stopped = time.monotonic()
    stack.compose("stop", "--timeout", "30", "worker-high", "worker-default", timeout=120)
    try:
        wait_for(lambda: firing() == set(WORK_QUEUES), 90, "the no-worker alert to fire for every queue", interval=1)
        print(f"[{stack.spec.name}] workers stopped -> alert firing: {time.monotonic() - stopped:.1f} s")
        assert value(prometheus, "sum(celery_worker_up)") == 0

        # Prometheus hands it to Alertmanager.
        alertmanager = f"http://127.0.0.1:{stack.port('ALERTMANAGER_PORT')}/api/v2/alerts"
        wait_for(
            lambda: any(
                a["labels"]["alertname"] == "BrokerstackNoWorkerConsuming" for a in httpx.get(alertmanager).json()
            ),
            60, "Alertmanager to have the alert", interval=1,
        )  # fmt: skip
    finally:
        # The same stack goes on to test_stacks.py's tests (conftest.py): the workers back, healthy.
        stack.compose("start", "worker-high", "worker-default", timeout=120)
        wait_for(stack.all_healthy, 180, "every service to be healthy again", interval=1)
