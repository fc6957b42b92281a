"""Driving one compose stack from a test: ``docker compose`` with a project name, ports and
credentials of its own, so a test run never touches a stack (or a port) that somebody else runs.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from lab.harness.nodes.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO / ".env.example"
COMPOSE_FILES_SHARED = (REPO / "deploy" / "compose.common.yml",)
#: The services built from the brokerstack image (the rest are brokers).
APP_SERVICES = ("api", "worker-high", "worker-default", "beat", "flower")
#: Runs once before the app services and exits: the settings check they wait for.
CONFIG_CHECK = "config-check"
#: Ports published by the services of the compose profiles ``monitoring`` and ``dashboards`` (not in
#: a StackSpec's port_variables: a plain ``docker compose config`` leaves those services out).
MONITORING_PORT_VARIABLES = ("PROMETHEUS_PORT", "ALERTMANAGER_PORT", "GRAFANA_PORT")
#: The image tag the tests build and run, apart from a developer's brokerstack:local.
TEST_IMAGE = "brokerstack:compose-test"
#: Services of the profile ``monitoring`` (``dashboards`` adds grafana-check and grafana).
MONITORING_SERVICES = ("task-exporter", "redis-exporter", "prometheus", "alertmanager")
#: What the shared test stacks (tests/compose/conftest.py) run the profile ``monitoring`` with:
#: short on purpose, so that test_monitoring's alert fires within seconds (scrape/evaluate
#: interval, every rule's ``for:``, the task exporter's polls). The shipped rules are checked as
#: they are (promtool).
MONITORING_TEST_ENV = {
    "COMPOSE_PROFILES": "monitoring",
    "PROMETHEUS_SCRAPE_INTERVAL": "2s",
    "PROMETHEUS_ALERT_FOR": "4s",
    "EXPORTER_POLL_INTERVAL": "5",
}


@dataclass(frozen=True)
class StackSpec:
    name: str
    file: str
    #: The service that the restart tests kill.
    broker: str
    #: Every variable that sets a published port.
    port_variables: tuple[str, ...]
    services: tuple[str, ...]

    @property
    def path(self) -> Path:
        return REPO / self.file


STACKS = (
    StackSpec(
        name="redis",
        file="compose.redis.yml",
        broker="redis",
        port_variables=("API_PORT", "FLOWER_PORT", "REDIS_PORT"),
        services=("redis", *APP_SERVICES),
    ),
    StackSpec(
        name="rabbitmq",
        file="compose.rabbitmq.yml",
        broker="rabbitmq",
        port_variables=(
            "API_PORT",
            "FLOWER_PORT",
            "REDIS_PORT",
            "RABBITMQ_PORT",
            "RABBITMQ_MANAGEMENT_PORT",
            "RABBITMQ_PROMETHEUS_PORT",
        ),
        services=("rabbitmq", "redis", *APP_SERVICES),
    ),
)

#: The highly available stacks (tests/compose/test_ha_stacks.py). ``broker`` is the node the
#: stack starts with as Redis primary / first failover URL.
REDIS_NODES = ("redis-1", "redis-2", "redis-3")
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
RABBITMQ_NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")
HA_STACKS = (
    StackSpec(
        name="redis-sentinel",
        file="compose.redis-sentinel.yml",
        broker="redis-1",
        port_variables=("API_PORT", "FLOWER_PORT"),
        services=(*REDIS_NODES, *SENTINELS, *APP_SERVICES),
    ),
    StackSpec(
        name="rabbitmq-cluster",
        file="compose.rabbitmq-cluster.yml",
        broker="rabbitmq-1",
        port_variables=(
            "API_PORT",
            "FLOWER_PORT",
            "REDIS_PORT",
            "RABBITMQ_PORT",
            "RABBITMQ_MANAGEMENT_PORT",
            "RABBITMQ_NODE2_PORT",
            "RABBITMQ_NODE2_MANAGEMENT_PORT",
            "RABBITMQ_NODE3_PORT",
            "RABBITMQ_NODE3_MANAGEMENT_PORT",
        ),
        services=(*RABBITMQ_NODES, "redis", *APP_SERVICES),
    ),
)
#: The management API of each cluster node, by the variable that publishes it.
RABBITMQ_MANAGEMENT_PORT_OF = {
    "rabbitmq-1": "RABBITMQ_MANAGEMENT_PORT",
    "rabbitmq-2": "RABBITMQ_NODE2_MANAGEMENT_PORT",
    "rabbitmq-3": "RABBITMQ_NODE3_MANAGEMENT_PORT",
}
#: The HA stacks' own secrets, beside the ones every stack has (ComposeStack.create).
HA_SECRET_VARIABLES = ("REDIS_SENTINEL_PASSWORD", "RABBITMQ_CLUSTER_COOKIE")


def documented_variables() -> list[str]:
    """The variables .env.example sets (``NAME=value`` lines, not the commented examples)."""
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)


def interpolated_variables(*paths: Path) -> set[str]:
    """Every ``${NAME`` a compose file interpolates (comments left out)."""
    names: set[str] = set()
    for path in paths:
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
            names.update(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", code))
    return names


def docker_problem() -> str | None:
    """Why the compose tests cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
        )
        if info.returncode != 0:
            return f"no Docker engine answers: {info.stderr.strip()[:200]}"
        version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if version.returncode != 0:
            return "no docker compose plugin"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker does not answer: {exc}"
    return None


