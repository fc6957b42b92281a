"""``brokerstack idempotency-cost``: what the exactly-once guarantee (IdempotentTask) costs per task,
guarded vs unguarded no-ops drained by one solo worker, on both brokers.

Mounted by its own entry point in the ``brokerstack.commands`` group (pyproject.toml), so it needs
no line in lab.cli.register.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast, get_args

import typer
from rich.console import Console

from lab.experiments.idempotency_cost import REPETITIONS, TASKS, measure_idempotency_cost
from lab.experiments.task_cost import NODE_OPTIONS
from lab.harness.nodes import BrokerKind, make_node
from lab.harness.nodes.base import random_suffix
from lab.harness.nodes.factory import DriverChoice
from lab.harness.results import RESULTS_DIR_ENV, RESULTS_DIR_RULE, default_results_dir
from lab.harness.settings import settings_for

console = Console(stderr=True)


def idempotency_cost(
    driver: str | None = typer.Option(None, help="docker | process (default: BROKERSTACK_TEST_DRIVER, else auto)"),
    tasks: int = typer.Option(TASKS, min=10, help="tasks per repetition and configuration"),
    repetitions: int = typer.Option(REPETITIONS, min=1, help="alternated repetitions of each configuration"),
    results_dir: Path = typer.Option(None, help=f"where records go ({RESULTS_DIR_RULE}: the default sizes)"),
    as_json: bool = typer.Option(False, "--json", help="the records as one JSON line on stdout"),
) -> None:
    """Drain a backlog of no-ops without and with IdempotentTask (one solo worker, fresh nodes per
    broker) and compare the drain rate and the result backend's commands per task."""
    published = tasks == TASKS and repetitions >= REPETITIONS
    os.environ[RESULTS_DIR_ENV] = str(default_results_dir(results_dir, published=published))
    chosen = cast("DriverChoice | None", driver)  # make_node checks the name and says which it takes
    records: list[dict[str, Any]] = []
    for kind in get_args(BrokerKind):
        # A dedicated results node: its counters are the claims', the outbox's and the results' alone.
        with (
            make_node("redis", chosen, name=f"idempotency-cost-results-{random_suffix()}") as results,
            make_node(kind, chosen, **NODE_OPTIONS[kind]) as broker,
            console.status(kind) as status,
        ):
            settings = settings_for(broker, results)
            records.append(
                measure_idempotency_cost(settings, broker, tasks=tasks, repetitions=repetitions, tick=status.update)
            )
    if as_json:
        typer.echo(json.dumps(records))
        return
    from lab.report.idempotency import cost_table

    Console().print(cost_table(records))


def register(app: typer.Typer) -> None:
    """The ``brokerstack.commands`` entry point: mount ``idempotency-cost`` on ``brokerstack``."""
    app.command("idempotency-cost")(idempotency_cost)
