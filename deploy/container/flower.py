"""Flower's launcher: ``python -m deploy.container.flower [flower options]``.

Runs ``celery -A worker.celery_app flower`` (which applies the app's own production guard to the
broker URLs), after refusing, with ENVIRONMENT=production, Flower basic-auth passwords that are
the public development ones.

Flower's Broker page (and ``/api/queues/length`` behind it) picks its queue reader from the scheme of
the app's connection URI, which not every broker's transport gives it (brokerstack's Redis transport
is chosen by class path): the broker profile names the URL to read queues through instead
(``flower_broker_url``; on Redis the configured REDIS_URL, read with the app's transport and TLS
options, so the page counts every priority list of every queue).
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from typing import Any

from worker.brokers import profile_for
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


def broker_page_url(capp: Any) -> str | None:
    """The URL Flower's broker page should read queues through, or None to leave Flower's own
    (the broker profile says: ``BrokerProfile.flower_broker_url``)."""
    settings = getattr(capp, "brokerstack_settings", None)
    if settings is None:
        return None
    return profile_for(settings).flower_broker_url()


def flower_class() -> type:
    """Flower's application with the broker URIs above (imported here: the refusal above must
    not need Flower installed)."""
    from flower.app import Flower  # type: ignore[import-untyped]  # Flower ships no type hints
    from kombu.utils.url import maybe_sanitize_url

    class BrokerstackFlower(Flower):
        @cached_property
        def broker_uri_with_password(self) -> str:
            url = broker_page_url(self.capp)
            if url is None:
                with self.capp.connection() as conn:
                    return str(conn.as_uri(include_password=True))
            return url

        @cached_property
        def broker_uri(self) -> str:
            # Shown on the Broker and worker pages: without the password.
            return str(maybe_sanitize_url(self.broker_uri_with_password))

    return BrokerstackFlower


def main() -> None:
    if reason := refused_reason(dict(os.environ)):
        raise SystemExit(f"brokerstack: configuration error: {reason}")
    import flower.command  # type: ignore[import-untyped]  # Flower ships no type hints
    from celery.bin.celery import main as celery_main

    # `celery flower` builds its application from this name; Flower offers no other hook.
    flower.command.Flower = flower_class()
    sys.argv = ["celery", "--app=worker.celery_app", "flower", *sys.argv[1:]]
    sys.exit(celery_main())


if __name__ == "__main__":
    main()
