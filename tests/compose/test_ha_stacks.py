"""The highly available compose stacks, for real: compose.redis-sentinel.yml (one primary, two
replicas, three Sentinels) and compose.rabbitmq-cluster.yml (three RabbitMQ nodes, quorum queues).

Each is brought up once (``up --build --wait``) on its own project name, free ports and credentials,
with ENVIRONMENT=production; tasks go through the published API; then the Redis primary / the
RabbitMQ node the clients are connected to is killed (SIGKILL) and tasks must keep completing with
no other container restarted; the killed one is started again and rejoins. Run with
``pytest tests/compose/test_ha_stacks.py -m compose``. Measurements go to results/compose/<stack>.json.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: a dependency of schemathesis (dev extra)

from lab.harness.results import results_dir
from tests.compose.stack import (
    APP_SERVICES,
    CONFIG_CHECK,
    HA_SECRET_VARIABLES,
    HA_STACKS,
    MONITORING_PORT_VARIABLES,
    RABBITMQ_MANAGEMENT_PORT_OF,
    RABBITMQ_NODES,
    REDIS_NODES,
    REPO,
    SENTINELS,
    ComposeStack,
    StackSpec,
    clean_environ,
    documented_variables,
    interpolated_variables,
    stack_up,
)
from tests.compose.test_monitoring import ALERTMANAGER_IMAGE, MONITORING, MONITORING_SERVICES, PROMETHEUS_IMAGE
from tests.compose.test_stacks import (
    CREDENTIAL_VARIABLES,
    config_json,
    enqueue,
    task_status,
    wait_result,
    wait_results,
)
from tests.helpers import wait_for
from worker.settings import DEVELOPMENT_SECRETS, url_parts
from worker.topology import WORK_QUEUES

pytestmark = pytest.mark.compose

RESULTS_DIR = results_dir() / "compose"
#: Tasks enqueued just before the kill (in the broker or running when it dies), then counted.
IN_FLIGHT_TASKS = 20
#: Tasks the API must accept after the kill (it may answer 503 while Sentinel fails over).
AFTER_KILL_TASKS = 20
SENTINEL_MASTER = "mymaster"
VHOST = "brokerstack"
CLUSTER_ENTRYPOINT = REPO / "deploy" / "rabbitmq" / "cluster-entrypoint.sh"


@pytest.fixture(scope="module", params=HA_STACKS, ids=lambda spec: spec.name)
def stack(request: pytest.FixtureRequest, docker_compose: None) -> Iterator[ComposeStack]:
    """One HA stack, up and healthy, for all the tests of this module; always ``down -v`` after."""
    with stack_up(
        request.param,
        RESULTS_DIR,
        REDIS_SENTINEL_PASSWORD="sentinel-" + secrets.token_hex(8),
        RABBITMQ_CLUSTER_COOKIE="cookie-" + secrets.token_hex(16),
    ) as stack:
        yield stack


@pytest.fixture
def api(stack: ComposeStack) -> Iterator[httpx.Client]:
    with stack.api() as client:
        yield client


# --- asking the brokers -------------------------------------------------------------------------


def sentinel_primary(stack: ComposeStack, sentinel: str) -> str | None:
    """The primary's host name as ``sentinel`` names it (None if it does not answer)."""
    result = stack.compose(
        "exec", "-T", sentinel, "redis-cli", "-p", "26379", "--raw",
        "sentinel", "get-master-addr-by-name", SENTINEL_MASTER, check=False, timeout=60,
    )  # fmt: skip
    lines = result.stdout.split()
    return lines[0] if result.returncode == 0 and len(lines) == 2 else None


def redis_replication(stack: ComposeStack, node: str) -> dict[str, str]:
    result = stack.compose("exec", "-T", node, "redis-cli", "info", "replication", check=False, timeout=60)
    return dict(line.split(":", 1) for line in result.stdout.split() if ":" in line)


def running_nodes(stack: ComposeStack, via: str) -> list[str]:
    """The cluster's running members as node ``via`` sees them."""
    result = stack.compose(
        "exec", "-T", via, "rabbitmq-diagnostics", "-q", "cluster_status", "--formatter", "json", timeout=90
    )  # fmt: skip
    return sorted(json.loads(result.stdout)["running_nodes"])


