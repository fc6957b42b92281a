"""How the code hangs together: the product (worker, services) never imports the lab, importing
the Celery module builds nothing, and every dead-letter store implements the same interface."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from worker.brokers.rabbitmq.dead_letters import RabbitMQDeadLetterStore
from worker.brokers.redis.dead_letters import RedisDeadLetterStore
from worker.dead_letters import DeadLetterStore

ROOT = Path(__file__).resolve().parents[2]
#: Lab command modules that still live under services/cli/ and move under lab/ next; only
#: lab.cli imports them (through the entry point), never the product.
LAB_MODULES_NOT_YET_MOVED = {
    "services/cli/chaos_cmd.py",
    "services/cli/bench_cmd.py",
    "services/cli/priority_cmd.py",
    "services/cli/report_cmd.py",
}


def _imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, anywhere in it (function-local imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("worker", {"services", "lab", "tests"}), ("services", {"lab", "tests"}), ("deploy", {"lab", "tests"})],
)
def test_layers_import_downwards_only(package: str, forbidden: set[str]) -> None:
    """worker <- services <- lab: no cycles between the packages, and the product stands alone."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_packages(path) & forbidden)
        for path in sorted((ROOT / package).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in LAB_MODULES_NOT_YET_MOVED
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def _imported_modules(path: Path) -> set[str]:
    """Dotted names a module imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_lab_command_modules_are_imported_by_the_lab_only() -> None:
    lab_modules = {path.removesuffix(".py").replace("/", ".") for path in LAB_MODULES_NOT_YET_MOVED}
    importers = {
        str(path.relative_to(ROOT))
        for package in ("worker", "services", "deploy", "lab", "tests")
        for path in (ROOT / package).rglob("*.py")
        if _imported_modules(path) & lab_modules and str(path.relative_to(ROOT)) not in LAB_MODULES_NOT_YET_MOVED
    }
    assert {path for path in importers if not path.startswith("tests/")} == {"lab/cli.py"}


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_importing_the_product_loads_no_lab_and_builds_no_app() -> None:
    done = _python(
        "import sys, services.api.app, services.cli.dlq_cmd, worker.celery_app as m;"
        "print(sorted(n for n in sys.modules if n == 'lab' or n.startswith('lab.')), m._app)",
        BROKER_PROFILE="kafka",  # invalid: building the app from the environment would exit 1
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "None"]


def test_the_celery_command_app_is_built_on_first_access() -> None:
    """``celery -A worker.celery_app`` reads the module's ``app``: that is when the environment is
    read, and bad settings still stop the worker with one line."""
    done = _python("from worker.celery_app import app", BROKER_PROFILE="kafka")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "brokerstack: configuration error: BROKER_PROFILE: 'kafka' is not one of 'redis' or 'rabbitmq'"
    ]
    found = _python(
        "from celery.app.utils import find_app; import worker.celery_app as m; "
        "app = find_app('worker.celery_app'); print(app is m.app, app.main, 'worker.tasks.basic.add' in app.tasks)"
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["True", "worker", "True"]


def test_every_dead_letter_store_is_complete() -> None:
    assert DeadLetterStore.__abstractmethods__ >= {"list_letters", "replay", "purge", "depth", "capture"}
    assert "list" not in DeadLetterStore.__dict__  # it shadowed the built-in in annotations
    for store in (RedisDeadLetterStore, RabbitMQDeadLetterStore):
        assert not store.__abstractmethods__, store
