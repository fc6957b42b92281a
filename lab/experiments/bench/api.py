"""The API under load: ``POST /tasks/noop`` from a separate load-generator process.

The API (uvicorn, ``services.api.app:create_app``) runs with the setup's settings; no worker
consumes meanwhile, so what is measured is the producer path alone (HTTP, validation, publish).
The load generator (:mod:`lab.experiments.bench.loadgen`) is a process of its own with closed-loop clients on
keep-alive connections; each concurrency level gets a warm-up and a measured window. On RabbitMQ
the same runs are made with publisher confirms on and off (``RABBITMQ_CONFIRM_PUBLISH``). The
runner repeats every configuration, alternated, and keeps each level's median with its range.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from lab.harness.nodes import proctree

LOAD_GENERATOR = "lab.experiments.bench.loadgen (python asyncio, closed loop, keep-alive HTTP/1.1, one process)"


def run_load(
    url: str, *, concurrency: int, duration: float, warmup: float, api_key: str | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """One load-generator process against ``url``; its JSON result."""
    argv = [
        sys.executable,
        "-m",
        "lab.experiments.bench.loadgen",
        url,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    if api_key:
        argv += ["--header", f"X-API-Key: {api_key}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + warmup + timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measured_level(
    api_url: str, api_pid: int | None, *, concurrency: int, duration: float, warmup: float, api_key: str | None = None
) -> dict[str, Any]:
    """One concurrency level, with the API process tree's CPU time per request."""
    before = proctree.tree_usage(api_pid) if api_pid else None
    result = run_load(
        api_url + "/tasks/noop", concurrency=concurrency, duration=duration, warmup=warmup, api_key=api_key
    )
    after = proctree.tree_usage(api_pid) if api_pid else None
    if before and after and result.get("requests"):
        # Warm-up requests were served too: spread the CPU over everything sent in the window.
        total = result["requests"] * (duration + warmup) / duration
        result["api_cpu_ms_per_request"] = round((after["cpu_seconds"] - before["cpu_seconds"]) / total * 1000, 3)
        result["api_rss_bytes"] = after["rss_bytes"]
    return result
