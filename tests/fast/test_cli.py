"""``brokerstack``: the operator commands are the product's; the lab's plug in through the
``brokerstack.commands`` entry-point group, so the product never imports the lab."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points

import pytest
import typer
from typer.testing import CliRunner

import services.cli
from services.cli import COMMANDS_GROUP, create_app, dlq_cmd
from tests.fast.conftest import MemoryDeadLetterStore, dead_letter, fast_settings, memory_celery
from worker.dead_letters import DeadLetterStore

OPERATOR_COMMANDS = {"config", "dlq", "fakes"}
LAB_COMMANDS = {
    "chaos",
    "bench",
    "priority",
    "report",
    "sizing",
    "task-cost",
    "idempotency-cost",
    "delayed-memory",
    "wait-cost",
}
runner = CliRunner()


def command_names(app: typer.Typer) -> set[str]:
    groups = [group.name for group in app.registered_groups]
    commands = [command.name or getattr(command.callback, "__name__", None) for command in app.registered_commands]
    return {name for name in groups + commands if name}


def test_without_plugins_there_are_the_operator_commands_only() -> None:
    """The app image installs no entry points: config, dlq and fakes are all there is."""
    assert command_names(create_app(plugins=[])) == OPERATOR_COMMANDS


def test_the_lab_registers_its_commands_through_the_entry_point() -> None:
    found = [ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name == "lab"]
    assert found, "no `lab` entry point in brokerstack.commands: re-run `make venv` (pip install -e .)"
    [lab] = found
    assert lab.value == "lab.cli:register"
    assert command_names(create_app()) == OPERATOR_COMMANDS | LAB_COMMANDS
    assert command_names(services.cli.app) == OPERATOR_COMMANDS | LAB_COMMANDS


def test_a_broken_plugin_costs_its_commands_not_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    broken = EntryPoint(name="broken", value="no_such_module_anywhere:register", group=COMMANDS_GROUP)
    app = create_app(plugins=[broken])
    assert command_names(app) == OPERATOR_COMMANDS
    assert "commands from no_such_module_anywhere:register (broken) unavailable" in capsys.readouterr().err
    assert runner.invoke(app, ["dlq", "--help"]).exit_code == 0


def test_lab_commands_answer_help() -> None:
    for command in sorted(LAB_COMMANDS):
        result = runner.invoke(services.cli.app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_config_check_and_show_mask_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in fast_settings("rabbitmq", api_key="sekrit").to_env().items():
        monkeypatch.setenv(name, value)
    checked = runner.invoke(services.cli.app, ["config", "check"])
    assert checked.exit_code == 0 and checked.output.startswith("ok: profile rabbitmq")
    shown = runner.invoke(services.cli.app, ["config", "show", "--celery"])
    assert shown.exit_code == 0, shown.output
    assert "secret@" not in shown.output and "sekrit" not in shown.output and ":***@" in shown.output


def test_config_check_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_PROFILE", "kafka")
    result = runner.invoke(services.cli.app, ["config", "check"])
    assert result.exit_code == 1
    assert "BROKER_PROFILE" in str(result.exception)


def test_dlq_list_json_shows_the_listing_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryDeadLetterStore(memory_celery(fast_settings()), [dead_letter("t1"), dead_letter("t2")])

    @contextmanager
    def memory_store() -> Iterator[DeadLetterStore]:
        yield store

    monkeypatch.setattr(dlq_cmd, "_store", memory_store)
    listed = runner.invoke(services.cli.app, ["dlq", "list", "--json", "--limit", "1"])
    assert listed.exit_code == 0, listed.output
    assert '"id": "t1"' in listed.output and "t2" not in listed.output and "traceback" not in listed.output
    replayed = runner.invoke(services.cli.app, ["dlq", "replay", "t2"])
    assert replayed.exit_code == 0 and "replayed t2 -> task new-t2 on high_priority" in replayed.output
    assert runner.invoke(services.cli.app, ["dlq", "purge", "--yes"]).output.strip() == "purged 1 dead letters"
