"""Idempotency-Key at the API edge, on the in-memory transport (the per-process store stands in for
Redis here; tests/integration/test_idempotency.py runs the Redis one against real brokers)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient

from services.api.idempotency import (
    HEADER,
    Claim,
    MemoryIdempotencyStore,
)
from services.api.producer import BrokerUnavailable
from tests.fast.conftest import fast_settings, queued
from tests.helpers import wait_for

QUEUE = "high_priority"  # where send_email is routed
SEND = {"args": ["u1", "a@example.com"]}


def keyed(key: str) -> dict[str, str]:
    return {HEADER: key}


def test_same_key_same_body_is_the_first_answer_and_one_message(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    first = api.post("/tasks/send_email", json=SEND, headers=keyed("order-1"))
    again = api.post("/tasks/send_email", json={"kwargs": {}, **SEND}, headers=keyed("order-1"))  # same, spelled out
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert first.json() == again.json()
    assert again.headers["location"] == first.json()["status_url"]
    [message] = queued(celery_app, QUEUE)
    assert message.headers["id"] == first.json()["task_id"]


def test_the_task_id_is_derived_from_the_key(make_memory_api: Any, profile: str) -> None:
    """Another API process (or this one restarted, its store empty) derives the same id."""
    one, _ = make_memory_api(fast_settings(profile))
    other, _ = make_memory_api(fast_settings(profile))
    task_id = one.post("/tasks/send_email", json=SEND, headers=keyed("k")).json()["task_id"]
    assert other.post("/tasks/send_email", json=SEND, headers=keyed("k")).json()["task_id"] == task_id
    assert other.post("/tasks/send_email", json=SEND, headers=keyed("k-other")).json()["task_id"] != task_id
    assert uuid.UUID(task_id).version == 5
    assert uuid.UUID(one.post("/tasks/send_email", json=SEND).json()["task_id"]).version == 4


def test_without_a_key_every_post_is_a_new_task(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    ids = {api.post("/tasks/send_email", json=SEND).json()["task_id"] for _ in range(2)}
    assert len(ids) == 2
    assert len(queued(celery_app, QUEUE)) == 2


def test_same_key_other_body_is_422_naming_the_header(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    assert api.post("/tasks/send_email", json=SEND, headers=keyed("k2")).status_code == 202
    other = api.post("/tasks/send_email", json={"args": ["u2", "b@example.com"]}, headers=keyed("k2"))
    assert other.status_code == 422, other.text
    assert other.json()["detail"][0]["loc"] == ["header", HEADER]
    # Another route is another request too.
    assert api.post("/tasks/add", json={"args": [1, 2]}, headers=keyed("k2")).status_code == 422
    assert len(queued(celery_app, QUEUE)) == 1
    assert queued(celery_app, "default") == []


@pytest.mark.parametrize(
    ("key", "why"),
    [("", "empty"), ("x" * 256, "over 255 characters"), ("clé-é", "not ASCII"), ("tab\tinside", "control char")],
)
def test_bad_keys_are_422_naming_the_header(memory_api: tuple[TestClient, Celery], key: str, why: str) -> None:
    api, celery_app = memory_api
    response = api.post("/tasks/send_email", json=SEND, headers={HEADER: key.encode("utf-8")})
    assert response.status_code == 422, (why, response.text)
    assert ["header", HEADER] in [item["loc"] for item in response.json()["detail"]], why
    assert queued(celery_app, QUEUE) == []


def test_the_longest_key_is_accepted(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    assert api.post("/tasks/send_email", json=SEND, headers=keyed("x" * 255)).status_code == 202


def test_a_key_in_flight_is_409(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    body = {"args": [1, 2]}
    print_ = _body_fingerprint(api, "/tasks/add", body)
    # The key held as a request still publishing holds it (an in-flight record with its lease).
    store: MemoryIdempotencyStore = api.app.state.idempotency  # type: ignore[attr-defined]
    assert store.claim("busy", {"state": "in_flight", "fingerprint": print_, "token": "t"}, lease=60) is None
    busy = api.post("/tasks/add", json=body, headers=keyed("busy"))
    assert busy.status_code == 409, busy.text
    assert busy.json()["error"] == "conflict"
    assert busy.headers["Retry-After"]
    assert len(queued(celery_app, "default")) == 1  # the probe's message only
    # Its owner's release (a 503) lets the retry through.
    store.release("busy", "t")
    assert api.post("/tasks/add", json=body, headers=keyed("busy")).status_code == 202


def _body_fingerprint(api: TestClient, path: str, body: dict[str, Any]) -> str:
    """The fingerprint the API gives ``body`` on ``path``: read back from the stored record."""
    assert api.post(path, json=body, headers=keyed("probe-" + path)).status_code == 202
    store: MemoryIdempotencyStore = api.app.state.idempotency  # type: ignore[attr-defined]
    return str(store._current("probe-" + path)["fingerprint"])  # type: ignore[index]


def test_a_failed_publish_releases_the_key_and_the_retry_is_the_same_task(
    memory_api: tuple[TestClient, Celery], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, celery_app = memory_api
    producer = api.app.state.producer  # type: ignore[attr-defined]
    real_publish = producer.publish
    calls = {"n": 0}

    async def failing_once(fn: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise BrokerUnavailable("broker did not answer within 2 s")
        return await real_publish(fn)

    monkeypatch.setattr(producer, "publish", failing_once)
    down = api.post("/tasks/send_email", json=SEND, headers=keyed("retry-me"))
    assert down.status_code == 503, down.text
    up = api.post("/tasks/send_email", json=SEND, headers=keyed("retry-me"))
    assert up.status_code == 202, up.text
    [message] = queued(celery_app, QUEUE)
    assert message.headers["id"] == up.json()["task_id"]
    assert uuid.UUID(up.json()["task_id"]).version == 5


def test_workflows_replay_every_id(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    chain = {"tasks": [{"name": "add", "args": [1, 2]}, {"name": "multiply", "args": [3]}]}
    group = {"tasks": [{"name": "add", "args": [1, 2]}, {"name": "add", "args": [3, 4]}]}
    chord = {"header": group["tasks"], "callback": {"name": "sum_results"}}
    for path, body in (("/workflows/chain", chain), ("/workflows/group", group), ("/workflows/chord", chord)):
        first = api.post(path, json=body, headers=keyed("wf-" + path))
        again = api.post(path, json=body, headers=keyed("wf-" + path))
        assert first.status_code == again.status_code == 202, (path, first.text, again.text)
        assert first.json() == again.json(), path
    # The second posts published nothing: one message per first step / member.
    assert len([m for q in ("default", "high_priority", "low_priority") for m in queued(celery_app, q)]) == 1 + 2 + 2


def test_a_replayed_group_publish_would_reuse_the_group_and_member_ids(memory_api: tuple[TestClient, Celery]) -> None:
    """After a 503 the retry re-derives the ids: the same group id and member ids as the first try."""
    api, _ = memory_api
    group = {"tasks": [{"name": "add", "args": [1, 2]}, {"name": "add", "args": [3, 4]}]}
    first = api.post("/workflows/group", json=group, headers=keyed("g")).json()
    store: MemoryIdempotencyStore = api.app.state.idempotency  # type: ignore[attr-defined]
    store._records.clear()  # as if the first answer had never been stored
    second = api.post("/workflows/group", json=group, headers=keyed("g")).json()
    assert first == second


def test_signup_retry_is_the_first_answer_not_already_registered(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    body = {"email": "new@example.com", "name": "New"}
    first = api.post("/users/signup", json=body, headers=keyed("signup-1"))
    again = api.post("/users/signup", json=body, headers=keyed("signup-1"))
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json() == again.json()
    assert api.post("/users/signup", json=body).status_code == 409  # without the key: a new signup


def test_claim_without_a_key_derives_random_ids() -> None:
    claim = Claim(None, None, None, "fp", "token", 60)
    assert claim.task_id(0) != claim.task_id(0)


def test_a_key_expires_after_idempotency_ttl(make_memory_api: Any, profile: str) -> None:
    api, _ = make_memory_api(fast_settings(profile, idempotency_ttl=1))
    assert api.post("/tasks/send_email", json=SEND, headers=keyed("short")).status_code == 202
    other = {"args": ["u2", "b@example.com"]}
    assert api.post("/tasks/send_email", json=other, headers=keyed("short")).status_code == 422
    # Once IDEMPOTENCY_TTL has passed the key is new again: another body is another request.
    wait_for(
        lambda: api.post("/tasks/send_email", json=other, headers=keyed("short")).status_code == 202,
        5,
        "the key to expire",
        interval=0.1,
    )
