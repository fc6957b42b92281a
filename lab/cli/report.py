"""``brokerstack report``: regenerate docs/ops-comparison.md from the measured records."""

from __future__ import annotations

from pathlib import Path

import typer

from lab.report import load_sources, write_report
from lab.results import RESULTS_DIR_ENV, results_dir


def report(
    results: Path = typer.Option(
        None, "--results-dir", help=f"records to read (default: ${RESULTS_DIR_ENV} or results/)"
    ),
    output: Path = typer.Option(Path("docs/ops-comparison.md"), help="the Markdown file to write"),
    charts_dir: Path = typer.Option(None, help="where the PNG charts go (default: <output dir>/img)"),
    min_chaos_tasks: int = typer.Option(
        0, help="ignore chaos runs with fewer tasks (e.g. 5000 for the published table)"
    ),
) -> None:
    """Render the ops comparison (tables, charts, the walkthrough's table answered) from the chaos,
    priority and bench records; every number cites the record it came from."""
    root = results or results_dir()
    if not root.is_dir():
        raise SystemExit(
            f"brokerstack: no results directory {root} (run `brokerstack chaos matrix`, `bench`, `priority` first)"
        )
    sources = load_sources(root, min_chaos_tasks=min_chaos_tasks)
    path = write_report(sources, output, charts_dir)
    typer.echo(
        f"wrote {path} from {len(sources.chaos)} chaos, {len(sources.bench)} bench and "
        f"{len(sources.priority)} priority records"
    )