def clean_environ() -> dict[str, str]:
    """This process's environment without anything the compose files interpolate, so that a
    variable exported in the shell cannot change what the tests run."""
    drop = set(documented_variables()) | interpolated_variables(*(spec.path for spec in STACKS), *COMPOSE_FILES_SHARED)
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("COMPOSE_")}


class ComposeError(RuntimeError):
    pass


@dataclass
class ComposeStack:
    """One stack under test: ``docker compose -p <unique> -f <file>`` with its own env."""

    spec: StackSpec
    project: str
    env: dict[str, str]
    env_file: Path
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, spec: StackSpec, *, environment: str = "production") -> ComposeStack:
        """A stack on free ports, with credentials of its own (none of them a development one,
        so it runs with ENVIRONMENT=production)."""
        env_file = Path(tempfile.mkstemp(prefix="brokerstack-compose-", suffix=".env")[1])
        overrides = {var: str(free_port()) for var in spec.port_variables}
        overrides.update(
            ENVIRONMENT=environment,
            REDIS_PASSWORD="redis-" + secrets.token_hex(8),
            RABBITMQ_PASSWORD="rabbit-" + secrets.token_hex(8),
            API_KEY="key-" + secrets.token_hex(8),
            FLOWER_PASSWORD="flower-" + secrets.token_hex(8),
            # Not the default (everysec), so a test can tell the variable reached Redis; and the
            # policy docs/choosing-a-broker.md recommends when tasks must not be lost.
            REDIS_APPENDFSYNC="always",
            BROKERSTACK_IMAGE=TEST_IMAGE,
            # The app containers get this (empty) file instead of a developer's .env.
            BROKERSTACK_ENV_FILE=str(env_file),
        )
        project = f"bstest-{spec.name}-{secrets.token_hex(3)}"
        stack = cls(spec=spec, project=project, env=clean_environ() | overrides, env_file=env_file)
        _LIVE[project] = stack
        return stack

    # --- docker compose -----------------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        return [
            "docker", "compose",
            "--project-name", self.project,
            "--file", str(self.spec.path),
            "--env-file", str(self.env_file),
            *args,
        ]  # fmt: skip

    def compose(
        self, *args: str, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                self.command(*args), cwd=REPO, env=env or self.env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise ComposeError(f"docker compose {' '.join(args)}: no answer after {timeout:g} s") from exc
        if check and result.returncode != 0:
            output = f"{result.stderr[-3000:]}{result.stdout[-2000:]}"
            raise ComposeError(f"docker compose {' '.join(args)} exited {result.returncode}:\n{output}")
        return result

    def down(self) -> None:
        try:
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=300, check=False)
        finally:
            _LIVE.pop(self.project, None)
            self.env_file.unlink(missing_ok=True)

    def logs(self, tail: int = 60) -> str:
        result = self.compose("logs", "--no-color", "--tail", str(tail), timeout=60, check=False)
        return result.stdout + result.stderr

    # --- containers ---------------------------------------------------------------------------

    def container_ids(self, service: str) -> list[str]:
        out = self.compose("ps", "--all", "--quiet", service, timeout=60).stdout
        return out.split()

    def inspect(self, service: str) -> dict[str, Any]:
        """``docker inspect`` of the service's (first) container."""
        ids = self.container_ids(service)
        if not ids:
            raise ComposeError(f"no container for service {service}")
        out = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)[0]

    def inspect_services(self, services: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """``docker inspect`` of each service's first container, in one ``compose ps`` and one
        ``docker inspect`` (two docker commands per service took seconds per look on a loaded
        2-core machine, and health is polled)."""
        ids = self.compose("ps", "--all", "--quiet", timeout=60).stdout.split()
        # A one-off (`compose run --rm`) container may go between the two: inspect prints the rest.
        out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, timeout=60, check=False)
        found: dict[str, dict[str, Any]] = {}
        infos = json.loads(out.stdout) if out.stdout.strip() else []
        for info in sorted(infos, key=lambda i: int(i["Config"]["Labels"].get(_CONTAINER_NUMBER, "0"))):
            labels = info["Config"]["Labels"]
            if labels.get(_ONE_OFF) != "True":
                found.setdefault(labels.get(_SERVICE, ""), info)
        if missing := [service for service in services if service not in found]:
            raise ComposeError(f"no container for services {missing}")
        return {service: found[service] for service in services}

    def health(self, service: str) -> str:
        return _health(self.inspect(service))

    def all_healthy(self) -> bool:
        infos = self.inspect_services(self.spec.services)
        return all(_health(info) == "healthy" for info in infos.values())

    def healthy_seconds_after_create(self) -> dict[str, float]:
        """Per service: seconds from the first container's creation to its first passing
        healthcheck (from docker's health log, which keeps the last five checks)."""
        infos = self.inspect_services(self.spec.services)
        first_created = min(_timestamp(info["Created"]) for info in infos.values())
        healthy_at: dict[str, float] = {}
        for service, info in infos.items():
            passed = [
                _timestamp(e["End"]) for e in info["State"].get("Health", {}).get("Log", []) if e["ExitCode"] == 0
            ]
            if passed:
                healthy_at[service] = round(min(passed) - first_created, 1)
        return healthy_at

    def restart_fingerprint(self, services: tuple[str, ...] = APP_SERVICES) -> dict[str, tuple[str, str, int]]:
        """Container id, start time and restart count per service: equal before and after means
        nobody (neither docker's restart policy nor the test) restarted it."""
        return {
            service: (info["Id"], info["State"]["StartedAt"], info["RestartCount"])
            for service, info in self.inspect_services(services).items()
        }

    # --- clients ------------------------------------------------------------------------------

    def port(self, variable: str) -> int:
        return int(self.env[variable])

    def api(self, timeout: float = 15) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port('API_PORT')}",
            headers={"X-API-Key": self.env["API_KEY"]},
            timeout=timeout,
        )

    def flower(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port('FLOWER_PORT')}",
            auth=("brokerstack", self.env["FLOWER_PASSWORD"]),
            timeout=15,
        )

    def rabbitmq_management(self, user: str = "brokerstack", password: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port('RABBITMQ_MANAGEMENT_PORT')}/api",
            auth=(user, self.env["RABBITMQ_PASSWORD"] if password is None else password),
            timeout=15,
        )

    def write_record(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.spec.name}.json"
        body = {
            "stack": self.spec.name,
            "file": self.spec.file,
            "measured_at": datetime.now().isoformat(timespec="seconds"),
        }
        path.write_text(json.dumps(body | self.record, indent=2) + "\n")
        return path


