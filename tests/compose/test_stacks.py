"""The compose stacks, for real: ``docker compose up --build --wait`` of compose.redis.yml and
compose.rabbitmq.yml, tasks through the published API, each worker on its own queues, then the
broker killed and started again while the stack is left to recover by itself.

Run alone with ``pytest tests/compose -m compose`` (``make test-compose``). Every stack gets a
project name, free ports and credentials of its own, runs with ENVIRONMENT=production (its
credentials are not the development ones), and is torn down with ``down -v`` whatever happens.
Measurements go to results/compose/<stack>.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.compose.stack import (
    APP_SERVICES,
    COMPOSE_FILES_SHARED,
    CONFIG_CHECK,
    REPO,
    STACKS,
    ComposeStack,
    StackSpec,
    clean_environ,
    documented_variables,
    interpolated_variables,
)
from tests.helpers import wait_for
from worker.settings import DEVELOPMENT_SECRETS
from worker.topology import WORK_QUEUES

pytestmark = pytest.mark.compose

FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")
#: The issue's bound for a publish while the broker is down (the API's PUBLISH_TIMEOUT is 4 s).
UNAVAILABLE_WITHIN = 5.0
#: Which worker consumes which queue (compose: worker-high -Q high_priority, worker-default the rest).
WORKER_OF_QUEUE = {"high_priority": "worker-high", "default": "worker-default", "low_priority": "worker-default"}
#: Tasks queued while their worker is stopped, then carried across a broker kill.
DURABLE_TASKS = 20
CREDENTIAL_VARIABLES = ("REDIS_PASSWORD", "RABBITMQ_PASSWORD", "API_KEY", "FLOWER_PASSWORD")


# ``stack`` (one per broker, shared with test_monitoring.py) and ``docker_compose`` come from
# conftest.py.


@pytest.fixture
def api(stack: ComposeStack) -> Iterator[httpx.Client]:
    with stack.api() as client:
        yield client


# --- helpers -------------------------------------------------------------------------------------


def enqueue(api: httpx.Client, name: str, **body: Any) -> str:
    response = api.post(f"/tasks/{name}", json=body)
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def task_status(api: httpx.Client, task_id: str) -> dict[str, Any] | None:
    """The task's status once final; None while it is not (or while the backend is away)."""
    try:
        response = api.get(f"/tasks/{task_id}")
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    status = response.json()
    return status if status["state"] in FINAL_STATES else None


def wait_result(api: httpx.Client, task_id: str, timeout: float = 60) -> Any:
    status = wait_for(lambda: task_status(api, task_id), timeout, f"task {task_id} to finish", interval=0.2)
    assert status["state"] == "SUCCESS", status
    return status["result"]


def wait_results(api: httpx.Client, task_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}

    def all_done() -> bool:
        for task_id in task_ids:
            if task_id not in done and (status := task_status(api, task_id)):
                done[task_id] = status
        return len(done) == len(task_ids)

    wait_for(all_done, timeout, f"{len(task_ids)} tasks to finish (done: {len(done)})", interval=0.5)
    return done


