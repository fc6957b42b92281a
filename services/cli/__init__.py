"""``brokerstack``: the operator's command line.

Each command group lives in a module of its own and is added here; commands read the same
Settings as the worker and the API (environment, or a .env file in the working directory).
"""

from __future__ import annotations

import typer

from services.cli import config_cmd, dlq_cmd

app = typer.Typer(
    name="brokerstack",
    help="Celery on Redis or RabbitMQ, measured: configuration, dead letters, failure injection, benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(dlq_cmd.app, name="dlq")


def main() -> None:
    app()
