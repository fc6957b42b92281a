"""The API's answer to delayed tasks (issue 14), the same on both profiles: countdown/ETA up to
MAX_TASK_DELAY (default 7 days) is accepted, beyond it is a 422 naming the setting; an expiry
before the task is due is a 422; an ETA in the past is accepted and runs now."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery
from fastapi.testclient import TestClient

from services.api.catalog import eta_in_past
from services.api.schemas import TaskAccepted, TaskCall
from tests.fast.conftest import fast_settings, queued
from worker.brokers import profile_for
from worker.settings import ConfigError, load_settings

MakeApi = Callable[..., tuple[TestClient, Celery]]
WEEK = 7 * 24 * 3600


def test_a_day_long_countdown_is_accepted_on_both_profiles(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    assert api.post("/tasks/add", json={"args": [1, 2], "countdown": 86400}).status_code == 202
    [message] = queued(celery_app, "default")
    assert datetime.fromisoformat(message.headers["eta"]) - datetime.now(UTC) > timedelta(hours=23)


@pytest.mark.parametrize(
    ("delay", "field"),
    [({"countdown": WEEK + 1}, "countdown"), ({"eta": "in 8 days"}, "eta")],
)
def test_beyond_max_task_delay_is_a_422_naming_the_setting(
    memory_api: tuple[TestClient, Celery], delay: dict, field: str
) -> None:
    api, celery_app = memory_api
    if "eta" in delay:
        delay = {"eta": (datetime.now(UTC) + timedelta(days=8)).isoformat()}
    response = api.post("/tasks/add", json={"args": [1, 2], **delay})
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", field]
    assert "MAX_TASK_DELAY" in problem["msg"]
    assert queued(celery_app, "default") == []
    assert api.post("/tasks/add", json={"args": [1, 2], "countdown": WEEK}).status_code == 202


@pytest.mark.parametrize("profile", ["redis", "rabbitmq"])
def test_max_task_delay_is_the_one_limit(make_memory_api: MakeApi, profile: str) -> None:
    api, _ = make_memory_api(fast_settings(profile, max_task_delay=60))
    assert api.post("/tasks/add", json={"args": [1, 2], "countdown": 60}).status_code == 202
    refused = api.post("/tasks/add", json={"args": [1, 2], "countdown": 61})
    assert refused.status_code == 422 and "MAX_TASK_DELAY" in refused.text


def test_kombus_redis_transport_keeps_its_visibility_timeout_limit(make_memory_api: MakeApi) -> None:
    """REDIS_TRANSPORT=kombu hands a delayed task to a worker at once, as stock Celery does: the
    visibility timeout still bounds it, and the 422 says which setting."""
    settings = fast_settings("redis", redis_transport="kombu")
    assert profile_for(settings).max_delay[0] == settings.redis_visibility_timeout
    api, _ = make_memory_api(settings)
    refused = api.post("/tasks/add", json={"args": [1, 2], "countdown": settings.redis_visibility_timeout + 1})
    assert refused.status_code == 422 and "REDIS_VISIBILITY_TIMEOUT" in refused.text


def test_expires_before_the_eta_is_a_422(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    eta = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = api.post("/tasks/add", json={"args": [1, 2], "eta": eta, "expires": 1800})
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["body", "expires"], "expires_before_due")


def test_an_eta_in_the_past_is_accepted_and_runs_now(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    eta = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    assert api.post("/tasks/add", json={"args": [1, 2], "eta": eta}).status_code == 202
    [message] = queued(celery_app, "default")  # on its queue now, not held back
    assert datetime.fromisoformat(message.headers["eta"]) < datetime.now(UTC)


def test_eta_in_past_is_said_only_when_true() -> None:
    past = TaskCall(eta=datetime.now(UTC) - timedelta(seconds=1))
    assert eta_in_past(past)
    assert not eta_in_past(TaskCall(eta=datetime.now(UTC) + timedelta(seconds=60)))
    assert not eta_in_past(TaskCall(countdown=0))
    assert not eta_in_past(TaskCall())
    assert TaskAccepted(task_id="t", status_url="/tasks/t").model_dump() == {"task_id": "t", "status_url": "/tasks/t"}
    said = TaskAccepted(task_id="t", status_url="/tasks/t", eta_in_past=True).model_dump()
    assert said == {"task_id": "t", "status_url": "/tasks/t", "eta_in_past": True}


def test_the_202_says_when_the_eta_had_passed(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    eta = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    assert api.post("/tasks/add", json={"args": [1, 2], "eta": eta}).json()["eta_in_past"] is True


def test_max_task_delay_is_bounded_by_what_rabbitmq_can_hold() -> None:
    with pytest.raises(ConfigError, match="MAX_TASK_DELAY"):
        load_settings(max_task_delay=2**28)
    assert load_settings(max_task_delay=2**28 - 1).max_task_delay == 2**28 - 1
