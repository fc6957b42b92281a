"""Small helpers the test bodies share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def enqueue(api: TestClient, name: str, **body: Any) -> str:
    response = api.post(f"/tasks/{name}", json=body)
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def wait_for_task(api: TestClient, task_id: str, timeout: float = 30, states: tuple[str, ...] = FINAL_STATES) -> dict:
    """The task's status once it reaches one of ``states``; the states seen on the way are in
    ``["seen"]``."""
    seen: list[str] = []

    def reached() -> dict | None:
        response = api.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        status = response.json()
        if not seen or seen[-1] != status["state"]:
            seen.append(status["state"])
        return status if status["state"] in states else None

    status = wait_for(reached, timeout, f"task {task_id} to reach {'/'.join(states)} (seen: {seen})")
    return {**status, "seen": seen}


def run_task(api: TestClient, name: str, timeout: float = 30, **body: Any) -> dict:
    return wait_for_task(api, enqueue(api, name, **body), timeout)