def config_json(spec: StackSpec, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    result = subprocess.run(
        ["docker", "compose", "--file", str(spec.path), "config", "--format", "json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


# --- the files themselves (no containers) ---------------------------------------------------------


@pytest.mark.parametrize("spec", STACKS, ids=lambda spec: spec.name)
def test_config_validates_without_warnings(spec: StackSpec, docker_compose: None, tmp_path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    # As on a clean clone (no .env, nothing exported): defaults only.
    config, stderr = config_json(spec, clean_environ() | {"BROKERSTACK_ENV_FILE": str(empty)})
    assert stderr == "", f"docker compose config printed warnings:\n{stderr}"
    services = config["services"]
    assert set(services) == {*spec.services, CONFIG_CHECK}

    # API, workers, beat and Flower run one image; it is built once (by api), never pulled.
    images = {services[name]["image"] for name in APP_SERVICES}
    assert images == {"brokerstack:local"}
    assert [name for name in services if "build" in services[name]] == ["api"]
    assert services["api"]["build"]["dockerfile"] == "deploy/Dockerfile"
    # Brokers pinned to the tags the issue names.
    assert services["redis"]["image"] == "redis:8"
    # The fsync policy comes from REDIS_APPENDFSYNC, everysec unless set.
    assert services["redis"]["command"][-2:] == ["--appendfsync", "everysec"]
    if spec.name == "rabbitmq":
        assert services["rabbitmq"]["image"] == "rabbitmq:4.0-management"
        assert services["rabbitmq"]["hostname"] == "rabbitmq"

    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond localhost"
        if name == CONFIG_CHECK:
            assert service["restart"] == "no" and service["environment"]["BROKER_PROFILE"] == spec.name
            continue
        assert "healthcheck" in service and service["healthcheck"]["test"], f"{name} has no healthcheck"
        if name in APP_SERVICES:
            assert services[name]["environment"]["BROKER_PROFILE"] == spec.name
            # The app starts only once the brokers are healthy and the settings check passed.
            assert {dep: d["condition"] for dep, d in service["depends_on"].items()} == {
                **{broker: "service_healthy" for broker in spec.services if broker not in APP_SERVICES},
                CONFIG_CHECK: "service_completed_successfully",
            }
    assert "guest" not in json.dumps(config)
    if spec.name == "rabbitmq":
        assert services["rabbitmq"]["healthcheck"]["test"] == [
            "CMD", "rabbitmq-diagnostics", "-q", "check_port_connectivity"
        ]  # fmt: skip


@pytest.mark.parametrize("spec", STACKS, ids=lambda spec: spec.name)
def test_every_published_port_is_overridable(spec: StackSpec, docker_compose: None, tmp_path) -> None:
    overrides = {var: str(40000 + index) for index, var in enumerate(spec.port_variables)}
    config, stderr = config_json(spec, clean_environ() | overrides | {"BROKERSTACK_ENV_FILE": str(tmp_path / "none")})
    assert stderr == ""
    published = {int(port["published"]) for service in config["services"].values() for port in service.get("ports", [])}
    assert published == {int(port) for port in overrides.values()}


def test_env_example_documents_every_variable() -> None:
    used = interpolated_variables(*(spec.path for spec in STACKS), *COMPOSE_FILES_SHARED)
    assert used, "found no ${VAR} in the compose files"
    assert sorted(used - set(documented_variables())) == []


@pytest.mark.parametrize("spec", STACKS, ids=lambda spec: spec.name)
def test_default_credentials_are_development_secrets(spec: StackSpec, docker_compose: None, tmp_path) -> None:
    """What ``up`` uses when nothing is set is exactly what the production guard refuses."""
    config, _ = config_json(spec, clean_environ() | {"BROKERSTACK_ENV_FILE": str(tmp_path / "none")})
    env = config["services"]["api"]["environment"]
    assert env["ENVIRONMENT"] == "development"
    assert env["API_KEY"] in DEVELOPMENT_SECRETS
    assert urlsplit(env["REDIS_URL"]).password in DEVELOPMENT_SECRETS
    if spec.name == "rabbitmq":
        assert urlsplit(env["RABBITMQ_URL"]).password in DEVELOPMENT_SECRETS
        assert urlsplit(env["RABBITMQ_URL"]).username == "brokerstack"
    flower_auth = config["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert flower_auth.partition(":")[2] in DEVELOPMENT_SECRETS


# --- a stack that runs ---------------------------------------------------------------------------


def test_stack_is_up_healthy_and_production_shaped(stack: ComposeStack, api: httpx.Client) -> None:
    assert stack.all_healthy()
    infos = stack.inspect_services(stack.spec.services)
    # One image for the API, the workers, beat and Flower, run as a non-root user.
    assert len({infos[s]["Image"] for s in APP_SERVICES}) == 1
    for service in APP_SERVICES:
        assert infos[service]["Config"]["User"] not in ("", "root", "0"), service
    for service, info in infos.items():
        for bindings in (info["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or []:
                assert binding["HostIp"] == "127.0.0.1", f"{service} publishes on {binding}"

    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["profile"] == stack.spec.name
    # Mutating endpoints need the key.
    assert httpx.post(f"{api.base_url}/tasks/noop", json={}).status_code == 401


def test_production_refuses_the_development_credentials(stack: ComposeStack) -> None:
    """``ENVIRONMENT=production`` with the compose defaults: every app container exits at once
    with one line naming what to set."""
    env = {k: v for k, v in stack.env.items() if k not in CREDENTIAL_VARIABLES} | {"ENVIRONMENT": "production"}
    broker_variable = "REDIS_URL" if stack.spec.name == "redis" else "RABBITMQ_URL"
    expected = {
        "api": broker_variable,
        "worker-default": broker_variable,
        "beat": broker_variable,
        "flower": "FLOWER_PASSWORD",
    }
    # Five one-off containers, each starting the app's Python: run side by side (one by one they
    # took 40-90 s on a loaded 2-core machine).
    with ThreadPoolExecutor(max_workers=len(expected) + 1) as pool:
        runs = {
            service: pool.submit(stack.compose, "run", "--rm", "--no-deps", service, check=False, timeout=120, env=env)
            for service in (CONFIG_CHECK, *expected)
        }
        results = {service: run.result() for service, run in runs.items()}
    # The check `up` waits for names every development credential at once (issue 11, 6).
    result = results[CONFIG_CHECK]
    messages = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("brokerstack:")]
    assert result.returncode != 0 and len(messages) == 1, (result.stdout, result.stderr)
    assert broker_variable in messages[0] and "API_KEY" in messages[0], messages[0]
    for service, variable in expected.items():
        result = results[service]
        output = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        messages = [line for line in output if line.startswith("brokerstack:")]
        assert result.returncode != 0, f"{service} started with development credentials:\n{output}"
        assert len(messages) == 1 and "Traceback" not in result.stderr, f"{service}: {output}"
        assert "ENVIRONMENT=production" in messages[0] and variable in messages[0], messages[0]


def test_tasks_through_the_published_api(api: httpx.Client) -> None:
    task_ids = [enqueue(api, "add", args=[n, 100]) for n in range(5)]
    assert [wait_result(api, task_id) for task_id in task_ids] == [n + 100 for n in range(5)]


def test_each_worker_consumes_only_its_queues(stack: ComposeStack, api: httpx.Client) -> None:
    # Explicit queues: the task reports the queue it came from and the worker that ran it.
    sent = [(queue, enqueue(api, "task_with_info", queue=queue)) for queue in WORK_QUEUES for _ in range(3)]
    for queue, task_id in sent:
        info = wait_result(api, task_id)
        assert info["queue"] == queue
        assert info["hostname"].startswith(f"{WORKER_OF_QUEUE[queue]}@"), (queue, info["hostname"])

    # Default routes (send_email -> high_priority, add -> default, long_batch_job ->
    # low_priority): Flower, fed by the workers' task events, says which worker ran each.
    routed = {
        "high_priority": enqueue(api, "send_email", args=["u-1", "someone@example.com"]),
        "default": enqueue(api, "add", args=[1, 2]),
        "low_priority": enqueue(api, "long_batch_job", kwargs={"items": 1, "seconds_per_item": 0}),
    }
    with stack.flower() as flower:
        for queue, task_id in routed.items():
            wait_result(api, task_id)

            def worker_of(task_id: str = task_id) -> str | None:
                response = flower.get(f"/api/task/info/{task_id}")
                return response.json().get("worker") if response.status_code == 200 else None

            worker = wait_for(worker_of, 30, f"Flower to know who ran {task_id}", interval=0.5)
            assert worker.startswith(f"{WORKER_OF_QUEUE[queue]}@"), (queue, worker)
        workers = flower.get("/api/workers", params={"refresh": "true"}).json()
        assert {name.split("@")[0] for name in workers} == {"worker-high", "worker-default"}
        assert flower.get("/healthcheck").text == "OK"
        assert httpx.get(f"{flower.base_url}/api/workers").status_code == 401


def test_flower_broker_page_shows_the_queue_lengths(stack: ComposeStack, api: httpx.Client) -> None:
    """The runbook sends operators to Flower's Broker page: it must answer on both stacks (on Redis
    it was a 404, "'redis' broker is not supported") and count every priority of a queue."""
    priorities = (0, 5, 9)  # on Redis each is a list of its own; Flower's default steps miss 5
    stack.compose("stop", "worker-high", timeout=120)
    try:
        task_ids = [enqueue(api, "noop", queue="high_priority", priority=p) for p in priorities]
        with stack.flower() as flower:

            def high_priority_length() -> int | None:
                response = flower.get("/api/queues/length")
                assert response.status_code == 200, response.text
                lengths = {q["name"]: q["messages"] for q in response.json()["active_queues"]}
                assert set(WORK_QUEUES) <= set(lengths), lengths
                # (RabbitMQ's management statistics, which Flower reads there, lag by up to 5 s.)
                return lengths["high_priority"] if lengths["high_priority"] >= len(priorities) else None

            assert wait_for(high_priority_length, 30, "Flower to count the waiting tasks", interval=1) == len(
                priorities
            )
            page = flower.get("/broker")
            assert page.status_code == 200, page.text[:500]
            assert all(f'<tr id="{queue}">' in page.text for queue in WORK_QUEUES)
            assert stack.env["REDIS_PASSWORD"] not in page.text and stack.env["RABBITMQ_PASSWORD"] not in page.text
    finally:
        stack.compose("start", "worker-high", timeout=120)
    wait_results(api, task_ids, timeout=120)
    wait_for(stack.all_healthy, 180, "every service to be healthy again", interval=1)


def test_redis_runs_the_configured_fsync_policy(stack: ComposeStack) -> None:
    """REDIS_APPENDFSYNC from the environment (.env) reaches the running Redis (the stacks here
    run with "always", not the default)."""
    result = stack.compose("exec", "-T", "redis", "redis-cli", "--raw", "config", "get", "appendfsync")
    assert result.stdout.split() == ["appendfsync", stack.env["REDIS_APPENDFSYNC"]]
    assert stack.env["REDIS_APPENDFSYNC"] != "everysec"


def test_a_wrong_fsync_policy_stops_redis_at_start(stack: ComposeStack) -> None:
    env = stack.env | {"REDIS_APPENDFSYNC": "sometimes"}
    result = stack.compose("run", "--rm", "--no-deps", "-T", "redis", check=False, timeout=120, env=env)
    assert result.returncode != 0
    assert "appendfsync" in result.stdout + result.stderr


def test_task_data_needs_the_key(stack: ComposeStack, api: httpx.Client) -> None:
    """With API_KEY set (as in production) no task data leaves the API without it."""
    task_id = enqueue(api, "add", args=[1, 2])
    wait_result(api, task_id)
    for path in (f"/tasks/{task_id}", "/dlq"):
        assert httpx.get(f"{api.base_url}{path}", timeout=15).status_code == 401, path
    for path in ("/healthz", "/readyz", "/metrics", "/docs"):
        assert httpx.get(f"{api.base_url}{path}", timeout=15).status_code == 200, path
    assert api.get("/tasks/00000000-0000-0000-0000-000000000000").status_code == 404


def test_a_failing_task_reaches_the_dlq_and_replays_once_fixed(stack: ComposeStack, api: httpx.Client) -> None:
    def cli(*args: str) -> str:
        return stack.compose("exec", "-T", "api", "python", "-m", "services.cli", *args, timeout=120).stdout

    def dead_letters() -> list[dict[str, Any]]:
        return json.loads(cli("dlq", "list", "--json"))

    cli("fakes", "mail-server", "down")
    try:
        task_id = enqueue(api, "send_email", args=["u-dlq", "dead.letter@example.com"])
        [letter] = wait_for(
            lambda: [r for r in dead_letters() if r["task_id"] == task_id], 120, "the dead letter", interval=2
        )
    finally:
        cli("fakes", "mail-server", "up")  # the fix
    assert (letter["reason"], letter["queue"]) == ("failed", "high_priority")
    assert letter["exception"] == "EmailDeliveryError: mail server down"
    replayed = re.search(r"-> task (\S+) on high_priority", cli("dlq", "replay", task_id))
    assert replayed, "no replay line"
    assert wait_result(api, replayed.group(1))["status"] == "sent"
    assert task_id not in {r["task_id"] for r in dead_letters()}


def test_rabbitmq_has_its_definitions_and_no_guest(stack: ComposeStack) -> None:
    if stack.spec.name != "rabbitmq":
        pytest.skip("RabbitMQ stack only")
    with stack.rabbitmq_management() as management:
        assert [user["name"] for user in management.get("/users").json()] == ["brokerstack"]
        assert [vhost["name"] for vhost in management.get("/vhosts").json()] == ["brokerstack"]
        policies = {p["name"]: p for p in management.get("/policies/brokerstack").json()}
        assert policies["dead-letters-bounded"]["definition"]["max-length"] > 0
        # The workers declare the dead-letter queue when ready; the policy applies to it.
        dead_letters = wait_for(
            lambda: (
                (r := management.get("/queues/brokerstack/brokerstack.dead_letters")).status_code == 200 and r.json()
            ),
            30,
            "the dead-letter queue",
            interval=0.5,
        )
        assert dead_letters["durable"] is True and dead_letters["policy"] == "dead-letters-bounded"
        assert management.get("/queues/brokerstack/default").json()["durable"] is True
    for user, password in (("guest", "guest"), ("brokerstack", "brokerstack-dev")):
        with stack.rabbitmq_management(user, password) as management:
            assert management.get("/whoami").status_code == 401, (user, password)
    timeout = stack.compose(
        "exec", "-T", "rabbitmq", "rabbitmqctl", "eval", "application:get_env(rabbit, consumer_timeout)."
    )
    assert timeout.stdout.strip() == "{ok,1800000}"
    metrics = httpx.get(f"http://127.0.0.1:{stack.port('RABBITMQ_PROMETHEUS_PORT')}/metrics", timeout=15)
    assert metrics.status_code == 200 and "rabbitmq_" in metrics.text


def test_broker_restart_the_stack_recovers_by_itself(stack: ComposeStack, api: httpx.Client) -> None:
    broker = stack.spec.broker
    assert wait_result(api, enqueue(api, "add", args=[1, 1])) == 2
    before = stack.restart_fingerprint()
    observed: dict[str, Any] = {}

    stack.compose("kill", broker)
    assert stack.health(broker) == "exited"
    latencies = []
    for _ in range(3):
        started = time.monotonic()
        response = api.post("/tasks/add", json={"args": [2, 3]})
        latencies.append(round(time.monotonic() - started, 2))
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "broker_unavailable"
    assert max(latencies) <= UNAVAILABLE_WITHIN, latencies
    assert api.get("/readyz").status_code == 503
    observed["api_503_seconds"] = latencies
    assert stack.health(broker) == "exited", "something restarted the killed broker"

    started = time.monotonic()
    stack.compose("start", broker)

    def accepted() -> str | None:
        try:
            response = api.post("/tasks/add", json={"args": [2, 3]})
        except httpx.TransportError:
            return None
        return response.json()["task_id"] if response.status_code == 202 else None

    task_id = wait_for(accepted, 90, "the API to accept tasks again", interval=0.25)
    observed["api_accepts_again_after_start_seconds"] = round(time.monotonic() - started, 1)
    assert wait_result(api, task_id, timeout=120) == 5
    observed["first_task_done_after_start_seconds"] = round(time.monotonic() - started, 1)
    # Both workers are back on their queues.
    for queue in WORK_QUEUES:
        info = wait_result(api, enqueue(api, "task_with_info", queue=queue), timeout=120)
        assert info["hostname"].startswith(f"{WORKER_OF_QUEUE[queue]}@")
    observed["all_queues_served_after_start_seconds"] = round(time.monotonic() - started, 1)
    wait_for(stack.all_healthy, 180, "every service to be healthy again", interval=1)
    observed["all_healthy_after_start_seconds"] = round(time.monotonic() - started, 1)

    # Nobody restarted anything but the broker: same containers, same start times.
    assert stack.restart_fingerprint() == before
    observed["app_containers_restarted"] = 0
    stack.record["broker_restart"] = observed
    print(f"\n[{stack.spec.name}] broker restart: {observed}")


def queued_in_broker(stack: ComposeStack, queue: str) -> int:
    if stack.spec.name == "rabbitmq":
        with stack.rabbitmq_management() as management:
            return management.get(f"/queues/brokerstack/{queue}").json().get("messages", 0)
    # Redis: kombu keeps one list per priority step, all named after the queue.
    script = (
        "local n = 0 for _, k in ipairs(redis.call('keys', ARGV[1] .. '*')) do "
        "if redis.call('type', k).ok == 'list' then n = n + redis.call('llen', k) end end return n"
    )
    result = stack.compose("exec", "-T", "redis", "redis-cli", "--no-raw", "eval", script, "0", queue)
    return int(result.stdout.strip().removeprefix("(integer) "))


def test_queued_tasks_survive_a_broker_kill(stack: ComposeStack, api: httpx.Client) -> None:
    """Durable queues, persistent messages and publisher confirms on RabbitMQ (the AOF on Redis):
    tasks the API accepted while their worker was away outlive a killed broker."""
    broker = stack.spec.broker
    stack.compose("stop", "worker-default", timeout=120)
    try:
        task_ids = [enqueue(api, "add", args=[n, 1000]) for n in range(DURABLE_TASKS)]
        in_queue = wait_for(
            lambda: (n := queued_in_broker(stack, "default")) >= DURABLE_TASKS and n,
            30,
            f"{DURABLE_TASKS} messages in the default queue",
            interval=1,
        )
        stack.compose("kill", broker)
        started = time.monotonic()
        stack.compose("start", broker)
        wait_for(lambda: stack.health(broker) == "healthy", 120, f"{broker} to be healthy", interval=0.5)
        # (RabbitMQ's management statistics lag by up to 5 s after a start.)
        deadline = time.monotonic() + 20
        while (in_queue_after_restart := queued_in_broker(stack, "default")) < DURABLE_TASKS:
            if time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        stack.compose("start", "worker-default", timeout=120)
    done = wait_results(api, task_ids, timeout=180)
    completed = sum(1 for status in done.values() if status["state"] == "SUCCESS")
    stack.record["durable_tasks"] = {
        "enqueued_202": len(task_ids),
        "in_queue_before_kill": in_queue,
        "in_queue_after_restart": in_queue_after_restart,
        "completed": completed,
        "lost": len(task_ids) - completed,
        "all_done_after_broker_start_seconds": round(time.monotonic() - started, 1),
    }
    print(f"\n[{stack.spec.name}] queued tasks across a broker kill: {stack.record['durable_tasks']}")
    # (At least: beat's heartbeat may have joined them in the default queue.)
    assert in_queue_after_restart >= DURABLE_TASKS
    assert completed == DURABLE_TASKS
    assert sorted(status["result"] for status in done.values()) == [n + 1000 for n in range(DURABLE_TASKS)]
    wait_for(stack.all_healthy, 180, "every service to be healthy again", interval=1)


def test_workers_scale_out(stack: ComposeStack, api: httpx.Client) -> None:
    """README's ``--scale worker-default=2``: both replicas healthy, each with a node name of its
    own, both seen by Flower."""
    stack.compose(
        "up", "--detach", "--no-recreate", "--scale", "worker-default=2", "--wait", "--wait-timeout", "120", timeout=300
    )  # fmt: skip
    assert len(stack.container_ids("worker-default")) == 2
    with stack.flower() as flower:

        def default_workers() -> set[str] | None:
            names = {
                n
                for n in flower.get("/api/workers", params={"refresh": "true"}).json()
                if n.startswith("worker-default@")
            }
            return names if len(names) == 2 else None

        wait_for(default_workers, 60, "Flower to see two worker-default nodes", interval=1)
    assert wait_result(api, enqueue(api, "add", args=[20, 22])) == 42
