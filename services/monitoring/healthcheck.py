"""The task exporter's container healthcheck: ``python -m services.monitoring.healthcheck``.

Healthy once the exporter serves metrics and consumes the workers' events (a task run before that
would not be counted). Standard library only: it runs every few seconds, and importing Celery
would make the check itself slow on a loaded host.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

#: The gauge the exporter sets to 1 while its event consumer runs.
CONNECTED_METRIC = "brokerstack_exporter_events_connected"
DEFAULT_URL = "http://127.0.0.1:9808/metrics"


def check(url: str = DEFAULT_URL) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a fixed local URL
            body = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(f"unhealthy: {url}: {exc}") from None
    if f"{CONNECTED_METRIC} 1.0" not in body:
        raise SystemExit("unhealthy: not consuming the workers' events")
    return "consuming events"


if __name__ == "__main__":
    print(check(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL))
