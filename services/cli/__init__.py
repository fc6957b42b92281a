"""``brokerstack``: the operator's command line.

Each command group lives in a module of its own and is added here; commands read the same
Settings as the worker and the API, from the environment. The measuring commands (chaos, bench,
priority, report) need the ``lab`` package, which the app image (deploy/Dockerfile) leaves out:
there the operator commands (config, dlq, fakes) are all there is.
"""

from __future__ import annotations

import importlib.util

import typer

from services.cli import config_cmd, dlq_cmd, fakes_cmd

app = typer.Typer(
    name="brokerstack",
    help="Celery on Redis or RabbitMQ, measured: configuration, dead letters, failure injection, benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(dlq_cmd.app, name="dlq")
app.add_typer(fakes_cmd.app, name="fakes")

if importlib.util.find_spec("lab") is not None:  # not in the app image: operator commands only
    from services.cli import bench_cmd, chaos_cmd, priority_cmd, report_cmd

    app.add_typer(chaos_cmd.app, name="chaos")
    app.command("bench")(bench_cmd.bench)
    app.command("priority")(priority_cmd.priority)
    app.command("report")(report_cmd.report)


def main() -> None:
    app()
