"""``brokerstack task-cost``: what one task asks of the broker and the result backend, and what it
costs the worker, with brokerstack's defaults and fire-and-forget, on both brokers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast, get_args

import typer
from rich.console import Console

from lab.cli.progress import ProgressLines
from lab.experiments.task_cost import NODE_OPTIONS, REPETITIONS, TASKS, measure_task_cost
from lab.harness.nodes import BrokerKind, make_node
from lab.harness.nodes.base import random_suffix
from lab.harness.nodes.factory import DriverChoice
from lab.harness.results import RESULTS_DIR_ENV, RESULTS_DIR_RULE, default_results_dir
from lab.harness.settings import settings_for

console = Console(stderr=True)


def task_cost(
    driver: str | None = typer.Option(None, help="docker | process (default: BROKERSTACK_TEST_DRIVER, else auto)"),
    tasks: int = typer.Option(TASKS, min=10, help="no-op tasks per repetition"),
    repetitions: int = typer.Option(REPETITIONS, min=1, help="alternated repetitions of each configuration"),
    results_dir: Path = typer.Option(None, help=f"where records go ({RESULTS_DIR_RULE}: the default sizes)"),
    as_json: bool = typer.Option(False, "--json", help="the records as one JSON line on stdout"),
) -> None:
    """Publish a backlog of no-ops, drain it with one solo worker, and count per task the commands
    the broker and the result backend served and the worker's CPU time (fresh nodes per broker)."""
    published = tasks == TASKS and repetitions >= REPETITIONS
    os.environ[RESULTS_DIR_ENV] = str(default_results_dir(results_dir, published=published))
    chosen = cast("DriverChoice | None", driver)  # make_node checks the name and says which it takes
    records = []
    # Lines on stderr too: the spinner draws nothing where stderr is no terminal (a log file).
    lines = ProgressLines(lambda text: console.print(f"task-cost: {text}", highlight=False, soft_wrap=True))
    for kind in get_args(BrokerKind):
        # A dedicated results node: the backend's counters are the backend's alone.
        with (
            make_node("redis", chosen, name=f"task-cost-results-{random_suffix()}") as results,
            make_node(kind, chosen, **NODE_OPTIONS[kind]) as broker,
            console.status(kind) as status,
        ):

            def settings(overrides: dict[str, Any], broker: Any = broker, results: Any = results) -> Any:
                return settings_for(broker, results, **overrides)

            def tick(text: str, status: Any = status) -> None:
                status.update(text)
                lines(text)

            records.append(measure_task_cost(settings, broker, tasks=tasks, repetitions=repetitions, tick=tick))
    if as_json:
        typer.echo(json.dumps(records))
        return
    from lab.report.task_cost import task_cost_table

    Console().print(task_cost_table(records))