def management(stack: ComposeStack, node: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{stack.port(RABBITMQ_MANAGEMENT_PORT_OF[node])}/api",
        auth=("brokerstack", stack.env["RABBITMQ_PASSWORD"]),
        timeout=15,
    )


def queue_leaders(stack: ComposeStack, via: str) -> dict[str, str]:
    with management(stack, via) as client:
        return {queue: client.get(f"/queues/{VHOST}/{queue}").json().get("leader", "") for queue in WORK_QUEUES}


def connection_nodes(stack: ComposeStack, via: str) -> Counter[str]:
    """How many client connections each node holds (node name without ``rabbit@``)."""
    with management(stack, via) as client:
        return Counter(c["node"].removeprefix("rabbit@") for c in client.get("/connections").json())


def everything_but(stack: ComposeStack, *services: str) -> tuple[str, ...]:
    return tuple(s for s in stack.spec.services if s not in services)


# --- the files themselves (no containers) ---------------------------------------------------------


@pytest.mark.parametrize("spec", HA_STACKS, ids=lambda spec: spec.name)
def test_config_validates_and_is_production_shaped(spec: StackSpec, docker_compose: None, tmp_path: Path) -> None:
    config, stderr = config_json(spec, clean_environ() | {"BROKERSTACK_ENV_FILE": str(tmp_path / "none")})
    assert stderr == "", f"docker compose config printed warnings:\n{stderr}"
    services = config["services"]
    assert set(services) == {*spec.services, CONFIG_CHECK}
    assert {services[name]["image"] for name in APP_SERVICES} == {"brokerstack:local"}
    brokers = [name for name in spec.services if name not in APP_SERVICES]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond localhost"
        if name == CONFIG_CHECK:
            continue
        assert service["healthcheck"]["test"], f"{name} has no healthcheck"
        if name in APP_SERVICES:
            # The app starts once every node is healthy and the settings check passed.
            assert {dep: d["condition"] for dep, d in service["depends_on"].items()} == {
                **{broker: "service_healthy" for broker in brokers},
                CONFIG_CHECK: "service_completed_successfully",
            }, name
        elif name in (*REDIS_NODES, *SENTINELS, *RABBITMQ_NODES):
            # A fixed host name per node: what the sentinels announce / the Erlang node name.
            assert service["hostname"] == name
    assert "guest" not in json.dumps(config)
    env = services["api"]["environment"]
    if spec.name == "redis-sentinel":
        # No Redis or Sentinel port leaves the compose network; the app asks every sentinel.
        assert not any(services[name].get("ports") for name in (*REDIS_NODES, *SENTINELS))
        assert [urlsplit(u).hostname for u in url_parts(env["REDIS_URL"])] == list(SENTINELS)
        assert {urlsplit(u).scheme for u in url_parts(env["REDIS_URL"])} == {"sentinel"}
        assert env["REDIS_SENTINEL_MASTER"] == SENTINEL_MASTER and env["BROKER_PROFILE"] == "redis"
        for node in REDIS_NODES:
            assert services[node]["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -qx PONG"]
    else:
        assert [urlsplit(u).hostname for u in url_parts(env["RABBITMQ_URL"])] == list(RABBITMQ_NODES)
        assert env["RABBITMQ_QUEUE_TYPE"] == "quorum" and env["BROKER_PROFILE"] == "rabbitmq"
        cluster_conf = (REPO / "deploy" / "rabbitmq" / "cluster.conf").read_text()
        assert "cluster_formation.peer_discovery_backend = classic_config" in cluster_conf
        for node in RABBITMQ_NODES:
            assert f"= rabbit@{node}\n" in cluster_conf
            assert services[node]["image"] == "rabbitmq:4.0-management"
            assert services[node]["healthcheck"]["test"] == [
                "CMD", "rabbitmq-diagnostics", "-q", "check_port_connectivity"
            ]  # fmt: skip


