"""Container healthchecks: ``python -m deploy.container.healthcheck api|worker|beat|flower``.

Exit status 0 means healthy; the one line printed says why not (``docker inspect`` shows it).
The slim image has no curl, so HTTP checks use the standard library.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

API_URL = os.environ.get("HEALTHCHECK_API_URL", "http://127.0.0.1:8000/readyz")
FLOWER_URL = os.environ.get("HEALTHCHECK_FLOWER_URL", "http://127.0.0.1:5555/healthcheck")
#: beat touches this file on every scheduler tick (deploy.container.beat.LivenessScheduler).
BEAT_LIVENESS_FILE = Path(os.environ.get("BEAT_LIVENESS_FILE", "/tmp/beat-alive"))
#: A tick happens at least every --max-interval seconds (10 in the compose files).
BEAT_MAX_AGE = float(os.environ.get("BEAT_LIVENESS_MAX_AGE", "60"))


class Unhealthy(Exception):
    pass


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed local URL
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        raise Unhealthy(f"{url}: {exc}") from None


def check_api() -> str:
    """/readyz: the API answers and reaches the broker and the result backend."""
    status, body = _get(API_URL, timeout=8)
    if status != 200:
        raise Unhealthy(f"{API_URL} answered {status}: {body[:300].decode(errors='replace')}")
    return "ready"


def check_flower() -> str:
    status, body = _get(FLOWER_URL, timeout=5)
    if status != 200:
        raise Unhealthy(f"{FLOWER_URL} answered {status}")
    return body.decode(errors="replace").strip()


def check_beat() -> str:
    """The scheduler loop is turning: its last tick is recent."""
    try:
        age = time.time() - BEAT_LIVENESS_FILE.stat().st_mtime
    except FileNotFoundError:
        raise Unhealthy(f"no scheduler tick yet ({BEAT_LIVENESS_FILE} missing)") from None
    if age > BEAT_MAX_AGE:
        raise Unhealthy(f"last scheduler tick {age:.0f} s ago (> {BEAT_MAX_AGE:g} s)")
    return f"last tick {age:.0f} s ago"


def worker_nodename(cmdline: list[str]) -> str:
    """The node name of the worker this container runs: its --hostname/-n (with %h, %n, %d
    expanded the way Celery does), or Celery's default."""
    from celery.utils.nodenames import default_nodename, host_format

    name = None
    for index, arg in enumerate(cmdline):
        if arg.startswith("--hostname="):
            name = arg.partition("=")[2]
        elif arg in ("--hostname", "-n") and index + 1 < len(cmdline):
            name = cmdline[index + 1]
    return host_format(default_nodename(name))


def check_worker() -> str:
    """The worker answers a ping over the broker (its control consumer is alive and connected)."""
    cmdline = Path("/proc/1/cmdline").read_bytes().decode().split("\0")
    nodename = worker_nodename(cmdline)
    from worker.celery_app import app

    # A one-shot process: no connection pool, so every connection it opens is closed properly
    # (no "client unexpectedly closed TCP connection" in the broker's log every 10 s).
    app.conf.broker_pool_limit = 0
    timeout = float(os.environ.get("HEALTHCHECK_PING_TIMEOUT", "3"))
    try:
        with app.connection_for_write() as connection:
            replies = app.control.ping(destination=[nodename], timeout=timeout, connection=connection)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the broker means unhealthy
        raise Unhealthy(f"ping {nodename}: {type(exc).__name__}: {exc}") from None
    finally:
        app.close()
    if not any(nodename in reply for reply in replies):
        raise Unhealthy(f"no pong from {nodename}")
    return f"pong from {nodename}"


CHECKS = {"api": check_api, "worker": check_worker, "beat": check_beat, "flower": check_flower}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: python -m deploy.container.healthcheck {'|'.join(CHECKS)}", file=sys.stderr)
        return 2
    try:
        print(CHECKS[argv[0]]())
    except Unhealthy as exc:
        print(f"unhealthy: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
