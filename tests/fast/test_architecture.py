"""How the code hangs together: the product (worker, services) never imports the lab, importing
the Celery module builds nothing, and every dead-letter store implements the same interface."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.harness.vendors import VENDORS
from worker.brokers import PROFILES
from worker.brokers.rabbitmq.dead_letters import RabbitMQDeadLetterStore
from worker.brokers.redis.dead_letters import RedisDeadLetterStore
from worker.dead_letters import DeadLetterStore

ROOT = Path(__file__).resolve().parents[2]


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
    }
    assert {path: names for path, names in offenders.items() if names} == {}


#: The lab's layers, bottom first: each may import the ones before it, never one after it.
LAB_LAYERS = ("lab.harness", "lab.experiments", "lab.report", "lab.cli")


@pytest.mark.parametrize("layer", LAB_LAYERS[:-1])
def test_lab_layers_import_downwards_only(layer: str) -> None:
    """harness <- experiments <- report <- cli: a node never knows a scenario, a scenario never
    knows how it is reported."""
    above = LAB_LAYERS[LAB_LAYERS.index(layer) + 1 :]
    directory = ROOT.joinpath(*layer.split("."))
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in _imported_modules(path) if any(name == up or name.startswith(up + ".") for up in above)
        )
        for path in sorted(directory.rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_lab_has_only_its_layers() -> None:
    """Every lab module lives in one of the layers (nothing left beside them to import anything)."""
    top = {path.name for path in (ROOT / "lab").iterdir() if not path.name.startswith(("_", "."))}
    assert top == {layer.split(".")[1] for layer in LAB_LAYERS}


def _imported_modules(path: Path) -> set[str]:
    """Dotted names a module imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_product_holds_only_the_operator_commands() -> None:
    """The lab's commands (chaos, bench, priority, report) live in lab/cli/ and plug in through the
    brokerstack.commands entry point; the image, which has no lab/, offers these alone."""
    assert {path.name for path in (ROOT / "services" / "cli").glob("*_cmd.py")} == {
        "config_cmd.py",
        "dlq_cmd.py",
        "fakes_cmd.py",
    }


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


def test_one_list_of_brokers() -> None:
    """BROKER_PROFILE's choices, the URL each reads, the profile registry and the lab's node kinds
    name the same brokers: a broker added to one and not the others fails here, not in production."""
    from typing import get_args

    from lab.harness.nodes import BrokerKind
    from worker.brokers import PROFILES
    from worker.settings import BrokerProfileName, Settings

    names = get_args(BrokerProfileName)
    assert tuple(PROFILES) == names == get_args(BrokerKind) == tuple(VENDORS)
    assert all(PROFILES[name].name == name == VENDORS[name].name for name in names)
    assert {profile.url_setting for profile in PROFILES.values()} <= set(Settings.model_fields)


#: The names a broker goes by outside its homes, from the registries: its profile's name (also
#: its node kind), its lab vendor's node-options keyword (``rabbit``); and ``amqp``, RabbitMQ's URL
#: scheme and client library, which differ from its name.
BROKER_NAMES = tuple(dict.fromkeys((*PROFILES, *(vendor.options_field for vendor in VENDORS.values()), "amqp")))
_NAME = "|".join(BROKER_NAMES)

#: A branch on a broker's name: a comparison with one, or a membership test / loop over a list of
#: them. The dict keys and JSON fields named after brokers are not branches.
BROKER_NAME_BRANCH = re.compile(
    rf"""[!=]=\s*["']({_NAME})["']|["']({_NAME})["']\s*[!=]=|\bin\s*[(\[{{]\s*["']({_NAME})["']"""
)

#: Where broker knowledge lives: the product's profiles and the lab's vendors.
BROKER_HOMES = (ROOT / "worker" / "brokers", ROOT / "lab" / "harness" / "vendors")
#: Everything else that is scanned: the product (worker, services, the container entry points in
#: deploy) and the lab.
SCANNED = ("worker", "services", "deploy", "lab")


#: Per-broker tables outside the homes that are known and owned elsewhere, with what replaces
#: them; test_known_broker_tables_still_exist fails once one is gone, so the list only shrinks.
def _outside_the_homes() -> list[Path]:
    return [
        path
        for top in SCANNED
        for path in sorted((ROOT / top).rglob("*.py"))
        if not any(home in path.parents for home in BROKER_HOMES)
    ]