@pytest.mark.parametrize("spec", HA_STACKS, ids=lambda spec: spec.name)
def test_every_published_port_is_overridable(spec: StackSpec, docker_compose: None, tmp_path: Path) -> None:
    overrides = {var: str(41000 + index) for index, var in enumerate(spec.port_variables)}
    config, stderr = config_json(spec, clean_environ() | overrides | {"BROKERSTACK_ENV_FILE": str(tmp_path / "none")})
    assert stderr == ""
    published = [int(port["published"]) for service in config["services"].values() for port in service.get("ports", [])]
    assert sorted(published) == sorted(int(port) for port in overrides.values())


def test_env_example_documents_every_variable() -> None:
    used = interpolated_variables(*(spec.path for spec in HA_STACKS))
    assert {"REDIS_SENTINEL_PASSWORD", "RABBITMQ_CLUSTER_COOKIE", "RABBITMQ_NODE3_PORT"} <= used
    assert sorted(used - set(documented_variables())) == []


def profile_services(spec: StackSpec, tmp_path: Path, *profiles: str) -> dict[str, Any]:
    """The services ``docker compose config`` gives with these profiles, monitoring ports set."""
    env = clean_environ() | {"BROKERSTACK_ENV_FILE": str(tmp_path / "none")}
    env |= {var: str(41100 + index) for index, var in enumerate(MONITORING_PORT_VARIABLES)}
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = subprocess.run(
        ["docker", "compose", "--file", str(spec.path), *flags, "config", "--format", "json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return dict(json.loads(result.stdout)["services"])


def scrape_hosts(config: dict[str, Any]) -> dict[str, set[str]]:
    """Per scrape job, the host names Prometheus reaches: each target's, or on a multi-target job
    (``/scrape``) the targets the exporter is asked for and the exporter itself."""
    hosts: dict[str, set[str]] = {}
    for job in config["scrape_configs"]:
        targets = [t for group in job.get("static_configs", []) for t in group["targets"]]
        names = {urlsplit(t if "//" in t else f"//{t}").hostname or "" for t in targets}
        for relabel in job.get("relabel_configs", []):
            if relabel.get("target_label") == "__address__":
                names.add(urlsplit("//" + relabel["replacement"]).hostname or "")
        hosts[job["job_name"]] = names
    return hosts


@pytest.mark.parametrize("spec", HA_STACKS, ids=lambda spec: spec.name)
def test_monitoring_is_wired_as_in_the_single_node_stacks(
    spec: StackSpec, docker_compose: None, tmp_path: Path
) -> None:
    """The ``monitoring`` / ``dashboards`` profiles add the single-node stacks' services, Prometheus
    loads this stack's config, and every host that config scrapes is a service of the stack."""
    default = profile_services(spec, tmp_path)
    monitoring = profile_services(spec, tmp_path, "monitoring")
    dashboards = profile_services(spec, tmp_path, "dashboards")
    assert not set(MONITORING_SERVICES) & set(default)
    assert set(monitoring) - set(default) == set(MONITORING_SERVICES)
    assert set(dashboards) - set(default) == {*MONITORING_SERVICES, "grafana-check", "grafana"}
    assert monitoring["prometheus"]["image"] == PROMETHEUS_IMAGE
    assert monitoring["alertmanager"]["image"] == ALERTMANAGER_IMAGE
    # The Prometheus service's command names the config entrypoint.sh renders: this stack's.
    assert monitoring["prometheus"]["command"] == [spec.name]
    config = yaml.safe_load((MONITORING / "prometheus" / f"{spec.name}.yml").read_text())
    assert config["global"]["external_labels"]["stack"] == spec.name
    hosts = scrape_hosts(config)
    for job, names in hosts.items():
        assert names <= {*monitoring, "localhost"}, f"job {job} scrapes {names - set(monitoring)}: not in the stack"
    # The task exporter reaches the broker as the app does (the same URLs, settings and dependencies).
    api, exporter = monitoring["api"], monitoring["task-exporter"]
    broker_env = {k: v for k, v in api["environment"].items() if k.startswith(("BROKER_", "REDIS_", "RABBITMQ_"))}
    assert broker_env.items() <= exporter["environment"].items()
    assert exporter["depends_on"] == api["depends_on"]
    redis_exporter = monitoring["redis-exporter"]
    if spec.name == "redis-sentinel":
        # Every node, whichever is primary: the exporter is asked for each (multi-target), and
        # watches no single Redis of its own.
        assert hosts["redis"] == {*REDIS_NODES, "redis-exporter"}
        assert redis_exporter["environment"]["REDIS_ADDR"] == ""
        assert set(redis_exporter["depends_on"]) == set(REDIS_NODES)
    else:
        assert hosts["rabbitmq"] == hosts["rabbitmq-queues"] == set(RABBITMQ_NODES)
        assert urlsplit(redis_exporter["environment"]["REDIS_ADDR"]).hostname == "redis"
    # Local only, every monitoring port from its variable.
    published = {}
    for name, service in dashboards.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond localhost"
            published[name] = int(port["published"])
    assert {published[s] for s in ("prometheus", "alertmanager", "grafana")} == set(range(41100, 41103))


@pytest.mark.parametrize("spec", HA_STACKS, ids=lambda spec: spec.name)
def test_default_credentials_are_development_secrets(spec: StackSpec, docker_compose: None, tmp_path: Path) -> None:
    """What ``up`` uses when nothing is set is exactly what production refuses."""
    config, _ = config_json(spec, clean_environ() | {"BROKERSTACK_ENV_FILE": str(tmp_path / "none")})
    services = config["services"]
    env = services["api"]["environment"]
    if spec.name == "redis-sentinel":
        assert {urlsplit(u).password for u in url_parts(env["REDIS_URL"])} <= DEVELOPMENT_SECRETS
        assert env["REDIS_SENTINEL_PASSWORD"] in DEVELOPMENT_SECRETS
        for sentinel in SENTINELS:
            assert services[sentinel]["environment"]["REDIS_SENTINEL_PASSWORD"] == env["REDIS_SENTINEL_PASSWORD"]
    else:
        assert {urlsplit(u).password for u in url_parts(env["RABBITMQ_URL"])} <= DEVELOPMENT_SECRETS
        for node in RABBITMQ_NODES:
            assert services[node]["environment"]["RABBITMQ_CLUSTER_COOKIE"] in DEVELOPMENT_SECRETS


@pytest.mark.parametrize("cookie", sorted(DEVELOPMENT_SECRETS))
def test_cluster_nodes_refuse_a_development_cookie_in_production(cookie: str, tmp_path: Path) -> None:
    """cluster-entrypoint.sh stops before it writes anything (run here by sh, no container)."""
    env = {"PATH": "/usr/bin:/bin", "ENVIRONMENT": "production", "RABBITMQ_CLUSTER_COOKIE": cookie}
    result = subprocess.run(["sh", str(CLUSTER_ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "brokerstack: configuration error: ENVIRONMENT=production refuses the development "
        "RABBITMQ_CLUSTER_COOKIE: set your own"
    )
    for refused in ({"RABBITMQ_CLUSTER_COOKIE": ""}, {"RABBITMQ_CLUSTER_COOKIE": "a cookie;rm -rf"}):
        result = subprocess.run(
            ["sh", str(CLUSTER_ENTRYPOINT)], env=env | refused, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 1 and "RABBITMQ_CLUSTER_COOKIE" in result.stderr


# --- a stack that runs ---------------------------------------------------------------------------
# Each HA stack takes 2-6 minutes to come up and fail over on a 2-core machine: these run with
# `make test-compose` (and `make test-slow`), not in the default suite.


@pytest.mark.slow
def test_stack_is_up_healthy_and_formed(stack: ComposeStack, api: httpx.Client) -> None:
    assert stack.all_healthy()
    for service in stack.spec.services:
        for bindings in (stack.inspect(service)["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or []:
                assert binding["HostIp"] == "127.0.0.1", f"{service} publishes on {binding}"
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    if stack.spec.name == "redis-sentinel":
        assert ready.json()["profile"] == "redis"
        # Every sentinel names the first node; it has both replicas, in sync.
        assert {sentinel_primary(stack, s) for s in SENTINELS} == {"redis-1"}
        replication = wait_for(
            lambda: (r := redis_replication(stack, "redis-1")).get("connected_slaves") == "2" and r,
            60,
            "two replicas on redis-1",
            interval=1,
        )
        assert replication["role"] == "master"
        for replica in ("redis-2", "redis-3"):
            assert redis_replication(stack, replica)["master_host"] == "redis-1"
        quorum = stack.compose(
            "exec", "-T", "sentinel-1", "redis-cli", "-p", "26379", "sentinel", "ckquorum", "mymaster"
        )
        assert quorum.stdout.startswith("OK 3 usable Sentinels"), quorum.stdout
    else:
        assert ready.json()["profile"] == "rabbitmq"
        expected = [f"rabbit@{node}" for node in RABBITMQ_NODES]
        assert running_nodes(stack, "rabbitmq-2") == expected
        with management(stack, "rabbitmq-3") as client:
            for queue in WORK_QUEUES:

                def declared(queue: str = queue) -> dict[str, Any] | None:
                    response = client.get(f"/queues/{VHOST}/{queue}")
                    return response.json() if response.status_code == 200 else None

                info = wait_for(declared, 30, f"queue {queue}", interval=0.5)
                assert info["type"] == "quorum" and sorted(info["members"]) == expected, info


@pytest.mark.slow
def test_production_refuses_the_development_credentials(stack: ComposeStack) -> None:
    """The compose defaults with ENVIRONMENT=production: the settings check names every one."""
    env = {k: v for k, v in stack.env.items() if k not in (*CREDENTIAL_VARIABLES, *HA_SECRET_VARIABLES)}
    env["ENVIRONMENT"] = "production"
    result = stack.compose("run", "--rm", "--no-deps", CONFIG_CHECK, check=False, timeout=120, env=env)
    messages = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("brokerstack:")]
    assert result.returncode != 0 and len(messages) == 1, (result.stdout, result.stderr)
    expected = ["API_KEY"]
    if stack.spec.name == "redis-sentinel":
        expected += ["REDIS_URL", "REDIS_SENTINEL_PASSWORD"]
    else:
        expected += ["RABBITMQ_URL"]
        # The cookie is no app setting: the node itself refuses to start with it.
        node = stack.compose("run", "--rm", "--no-deps", "-T", "rabbitmq-1", check=False, timeout=120, env=env)
        assert node.returncode != 0
        assert "refuses the development RABBITMQ_CLUSTER_COOKIE" in node.stdout + node.stderr
    for variable in expected:
        assert variable in messages[0], messages[0]


@pytest.mark.slow
def test_tasks_keep_completing_when_a_node_dies(stack: ComposeStack, api: httpx.Client) -> None:
    """kill -9 of the Redis primary (Sentinel promotes a replica) / of the RabbitMQ node the clients
    are connected to (they fail over to the next URL, quorum queues elect new leaders): tasks keep
    completing, nothing but the killed container restarts; started again, it rejoins."""
    observed: dict[str, Any] = {}
    assert [wait_result(api, enqueue(api, "add", args=[n, 1])) for n in range(3)] == [1, 2, 3]
    if stack.spec.name == "redis-sentinel":
        target = sentinel_primary(stack, "sentinel-1")
        assert target in REDIS_NODES
        # Both replicas have every write so far, so what the kill costs is the in-flight tasks only.
        stack.compose("exec", "-T", target, "redis-cli", "wait", "2", "5000")
    else:
        connections = connection_nodes(stack, "rabbitmq-2")
        target = connections.most_common(1)[0][0]
        observed["leaders_before"] = queue_leaders(stack, "rabbitmq-2")
        observed["connections_before"] = dict(connections)
    assert target is not None
    observed["killed"] = target
    others = everything_but(stack, target)
    before = stack.restart_fingerprint(others)

    in_flight = [enqueue(api, "add", args=[n, 1000]) for n in range(IN_FLIGHT_TASKS)]
    stack.compose("kill", target)
    killed_at = time.monotonic()
    assert stack.health(target) == "exited"

    # The API keeps taking tasks, at once (RabbitMQ) or once a replica is promoted (Redis: 503
    # broker_unavailable meanwhile, never a 500 and never a hang).
    accepted: list[str] = []
    refused = Counter[str]()
    deadline = killed_at + 120
    while len(accepted) < AFTER_KILL_TASKS:
        assert time.monotonic() < deadline, f"the API accepted {len(accepted)} tasks in 120 s (refused: {refused})"
        try:
            response = api.post("/tasks/add", json={"args": [len(accepted), 2000]})
        except httpx.TransportError as exc:
            refused[type(exc).__name__] += 1
            continue
        if response.status_code == 202:
            accepted.append(response.json()["task_id"])
            observed.setdefault("api_accepts_after_kill_seconds", round(time.monotonic() - killed_at, 1))
        else:
            assert response.status_code == 503 and response.json()["error"] == "broker_unavailable", response.text
            refused[str(response.status_code)] += 1
            time.sleep(0.25)
    observed["api_refused_while_failing_over"] = dict(refused)
    done = wait_results(api, accepted, timeout=180)
    observed["tasks_after_kill_done_seconds"] = round(time.monotonic() - killed_at, 1)
    assert sorted(status["result"] for status in done.values()) == [n + 2000 for n in range(AFTER_KILL_TASKS)]
    # Both workers serve their queues again.
    for queue in WORK_QUEUES:
        info = wait_result(api, enqueue(api, "task_with_info", queue=queue), timeout=120)
        assert info["queue"] == queue

    # The tasks that were in the broker or running when it died.
    deadline = time.monotonic() + 30
    finished: dict[str, dict[str, Any]] = {}
    while len(finished) < len(in_flight) and time.monotonic() < deadline:
        for task_id in in_flight:
            if task_id not in finished and (status := task_status(api, task_id)):
                finished[task_id] = status
        time.sleep(0.5)
    completed = sum(1 for s in finished.values() if s["state"] == "SUCCESS")
    observed["in_flight"] = {"enqueued": len(in_flight), "completed": completed, "lost": len(in_flight) - completed}

    if stack.spec.name == "redis-sentinel":
        new_primary = wait_for(
            lambda: (p := sentinel_primary(stack, "sentinel-2")) not in (None, target) and p,
            60,
            "a sentinel to name a new primary",
            interval=0.5,
        )
        assert new_primary in REDIS_NODES
        assert {sentinel_primary(stack, s) for s in SENTINELS} == {new_primary}
        assert redis_replication(stack, new_primary)["role"] == "master"
        observed["new_primary"] = new_primary
    else:
        survivors = [node for node in RABBITMQ_NODES if node != target]
        remaining = sorted(f"rabbit@{node}" for node in survivors)
        assert running_nodes(stack, survivors[0]) == remaining
        leaders = wait_for(
            lambda: (ls := queue_leaders(stack, survivors[0])) and set(ls.values()) <= set(remaining) and ls,
            60,
            "every work queue to lead on a surviving node",
            interval=1,
        )
        observed["leaders_after"] = leaders
        # Quorum queues and publisher confirms: what the broker took, it still has.
        assert completed == len(in_flight), observed

    assert stack.restart_fingerprint(others) == before, "a container other than the killed one restarted"
    stack.record["node_kill"] = observed
    print(f"\n[{stack.spec.name}] node kill: {observed}")

    # Started again, the node rejoins: as a replica of the new primary / a running cluster member.
    started = time.monotonic()
    stack.compose("start", target)
    if stack.spec.name == "redis-sentinel":
        wait_for(
            lambda: (
                (r := redis_replication(stack, target)).get("master_link_status") == "up"
                and r.get("master_host") == observed["new_primary"]
            ),
            90,
            f"{target} to replicate from {observed['new_primary']}",
            interval=1,
        )
    else:
        expected = [f"rabbit@{node}" for node in RABBITMQ_NODES]
        wait_for(lambda: running_nodes(stack, survivors[0]) == expected, 120, "three running nodes", interval=1)
    wait_for(lambda: stack.health(target) == "healthy", 120, f"{target} to be healthy", interval=1)
    observed["rejoined_after_start_seconds"] = round(time.monotonic() - started, 1)
    # (Not every app container's healthcheck: on a loaded machine a check can take longer than
    # its 10 s timeout and flap, which the tasks on every queue below would not.)
    for queue in WORK_QUEUES:
        assert wait_result(api, enqueue(api, "task_with_info", queue=queue), timeout=120)["queue"] == queue
    assert stack.restart_fingerprint(others) == before
    stack.record["node_kill"] = observed
    print(f"[{stack.spec.name}] rejoined {observed['rejoined_after_start_seconds']} s after start")
