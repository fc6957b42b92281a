"""``brokerstack config``: what the current environment configures."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import SecretStr

from worker.celery_app import settings_or_exit
from worker.config import build_celery_config

app = typer.Typer(help="Show the effective settings and the Celery configuration they build.", no_args_is_help=True)


def _mask(value: str) -> str:
    """A URL or secret with its password hidden."""
    parts = [urlsplit(p) for p in value.split(";")]
    if all(p.scheme and p.netloc for p in parts):
        masked = []
        for p in parts:
            netloc = p.netloc
            if p.password:
                netloc = netloc.replace(f":{p.password}@", ":***@")
            masked.append(urlunsplit(p._replace(netloc=netloc)))
        return ";".join(masked)
    return value


def _masked_passwords(value: Any) -> Any:
    """``value`` with every ``password`` entry (e.g. Sentinel's, in transport options) hidden."""
    if isinstance(value, dict):
        return {k: "***" if "password" in str(k).lower() and v else _masked_passwords(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked_passwords(v) for v in value]
    return value


@app.command("show")
def show(celery: bool = typer.Option(False, "--celery", help="also print the Celery settings built from them")) -> None:
    """Print the settings (secrets masked) as JSON; exits 1 with one line if they are invalid."""
    settings = settings_or_exit()
    secrets = {name.upper() for name, value in settings.model_dump().items() if isinstance(value, SecretStr)}
    shown = {name: "***" if name in secrets else _mask(value) for name, value in settings.to_env().items()}
    out: dict = {"settings": shown}
    if celery:
        conf = build_celery_config(settings)
        conf["broker_url"] = _mask(conf["broker_url"])
        conf["result_backend"] = _mask(conf["result_backend"])
        conf["task_queues"] = [{"name": q.name, "arguments": q.queue_arguments} for q in conf["task_queues"]]
        out["celery"] = _masked_passwords(json.loads(json.dumps(conf, default=str)))
    typer.echo(json.dumps(out, indent=2))


@app.command("check")
def check() -> None:
    """Validate the settings; prints one line and exits 0 (valid) or 1."""
    settings = settings_or_exit()
    typer.echo(f"ok: profile {settings.broker_profile}, environment {settings.environment}")
