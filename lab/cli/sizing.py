"""``brokerstack sizing``: bytes per queued task, per stored result and per dead letter, on both
brokers, for docs/sizing.md."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast, get_args

import typer
from rich.console import Console

from lab.experiments.sizing import DEAD_LETTER_SIZES, NODE_OPTIONS, REPETITIONS, TASK_SIZES, measure_sizing
from lab.harness.nodes import BrokerKind, make_node
from lab.harness.nodes.factory import DriverChoice
from lab.harness.results import RESULTS_DIR_ENV, RESULTS_DIR_RULE, default_results_dir
from lab.harness.settings import settings_for

console = Console(stderr=True)


def _sizes(values: list[int] | None, default: tuple[int, ...], option: str) -> list[int]:
    sizes = sorted(set(values or default))
    if len(sizes) < 2:
        raise typer.BadParameter("a per-item slope needs at least two different sizes", param_hint=option)
    return sizes


def sizing(
    driver: str | None = typer.Option(None, help="docker | process (default: BROKERSTACK_TEST_DRIVER, else auto)"),
    tasks: list[int] = typer.Option(
        None, "--tasks", min=1, help=f"queued-task sizes (repeatable; default {TASK_SIZES})"
    ),
    dead_letters: list[int] = typer.Option(
        None, "--dead-letters", min=1, help=f"dead-letter sizes (repeatable; default {DEAD_LETTER_SIZES})"
    ),
    repetitions: int = typer.Option(REPETITIONS, min=1, help="repetitions of every size (the median and range)"),
    results_dir: Path = typer.Option(None, help=f"where records go ({RESULTS_DIR_RULE}: the default sizes)"),
    as_json: bool = typer.Option(False, "--json", help="the records as one JSON line on stdout"),
) -> None:
    """Queue no-ops, run them, fail some for good, and read what the broker and the results Redis
    grew by (fresh nodes per broker): the per-item bytes are the slopes over the sizes."""
    task_sizes = _sizes(tasks, TASK_SIZES, "--tasks")
    letter_sizes = _sizes(dead_letters, DEAD_LETTER_SIZES, "--dead-letters")
    published = (
        tuple(task_sizes) == TASK_SIZES and tuple(letter_sizes) == DEAD_LETTER_SIZES and repetitions >= REPETITIONS
    )
    os.environ[RESULTS_DIR_ENV] = str(default_results_dir(results_dir, published=published))
    chosen = cast("DriverChoice | None", driver)  # make_node checks the name and says which it takes
    records: list[dict[str, Any]] = []
    for kind in get_args(BrokerKind):
        # A results Redis of its own on both brokers: the broker's growth and the results' apart.
        with (
            make_node("redis", chosen) as results,
            make_node(kind, chosen, **NODE_OPTIONS[kind]) as broker,
            console.status(kind) as status,
        ):
            record = measure_sizing(
                settings_for(broker, results),
                broker,
                task_sizes=task_sizes,
                dead_letter_sizes=letter_sizes,
                repetitions=repetitions,
                tick=status.update,
            )
            records.append(record.as_dict())
    if as_json:
        typer.echo(json.dumps(records))
        return
    from lab.report.sizing import sizing_table

    Console().print(sizing_table(records))
