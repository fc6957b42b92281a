"""``brokerstack``: the operator's command line.

Each command group lives in a module of its own and is added here; commands read the same
Settings as the worker and the API, from the environment.

Other distributions add commands through the ``brokerstack.commands`` entry-point group: each entry
names a callable that takes the root ``typer.Typer`` and mounts its commands on it. That is how
the measuring commands of the lab (chaos, bench, priority, report: ``lab.cli:register``) arrive,
so this package never imports the lab. The app image (deploy/Dockerfile) installs no entry points
and no lab: there the operator commands (config, dlq, fakes) are all there is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

import typer

from services.cli import config_cmd, dlq_cmd, fakes_cmd

if TYPE_CHECKING:
    app: typer.Typer  # built on first access, see __getattr__

#: The entry-point group plug-in commands register under (see pyproject.toml).
COMMANDS_GROUP = "brokerstack.commands"

Register = Callable[[typer.Typer], None]


def create_app(plugins: Iterable[EntryPoint] | None = None) -> typer.Typer:
    """The ``brokerstack`` command: the operator commands, then every plug-in of ``plugins``
    (default: the installed ``brokerstack.commands`` entry points)."""
    app = typer.Typer(
        name="brokerstack",
        help="Celery on Redis or RabbitMQ, measured: configuration, dead letters, failure injection, benchmarks.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.add_typer(config_cmd.app, name="config")
    app.add_typer(dlq_cmd.app, name="dlq")
    app.add_typer(fakes_cmd.app, name="fakes")
    for plugin in sorted(entry_points(group=COMMANDS_GROUP) if plugins is None else plugins, key=lambda e: e.name):
        _mount(app, plugin)
    return app


def _mount(app: typer.Typer, plugin: EntryPoint) -> None:
    """Let one plug-in add its commands; one that cannot load costs its commands, not the CLI."""
    try:
        register: Register = plugin.load()
        register(app)
    except Exception as exc:  # noqa: BLE001 - a broken plug-in must not take `dlq` and `config` down
        print(
            f"brokerstack: commands from {plugin.value} ({plugin.name}) unavailable: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )


_app: typer.Typer | None = None


def get_app() -> typer.Typer:
    """The ``brokerstack`` command with the installed plug-ins, built once, when first needed:
    importing this package (say for ``services.cli.dlq_cmd``) loads no plug-in."""
    global _app
    if _app is None:
        _app = create_app()
    return _app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # `from services.cli import app`
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    get_app()()
