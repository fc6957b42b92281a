"""The lab's commands in ``brokerstack``: chaos, bench, priority, report.

``brokerstack`` (services.cli) knows nothing of the lab: it loads the ``brokerstack.commands``
entry points (pyproject.toml), and the lab's entry point is ``register`` below. The lab imports the
product, never the other way round.

One module per command beside this one: chaos, bench, priority, report.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Mount the lab's commands on the root ``brokerstack`` command."""
    from lab.cli import bench, chaos, priority, report, sizing, task_cost

    app.add_typer(chaos.app, name="chaos")
    app.command("bench")(bench.bench)
    app.command("priority")(priority.priority)
    app.command("report")(report.report)
    app.command("task-cost")(task_cost.task_cost)
    app.command("sizing")(sizing.sizing)
