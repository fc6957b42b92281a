"""``brokerstack dlq``: dead letters from the command line (talks to the broker directly)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.table import Table

from worker.celery_app import create_celery, settings_or_exit
from worker.dead_letters import DeadLetterStore, store_for
from worker.errors import BROKER_ERRORS

app = typer.Typer(help="List, inspect, replay and purge dead letters.", no_args_is_help=True)
console = Console()


@contextmanager
def _store() -> Iterator[DeadLetterStore]:
    celery_app = create_celery(settings_or_exit(), main="dlq-cli", producer_only=True)
    try:
        yield store_for(celery_app)
    except BROKER_ERRORS as exc:
        raise SystemExit(f"brokerstack: broker unreachable ({type(exc).__name__}: {exc}); is it running?") from None
    finally:
        celery_app.close()


@app.command("list")
def list_letters(
    limit: int = typer.Option(100, min=1, help="show at most this many (oldest first)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON array on stdout"),
) -> None:
    """Dead letters with their reason and exception."""
    with _store() as store:
        letters = store.list_letters(limit=limit)
        depth = store.depth()
    if as_json:
        typer.echo(json.dumps([letter.model_dump(exclude={"raw", "traceback"}) for letter in letters]))
        return
    table = Table(title=f"dead letters: {len(letters)} shown of {depth}")
    for column in ("id", "task", "queue", "reason", "retries", "deaths", "last death", "exception"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            letter.id,
            (letter.name or "?").rsplit(".", 1)[-1],
            letter.queue or "?",
            letter.reason,
            str(letter.retries),
            str(letter.death_count),
            letter.last_death_at,
            letter.exception or "",
        )
    console.print(table)


@app.command("show")
def show(letter_id: str = typer.Argument(..., help="the id from `dlq list` (the task id)")) -> None:
    """One dead letter in full, traceback included (JSON)."""
    with _store() as store:
        letter = store.get(letter_id)
    if letter is None:
        raise SystemExit(f"brokerstack: no dead letter {letter_id!r} (see `brokerstack dlq list`)")
    typer.echo(json.dumps(letter.model_dump(exclude={"raw"}), indent=2))


@app.command("replay")
def replay(
    ids: list[str] = typer.Argument(None, help="ids to replay"),
    replay_all: bool = typer.Option(False, "--all", help="replay every dead letter"),
) -> None:
    """Republish dead letters to their original queues as new tasks. A record leaves the DLQ only
    once the broker has taken its new message; exits 1 if any replay failed."""
    if replay_all == bool(ids):
        raise typer.BadParameter("give ids or --all (not both)")
    with _store() as store:
        outcomes = store.replay(None if replay_all else list(ids))
    for outcome in outcomes:
        if outcome.ok:
            typer.echo(f"replayed {outcome.id} -> task {outcome.task_id} on {outcome.queue}")
        else:
            typer.echo(f"NOT replayed {outcome.id}: {outcome.error}", err=True)
    if not all(outcome.ok for outcome in outcomes):
        raise typer.Exit(1)


@app.command("purge")
def purge(yes: bool = typer.Option(False, "--yes", "-y", help="do not ask")) -> None:
    """Drop every dead letter."""
    with _store() as store:
        depth = store.depth()
        if not depth:
            typer.echo("no dead letters")
            return
        if not yes:
            typer.confirm(f"drop {depth} dead letters for good?", abort=True)
        typer.echo(f"purged {store.purge()} dead letters")
