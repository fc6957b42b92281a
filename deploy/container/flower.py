"""Flower's launcher: ``python -m deploy.container.flower [flower options]``.

Starts ``celery -A worker.celery_app flower`` (which applies the app's own production guard to the
broker URLs), after refusing, with ENVIRONMENT=production, Flower basic-auth passwords that are
the public development ones.
"""

from __future__ import annotations

import os
import sys

from worker.settings import DEVELOPMENT_SECRETS


def refused_reason(environ: dict[str, str]) -> str | None:
    if environ.get("ENVIRONMENT") != "production":
        return None
    credentials = [c for c in environ.get("FLOWER_BASIC_AUTH", "").split(",") if c]
    if not credentials:
        return "ENVIRONMENT=production requires Flower basic auth: set FLOWER_PASSWORD"
    if any(c.partition(":")[2] in DEVELOPMENT_SECRETS for c in credentials):
        return "ENVIRONMENT=production refuses the development Flower password: set FLOWER_PASSWORD"
    return None


def main() -> None:
    if reason := refused_reason(dict(os.environ)):
        raise SystemExit(f"brokerstack: configuration error: {reason}")
    os.execvp("celery", ["celery", "--app=worker.celery_app", "flower", *sys.argv[1:]])


if __name__ == "__main__":
    main()
