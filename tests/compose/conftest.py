"""One running stack per broker for the whole session, shared by test_monitoring.py and
test_stacks.py.

Each ``up --build --wait`` costs one to two minutes on a 2-core machine (the RabbitMQ stack's
alone took 121 s under load), and both modules used to bring up their own: the stack now comes up
once, with the profile ``monitoring`` (which test_stacks' assertions do not see: they name the
stack's own services; that monitoring is opt-in is checked on ``docker compose config``).

test_monitoring counts what Prometheus saw from the first task on, so its tests run on the fresh
stack, before test_stacks' (``pytest_collection_modifyitems`` below). Tests that stop, kill or
scale services leave the stack as the next one expects (started again and healthy), except
test_stacks' last one, the scale-out. A session-scoped fixture would stay up until the session
ends (through the rest of ``make test``): each stack goes down right after the last test that uses
it (``pytest_runtest_teardown``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.harness.nodes.ports import free_port
from lab.harness.results import results_dir
from tests.compose.stack import (
    MONITORING_PORT_VARIABLES,
    MONITORING_SERVICES,
    MONITORING_TEST_ENV,
    STACKS,
    ComposeStack,
    StackSpec,
    bring_up,
    docker_problem,
    finish,
)

RESULTS_DIR = results_dir() / "compose"
#: The modules that share ``stack``, in the order their tests run on it.
SHARED_STACK_MODULES = ("test_monitoring", "test_stacks")
#: The shared stacks that are up, by stack name.
_UP: dict[str, ComposeStack] = {}
#: Node id of the last test (in run order) that uses each shared stack, by stack name.
_LAST_USER: dict[str, str] = {}


def _shared_spec(item: pytest.Item) -> StackSpec | None:
    """The spec of the shared stack ``item`` runs on, or None."""
    callspec = getattr(item, "callspec", None)
    module = getattr(item, "module", None)
    if callspec is None or "stack" not in callspec.params or module is None:
        return None
    if module.__name__.rpartition(".")[2] not in SHARED_STACK_MODULES:
        return None
    spec = callspec.params["stack"]
    return spec if isinstance(spec, StackSpec) else None


def _finish(name: str) -> None:
    """Write the record of the shared stack ``name`` and ``down -v`` it (once; nothing if not up)."""
    stack = _UP.pop(name, None)
    if stack is None:
        return
    # Every profile, so that down -v also removes what `run grafana-check` created.
    stack.env["COMPOSE_PROFILES"] = "monitoring,dashboards"
    finish(stack, RESULTS_DIR)


@pytest.fixture(scope="session")
def docker_compose() -> None:
    if problem := docker_problem():
        pytest.skip(f"compose tests need a Docker engine with the compose plugin: {problem}")


@pytest.fixture(scope="session", params=STACKS, ids=lambda spec: spec.name)
def stack(request: pytest.FixtureRequest, docker_compose: None) -> Iterator[ComposeStack]:
    """One stack with the profile ``monitoring``, up and healthy for every test of the session that
    asks for it; its record written to results/compose/<stack>.json and ``down -v`` after, whatever
    happened."""
    stack = ComposeStack.create(request.param)
    _UP[stack.spec.name] = stack
    stack.env.update({var: str(free_port()) for var in MONITORING_PORT_VARIABLES})
    stack.env.update(MONITORING_TEST_ENV)
    try:
        bring_up(stack, diagnose=MONITORING_SERVICES)
        stack.record["compose_profiles"] = stack.env["COMPOSE_PROFILES"]
        per_service = stack.healthy_seconds_after_create()
        stack.record["healthy_seconds_after_first_container_created"] = per_service
        stack.record["up_to_healthy_seconds"] = max(per_service.values(), default=None)
        print(
            f"\n[{stack.spec.name}] up --profile monitoring --build --wait: {stack.record['up_build_wait_seconds']} s; "
            f"containers created -> all healthy: {stack.record['up_to_healthy_seconds']} s {per_service}"
        )
        yield stack
    finally:
        _finish(stack.spec.name)


@pytest.hookimpl(trylast=True)  # after pytest has grouped the items by the session fixture's param
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On each stack: test_monitoring's tests first (they count from a fresh stack), then
    test_stacks'. Only the places the shared stack's tests already hold are reordered."""
    places = [index for index, item in enumerate(items) if _shared_spec(item)]

    def key(item: pytest.Item) -> tuple[int, int]:
        spec = _shared_spec(item)
        assert spec is not None
        return STACKS.index(spec), SHARED_STACK_MODULES.index(item.module.__name__.rpartition(".")[2])  # type: ignore[attr-defined]

    ordered = sorted((items[index] for index in places), key=key)
    for index, item in zip(places, ordered, strict=True):
        items[index] = item
    _LAST_USER.clear()
    for item in ordered:
        spec = _shared_spec(item)
        assert spec is not None
        _LAST_USER[spec.name] = item.nodeid


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Down goes the shared stack once its last test is over, not at the end of the session."""
    spec = _shared_spec(item)
    if spec is not None and _LAST_USER.get(spec.name) == item.nodeid:
        _finish(spec.name)
