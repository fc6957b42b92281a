"""``brokerstack fakes``: the fake services the example tasks talk to (for demos and drills).

The mail "server" can be taken down and brought back, so a real failure lands in the dead-letter
queue and a replay succeeds once it is "fixed"; the outbox shows what the fakes sent.
"""

from __future__ import annotations

import json

import typer

from worker.celery_app import settings_or_exit
from worker.outbox import Outbox
from worker.tasks.email import MAIL_SERVER_DOWN

app = typer.Typer(help="Break and mend the fake services; read what they sent.", no_args_is_help=True)


def _outbox() -> Outbox:
    settings = settings_or_exit()
    return Outbox(settings.result_backend, ttl_seconds=settings.result_expires, settings=settings)


@app.command("mail-server")
def mail_server(state: str = typer.Argument(..., help="down | up")) -> None:
    """Take the fake mail server down (every send_email fails) or bring it back up."""
    if state not in ("down", "up"):
        raise typer.BadParameter("down or up")
    _outbox().set_switch(MAIL_SERVER_DOWN, state == "down")
    typer.echo(f"fake mail server is {state}")


@app.command("outbox")
def outbox(
    kind: str = typer.Argument(
        "email", help="email | welcome_email | admin_notification | report | heartbeat | batch_checkpoint"
    ),
) -> None:
    """What the fake senders recorded, one JSON object per line."""
    for entry in _outbox().read(kind):
        typer.echo(json.dumps(entry))
