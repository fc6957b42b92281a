"""``brokerstack wait-cost``: what ``min-replicas-to-write`` costs in throughput, ``redis-sentinel``
against ``redis-sentinel-wait`` (lab.experiments.wait_cost says how it is measured).

Mounted by its own entry point in the ``brokerstack.commands`` group (pyproject.toml), so it needs
no line in lab.cli.register.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from lab.experiments import wait_cost as experiment
from lab.harness.nodes import DriverName
from lab.harness.results import RESULTS_DIR_ENV, RESULTS_DIR_RULE, default_results_dir

console = Console(stderr=True)


def wait_cost(
    tasks: int = typer.Option(experiment.TASKS, min=1, help="noop tasks per repetition"),
    repetitions: int = typer.Option(
        experiment.REPETITIONS, min=2, help="alternated repetitions on each group (a range needs 2)"
    ),
    driver: DriverName | None = typer.Option(
        None, help="docker | process (default: BROKERSTACK_TEST_DRIVER, else auto)"
    ),
    results_dir: Path = typer.Option(None, help=f"where the record goes ({RESULTS_DIR_RULE}: the default sizes)"),
) -> None:
    """Start both Sentinel groups side by side, publish then drain ``tasks`` noops on each in
    alternated repetitions, and write <results>/wait-cost/<timestamp>.json."""
    published = tasks == experiment.TASKS and repetitions >= experiment.REPETITIONS
    os.environ[RESULTS_DIR_ENV] = str(default_results_dir(results_dir, published=published))
    with console.status("wait-cost") as status:
        record = experiment.measure(tasks=tasks, repetitions=repetitions, driver=driver, tick=status.update)
    path = experiment.write(record)
    for name in experiment.SETUP_NAMES:
        row = record["setups"][name]
        rates = {key: (row[key]["per_s"], row[key]["per_s_min"], row[key]["per_s_max"]) for key in experiment.RATES}
        typer.echo(f"{name} {rates}")
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("wait-cost")(wait_cost)