#: Labels compose puts on its containers.
_SERVICE = "com.docker.compose.service"
_CONTAINER_NUMBER = "com.docker.compose.container-number"
_ONE_OFF = "com.docker.compose.oneoff"


def _health(info: dict[str, Any]) -> str:
    """A container's health status, or its state when it does not run."""
    state = info["State"]
    if not state["Running"]:
        return str(state["Status"])
    return str(state.get("Health", {}).get("Status", "running"))


def _timestamp(value: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, Z or offset) as epoch seconds."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        raise ValueError(f"unexpected timestamp {value!r}")
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(base + zone).timestamp() + float(fraction or 0)


#: Stacks not torn down yet; the last resort is interpreter exit (a crash between up and down).
_LIVE: dict[str, ComposeStack] = {}


@atexit.register
def _down_leftovers() -> None:
    for stack in list(_LIVE.values()):
        stack.down()


def bring_up(stack: ComposeStack, diagnose: tuple[str, ...] | None = None) -> None:
    """``up --build --wait``, its time in the record (``up_build_wait_seconds``). If it fails: the
    stack's logs, and with ``diagnose`` the healthcheck output of every unhealthy service (the
    stack's own and these extra ones)."""
    started = time.monotonic()
    try:
        stack.compose("up", "--detach", "--build", "--wait", "--wait-timeout", "300", timeout=900)
    except Exception:
        print(stack.logs(tail=40))
        if diagnose is not None:
            print(unhealthy_reasons(stack, diagnose))
        raise
    stack.record["up_build_wait_seconds"] = round(time.monotonic() - started, 1)


def finish(stack: ComposeStack, record_dir: Path) -> None:
    """The stack's record written to ``record_dir`` (if it has one), then ``down -v``, whatever
    happened."""
    try:
        if stack.record:
            print(f"[{stack.spec.name}] results: {stack.write_record(record_dir)}")
    finally:
        stack.down()


@contextmanager
def stack_up(spec: StackSpec, record_dir: Path, **env: str) -> Iterator[ComposeStack]:
    """``spec`` on a project, ports and credentials of its own (ComposeStack.create, then ``env``),
    brought up with ``up --build --wait`` (its logs printed if that fails); afterwards its record
    written to ``record_dir`` and ``down -v``, whatever happened."""
    stack = ComposeStack.create(spec)
    stack.env.update(env)
    try:
        bring_up(stack)
        print(f"\n[{spec.name}] up --build --wait: {stack.record['up_build_wait_seconds']} s")
        yield stack
    finally:
        finish(stack, record_dir)


def unhealthy_reasons(stack: ComposeStack, services: tuple[str, ...] = ()) -> str:
    """The last healthcheck outputs of every service that is not healthy (for a failed ``up``)."""
    lines = []
    for service in (*stack.spec.services, *services):
        try:
            state = stack.inspect(service)["State"]
        except Exception as exc:  # noqa: BLE001 - a diagnostic: report and go on
            lines.append(f"{service}: {exc}")
            continue
        health = state.get("Health") or {}
        if health.get("Status", "healthy") != "healthy":
            outputs = [entry["Output"].strip()[:200] for entry in health.get("Log", [])[-3:]]
            lines.append(f"{service}: {health.get('Status')} {outputs}")
    return "\n".join(lines)
