"""``brokerstack delayed-memory``: the memory of a worker and of the broker holding N waiting delayed
tasks, before and after, on RabbitMQ, on Redis with brokerstack's transport and with kombu's stock
transport (where the worker holds them).

Mounted by its own entry point in the ``brokerstack.commands`` group (pyproject.toml), so it needs
no line in lab.cli.register.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import typer
from rich.console import Console
from rich.table import Table

from lab.cli.progress import ProgressLines
from lab.experiments.delayed_memory import COUNTDOWN, REPETITIONS, TASKS, measure_delayed_memory
from lab.harness.nodes.factory import DriverChoice
from lab.harness.results import RESULTS_DIR_ENV, RESULTS_DIR_RULE, default_results_dir

console = Console(stderr=True)


def delayed_memory(
    driver: str | None = typer.Option(None, help="docker | process (default: BROKERSTACK_TEST_DRIVER, else auto)"),
    tasks: int = typer.Option(TASKS, min=100, help="waiting tasks per repetition"),
    repetitions: int = typer.Option(REPETITIONS, min=1, help="alternated repetitions of each configuration"),
    countdown: int = typer.Option(COUNTDOWN, min=60, help="seconds until the tasks are due"),
    results_dir: Path = typer.Option(None, help=f"where records go ({RESULTS_DIR_RULE}: the default sizes)"),
    as_json: bool = typer.Option(False, "--json", help="the record as one JSON line on stdout"),
) -> None:
    """Publish N tasks with a long countdown to one idle solo worker's stack (fresh nodes each
    repetition) and read the worker's RSS and the broker's memory before and after."""
    published = tasks == TASKS and repetitions >= REPETITIONS
    os.environ[RESULTS_DIR_ENV] = str(default_results_dir(results_dir, published=published))
    chosen = cast("DriverChoice | None", driver)  # make_node checks the name and says which it takes
    lines = ProgressLines(lambda text: console.print(f"delayed-memory: {text}", highlight=False))
    with console.status("delayed-memory") as status:

        def tick(text: str) -> None:
            status.update(text)
            lines(text)

        record = measure_delayed_memory(
            driver=chosen, tasks=tasks, repetitions=repetitions, countdown=countdown, tick=tick
        )
    if as_json:
        typer.echo(json.dumps(record))
        return
    Console().print(memory_table(record))
    console.print(f"record: {record.get('path')}")


def _mib(figure: dict[str, Any]) -> str:
    median, low, high = (figure[k] / 2**20 for k in ("median", "min", "max"))
    return f"{median:,.1f}" if low == high else f"{median:,.1f} ({low:,.1f}-{high:,.1f})"


def memory_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"{record['tasks']:,} waiting tasks (MiB; median and range of {record['repetitions']})")
    for column in ("configuration", "held by worker", "worker before", "worker after", "broker before", "broker after"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for label, config in record["configs"].items():
        worker, broker = config["worker_rss_bytes"], config["broker_memory_bytes"]
        table.add_row(
            label,
            f"{config['held_by_worker']['median']:,.0f}",
            _mib(worker["before"]),
            _mib(worker["after"]),
            _mib(broker["before"]),
            _mib(broker["after"]),
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("delayed-memory")(delayed_memory)
