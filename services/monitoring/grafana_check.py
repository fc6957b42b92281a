"""Grafana's admin password check: ``python -m services.monitoring.grafana_check``.

Grafana (compose profile ``dashboards``) is not brokerstack's image, so it cannot refuse a
development password itself: this one-shot container runs first and Grafana starts only if it
succeeds, as the app services wait for ``config-check``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from worker.settings import DEVELOPMENT_SECRETS

#: Grafana's own default admin password, refused along with brokerstack's development ones.
GRAFANA_DEFAULT_PASSWORD = "admin"


def refused_reason(environ: Mapping[str, str]) -> str | None:
    """Why Grafana must not start with this environment, or None."""
    if environ.get("ENVIRONMENT") != "production":
        return None
    password = environ.get("GRAFANA_ADMIN_PASSWORD", "")
    if not password:
        return "ENVIRONMENT=production requires GRAFANA_ADMIN_PASSWORD"
    if password in DEVELOPMENT_SECRETS or password == GRAFANA_DEFAULT_PASSWORD:
        return "ENVIRONMENT=production refuses the development GRAFANA_ADMIN_PASSWORD: set your own"
    return None


def main() -> None:
    reason = refused_reason(os.environ)
    if reason:
        raise SystemExit(f"brokerstack: {reason}")
    print("grafana settings ok", file=sys.stderr)


if __name__ == "__main__":
    main()