def test_no_broker_name_branch_outside_the_broker_packages_and_the_lab_vendors() -> None:
    """What the product knows about a broker lives in worker/brokers/<broker>/, what the lab knows
    in lab/harness/vendors/<broker>/ (its nodes, how its queues and memory are read, its timings);
    everything else (the API, the settings, the container entry points, the lab) asks the profile or
    the vendor, so a broker added to the registries brings its knowledge in its own packages."""
    branches = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _outside_the_homes()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BROKER_NAME_BRANCH.search(line)
    ]
    assert branches == []


def _broker_tables(path: Path) -> dict[str, int]:
    """Dict literals in ``path`` keyed by two brokers or more (a per-broker table is a branch
    spelled as data): the name they are assigned to, or the line they start on."""
    tree = ast.parse(path.read_text(), str(path))
    assigned = {
        id(node.value): node.targets[0].id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = {key.value for key in node.keys if isinstance(key, ast.Constant)}
            if len(keys & set(BROKER_NAMES)) >= 2:
                found[assigned.get(id(node), f"line {node.lineno}")] = node.lineno
    return found


def test_no_per_broker_table_outside_the_broker_packages_and_the_lab_vendors() -> None:
    """``{"redis": ..., "rabbitmq": ...}`` outside the homes is a branch on the broker in another
    form: a new broker would have to find and extend it. The profile or the vendor holds the value."""
    tables = {f"{path.relative_to(ROOT)}: {name}" for path in _outside_the_homes() for name in _broker_tables(path)}
    assert tables == set()


def test_the_branch_check_sees_branches() -> None:
    """The pattern above catches the forms the lab used before the vendors (and no plain use)."""
    caught = [
        'if setup.broker == "redis":',
        "return 4.0 if kind != 'rabbitmq' else 12.0",
        'for broker in ("redis", "rabbitmq"):',
        'if "redis" == kind:',
        'if settings is None or settings.broker_profile != "redis":',
        'stray = [f for f in given if f != "rabbit"]',
    ]
    passed = ['make_node("redis", driver)', '{"redis": None}', "vendor_for(setup.broker).transports"]
    assert all(BROKER_NAME_BRANCH.search(line) for line in caught)
    assert not any(BROKER_NAME_BRANCH.search(line) for line in passed)


def test_the_table_check_sees_tables(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        'by_kind = {"redis": redis, "rabbit": rabbit}\nf({"rabbitmq": 1, "redis": 2})\nx = {"redis": 1}\n'
    )
    assert _broker_tables(module) == {"by_kind": 1, "line 2": 2}


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_vendor_builds_its_own_nodes(name: str) -> None:
    """A vendor's nodes are of its kind on both drivers, and the node asks it for what differs."""

    vendor = VENDORS[name]
    for driver in ("docker", "process"):
        node = vendor.make_node(driver)
        try:
            assert (node.kind, node.driver, node.vendor) == (name, driver, vendor)
            assert type(node).__module__ == f"lab.harness.vendors.{name}.nodes"
        finally:
            node.close()


def test_a_setup_holds_its_brokers_node_options_in_one_field() -> None:
    """A new broker adds setups, not a field of Setup: the options are typed by its vendor."""
    from dataclasses import fields

    from lab.harness.setups import SCENARIO_NAMES, SETUPS, Setup

    assert not {f.name for f in fields(Setup)} & {*VENDORS, "rabbit"}
    assert all(isinstance(setup.options, setup.vendor.options_type) for setup in SETUPS.values())

    def made(broker: str, options: object) -> Setup:
        return Setup(
            name="x",
            broker=broker,
            description="",
            scenarios=SCENARIO_NAMES[:1],
            promises_no_loss=frozenset(),
            guarantee="",
            options=options,
        )

    for name, vendor in VENDORS.items():
        assert made(name, vendor.options_type()).node_options == vendor.options_type()
        for other in (None, *(v.options_type() for v in VENDORS.values() if v is not vendor)):
            with pytest.raises(ValueError, match=rf"node options of its broker \({vendor.options_type.__name__}\)"):
                made(name, other)


def test_every_lab_vendor_has_its_bench_hooks_found_by_name() -> None:
    """The bench keeps no list of brokers: it finds lab/experiments/bench/brokers/<broker>.py."""
    from lab.experiments.bench.vendors import BENCH_VENDORS

    assert list(BENCH_VENDORS) == list(VENDORS)
    for name, vendor in BENCH_VENDORS.items():
        assert (vendor.name, vendor.lab) == (name, VENDORS[name])
        assert type(vendor.measure_raw).__module__ == "builtins" or vendor.measure_raw.__module__.endswith(f".{name}")
