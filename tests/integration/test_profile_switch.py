"""The README's promise: the same API and worker, started the documented way (uvicorn --factory,
celery -A worker.celery_app), switch broker when BROKER_PROFILE changes and nothing else."""

from __future__ import annotations

import re

import httpx
import pytest

from lab.harness.nodes import make_node
from lab.harness.processes import ApiServer, CeleryWorker
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def test_only_broker_profile_changes(driver, results_node, tmp_path):
    with make_node("redis", driver) as redis_broker, make_node("rabbitmq", driver) as rabbit_broker:
        shared_env = {
            "REDIS_URL": redis_broker.url,
            "RABBITMQ_URL": rabbit_broker.url,
            "RESULT_BACKEND_URL": results_node.url,
            "ENVIRONMENT": "test",
        }
        for profile in ("redis", "rabbitmq"):
            env = {**shared_env, "BROKER_PROFILE": profile}
            with ApiServer(env, log_dir=tmp_path) as api, CeleryWorker(env, log_dir=tmp_path) as worker:
                api.wait_ready()
                worker.wait_ready()
                assert httpx.get(f"{api.url}/readyz").json()["profile"] == profile
                accepted = httpx.post(f"{api.url}/tasks/add", json={"args": [2, 3]})
                assert accepted.status_code == 202, accepted.text
                status_url = api.url + accepted.json()["status_url"]
                done = wait_for(
                    lambda: (s := httpx.get(status_url).json())["state"] == "SUCCESS" and s,  # noqa: B023 - polled here
                    30,
                    f"add on {profile}",
                )
                assert done["result"] == 5
                # The worker really used this profile's broker.
                broker = redis_broker if profile == "redis" else rabbit_broker
                found = re.search(r"Connected to (\S+)", worker.logs())
                assert found, worker.logs()
                connected = found.group(1)
                assert f"127.0.0.1:{broker.port}/" in connected, connected
