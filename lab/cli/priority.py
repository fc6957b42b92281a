"""``brokerstack priority``: measure where urgent tasks finish behind a backlog, per broker and
queue type, and keep the records for the ops report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import typer
from rich.console import Console
from rich.table import Table

from lab.experiments.priority import BACKLOG, URGENT, measure_priority
from lab.harness.nodes import BrokerKind, make_node
from lab.harness.nodes.base import random_suffix
from lab.harness.nodes.factory import DriverChoice
from lab.harness.results import RESULTS_DIR_ENV, RESULTS_DIR_RULE, default_results_dir
from lab.harness.settings import settings_for
from lab.harness.vendors import VENDORS

#: What is measured: every broker, once per settings variant its vendor names (RabbitMQ: each
#: queue type).
CASES: tuple[tuple[BrokerKind, dict[str, Any]], ...] = tuple(
    (name, variant) for name, vendor in VENDORS.items() for variant in vendor.priority_variants()
)
console = Console(stderr=True)


def priority(
    driver: str | None = typer.Option(None, help="docker | process (default: BROKERSTACK_TEST_DRIVER, else auto)"),
    backlog: int = typer.Option(BACKLOG, min=1, help="low-priority tasks queued first"),
    urgent: int = typer.Option(URGENT, min=1, help="urgent tasks queued after them"),
    results_dir: Path = typer.Option(
        None, help=f"where records go ({RESULTS_DIR_RULE}: the default --backlog and --urgent)"
    ),
    as_json: bool = typer.Option(False, "--json", help="the records as one JSON line on stdout"),
) -> None:
    """Backlog of low-priority tasks, then urgent ones, then one worker: rank the completions on
    Redis, RabbitMQ classic and RabbitMQ quorum queues (fresh broker nodes each)."""
    import os

    published = backlog == BACKLOG and urgent == URGENT
    os.environ[RESULTS_DIR_ENV] = str(default_results_dir(results_dir, published=published))
    chosen = cast("DriverChoice | None", driver)  # make_node checks the name and says which it takes
    records = []
    with make_node("redis", chosen, name=f"priority-results-{random_suffix()}") as results:
        for kind, overrides in CASES:
            variant = "".join(f" {value}" for value in overrides.values())
            console.print(f"[bold]{kind}{variant}[/]: {backlog} low, then {urgent} urgent")
            with make_node(kind, chosen) as broker:
                settings = settings_for(broker, results, **overrides)
                records.append(measure_priority(settings, broker, backlog=backlog, urgent=urgent))
    if as_json:
        typer.echo(json.dumps(records))
        return
    table = Table(title="mean rank of the urgent tasks among all completions (lower is better)")
    for column in ("broker", "version", "queue type", "mean rank", "ideal", "FIFO", "last urgent at"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r["broker"],
            r["broker_version"],
            r["queue_type"],
            f"{r['mean_rank_high']:.1f}",
            f"{r['ideal_mean_rank']:.1f}",
            f"{r['fifo_mean_rank']:.1f}",
            str(r["last_high_rank"]),
        )
    Console().print(table)
