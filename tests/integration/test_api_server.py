"""The API as users run it, under uvicorn with more than one worker process."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest

from lab.harness.nodes.ports import free_port
from lab.harness.processes import ApiServer
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_many_uvicorn_workers_answer_without_nagle_delays(tmp_path):
    """uvicorn's shared socket for --workers keeps Nagle's algorithm on, so a response written in
    two parts waits for the client's delayed ACK (~40 ms on Linux). services.api.http turns it off;
    /healthz needs no broker, so the brokers here are free ports nobody listens on."""
    nobody = free_port()
    settings = Settings(
        broker_profile="redis",
        redis_url=f"redis://127.0.0.1:{nobody}/0",
        result_backend_url=f"redis://127.0.0.1:{nobody}/1",
        publish_timeout=1.0,
    )
    server = ApiServer(settings.to_env(), log_dir=tmp_path, workers=2)
    try:
        server.start()
        server.wait_ready(timeout=60)
        with httpx.Client(base_url=server.url, timeout=5) as client:  # one keep-alive connection
            assert client.get("/healthz").status_code == 200
            durations = []
            for _ in range(30):
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                durations.append(time.perf_counter() - started)
    finally:
        server.stop(timeout=15)
    # Nagle's wait is in every response (~44 ms each, measured with the option left off); a busy
    # machine slows some. So the fastest quarter tells the two apart where the median may not.
    fastest_quarter = sorted(durations)[len(durations) // 4]
    assert fastest_quarter < 0.02, (
        f"a quarter of the responses took {fastest_quarter * 1000:.1f} ms or less, "
        f"the median {statistics.median(durations) * 1000:.1f} ms"
    )
