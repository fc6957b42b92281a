"""``brokerstack report``: regenerate docs/ops-comparison.md from the measured records."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from lab.harness.results import RESULTS_DIR_ENV, results_dir
from lab.report import load_sources, write_report
from lab.report.sources import PUBLISHED_MIN_CHAOS_TASKS, PUBLISHED_MIN_ROUTINE_FAULTS, PUBLISHED_MIN_SOAK_FAULTS


def report(
    results: Path = typer.Option(
        None, "--results-dir", help=f"records to read (default: ${RESULTS_DIR_ENV} or results/)"
    ),
    output: Path = typer.Option(Path("docs/ops-comparison.md"), help="the Markdown file to write"),
    charts_dir: Path = typer.Option(None, help="where the PNG charts go (default: <output dir>/img)"),
    min_chaos_tasks: int = typer.Option(
        PUBLISHED_MIN_CHAOS_TASKS,
        help=f"leave out chaos runs below the published size: fewer tasks than this (routine operations: fewer "
        f"than {PUBLISHED_MIN_ROUTINE_FAULTS} faults, soaks: fewer than {PUBLISHED_MIN_SOAK_FAULTS} kills); "
        "0 counts every run, e.g. for a report of your own runs with --output elsewhere",
    ),
) -> None:
    """Render the ops comparison (tables, charts, the walkthrough's table answered) from the chaos,
    priority and bench records; every number cites the record it came from. Chaos runs below the
    published size are left out (named on stderr), so a small run never replaces a published row."""
    root = results or results_dir()
    if not root.is_dir():
        raise SystemExit(
            f"brokerstack: no results directory {root} (run `brokerstack chaos matrix`, `bench`, `priority` first)"
        )
    sources = load_sources(root, min_chaos_tasks=min_chaos_tasks)
    for skipped in sources.unpublished:
        print(f"brokerstack: not published (below the published size): {skipped}", file=sys.stderr)
    path = write_report(sources, output, charts_dir)
    typer.echo(
        f"wrote {path} from {len(sources.chaos)} chaos, {len(sources.bench)} bench and "
        f"{len(sources.priority)} priority records"
    )
    from lab.report.task_cost import write_task_cost

    if page := write_task_cost(root, output.parent / "task-cost.md"):
        typer.echo(f"wrote {page} from the task-cost records")
    from lab.report.sizing import write_sizing

    if page := write_sizing(root, output.parent / "sizing.md"):
        typer.echo(f"wrote {page} from the sizing records")
