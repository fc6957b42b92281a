"""The lab's commands in ``brokerstack``: chaos, bench, priority, report.

``brokerstack`` (services.cli) knows nothing of the lab: it loads the ``brokerstack.commands``
entry points (pyproject.toml), and the lab's entry point is ``register`` below. The lab imports the
product, never the other way round.

The command modules still live in services/cli/ (chaos_cmd, bench_cmd, priority_cmd, report_cmd)
for now; they are lab code and move under lab/ next, after which only the imports here change.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Mount the lab's commands on the root ``brokerstack`` command."""
    from services.cli import bench_cmd, chaos_cmd, priority_cmd, report_cmd

    app.add_typer(chaos_cmd.app, name="chaos")
    app.command("bench")(bench_cmd.bench)
    app.command("priority")(priority_cmd.priority)
    app.command("report")(report_cmd.report)
