"""The producer API's routes and their JSON contracts, on Celery's in-memory transport.

What reaches the broker is read back off the in-memory queues: the task, its arguments, the queue
it was routed to, its priority and schedule. Results are written straight into the in-memory
result backend. Both profiles (the settings differ; the transport does not).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import kombu.exceptions
import pytest
from celery import Celery
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.api.docs import assets_dir
from tests.fast.conftest import API_KEY, NOWHERE, MemoryDeadLetterStore, dead_letter, fast_settings, queued
from worker.celery_app import create_celery
from worker.settings import Settings
from worker.tasks import EXPOSED_TASKS
from worker.topology import DEFAULT_QUEUE, TASK_ROUTES, WORK_QUEUES

MakeApi = Callable[..., tuple[TestClient, Celery]]


def test_healthz(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    assert api.get("/healthz").json() == {"status": "ok"}


def test_task_list_names_every_exposed_task_with_its_queue(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    tasks = {task["name"]: task for task in api.get("/tasks").json()["tasks"]}
    assert set(tasks) == set(EXPOSED_TASKS)
    for short, name in EXPOSED_TASKS.items():
        assert tasks[short]["task"] == name
        assert tasks[short]["queue"] == TASK_ROUTES.get(name, {}).get("queue", DEFAULT_QUEUE)
        assert {"name", "task", "queue", "parameters", "doc"} <= set(tasks[short])


def test_enqueue_publishes_one_message_on_the_routed_queue(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    response = api.post("/tasks/add", json={"args": [2, 3]})
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"task_id", "status_url"}
    assert body["status_url"] == f"/tasks/{body['task_id']}" == response.headers["location"]
    [message] = queued(celery_app, "default")
    assert message.headers["task"] == "worker.tasks.basic.add"
    assert message.headers["id"] == body["task_id"]
    args, kwargs, _ = message.decode()
    assert (args, kwargs) == ([2, 3], {})
    assert message.content_type == "application/json"  # JSON only, never pickle
    assert [queued(celery_app, q) for q in WORK_QUEUES if q != "default"] == [[], []]


def test_publish_options_reach_the_message(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    response = api.post(
        "/tasks/multiply",
        json={"args": [2, 3], "queue": "low_priority", "priority": 7, "countdown": 60, "expires": 600},
    )
    assert response.status_code == 202, response.text
    [message] = queued(celery_app, "low_priority")
    assert message.properties["priority"] == 7
    eta = datetime.fromisoformat(message.headers["eta"])
    assert timedelta(seconds=50) < eta - datetime.now(UTC) <= timedelta(seconds=60)
    assert message.headers["expires"] is not None


def test_tasks_route_by_name(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    assert api.post("/tasks/send_email", json={"args": ["u1", "a@example.com"]}).status_code == 202
    assert api.post("/tasks/long_batch_job", json={"args": [3]}).status_code == 202
    assert [m.headers["task"] for m in queued(celery_app, "high_priority")] == ["worker.tasks.email.send_email"]
    assert [m.headers["task"] for m in queued(celery_app, "low_priority")] == ["worker.tasks.batch.long_batch_job"]


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/tasks/nope", {}, 404, "not_found"),
        ("/tasks/add", {"args": [1]}, 422, "validation_error"),
        ("/tasks/add", {"args": [1, 2], "priority": 10}, 422, "validation_error"),
        ("/tasks/add", {"args": [1, 2], "queue": "nowhere"}, 422, "validation_error"),
        ("/tasks/add", {"args": [1, 2], "countdown": 1, "eta": "2030-01-01T00:00:00"}, 422, "validation_error"),
        ("/tasks/add", {"args": [1, 2], "surprise": True}, 422, "validation_error"),
        ("/tasks/add", {"args": [1, 2], "countdown": 10**9}, 422, "validation_error"),
        ("/tasks/add", {"args": [1, 2], "countdown": 60, "expires": 30}, 422, "validation_error"),
        ("/tasks/add", {"args": [1, 2], "countdown": 60, "expires": 60}, 422, "validation_error"),
        ("/tasks/add", {"args": [1], "kwargs": {"yy": 2}}, 422, "validation_error"),
    ],
)
def test_bad_calls_are_refused_before_anything_is_published(
    memory_api: tuple[TestClient, Celery], path: str, body: dict[str, Any], status: int, error: str
) -> None:
    api, celery_app = memory_api
    response = api.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert all(queued(celery_app, q) == [] for q in WORK_QUEUES)


def test_validation_errors_name_the_field(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    detail = api.post("/tasks/add", json={"args": [1, 2], "priority": 10}).json()["detail"]
    assert [item["loc"] for item in detail] == [["body", "priority"]]


def test_a_misspelt_keyword_is_named_not_reported_as_a_missing_argument(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    response = api.post("/tasks/add", json={"args": [1], "kwargs": {"yy": 2}})
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "kwargs", "yy"]
    assert problem["type"] == "unexpected_keyword_argument"
    assert "'yy'" in problem["msg"] and "did you mean 'y'?" in problem["msg"]
    assert "missing" not in problem["msg"]
    # In a workflow step too, with the step's position.
    step = api.post(
        "/workflows/group",
        json={"tasks": [{"name": "add", "args": [1, 2]}, {"name": "add", "kwargs": {"x": 1, "z": 2}}]},
    )
    assert [p["loc"] for p in step.json()["detail"]] == [["body", "tasks", 1, "kwargs", "z"]]


@pytest.mark.parametrize("delay", [{"countdown": 120}, {"eta": "in 120 s"}])
def test_expires_before_the_task_is_due_is_refused(
    memory_api: tuple[TestClient, Celery], delay: dict[str, Any]
) -> None:
    api, celery_app = memory_api
    if "eta" in delay:
        delay = {"eta": (datetime.now(UTC) + timedelta(seconds=120)).isoformat()}
    refused = api.post("/tasks/add", json={"args": [1, 2], "expires": 60, **delay})
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["detail"]
    assert problem["loc"] == ["body", "expires"] and problem["type"] == "expires_before_due"
    assert "dead letters" in problem["msg"] and next(iter(delay)) in problem["msg"]
    assert api.post("/tasks/add", json={"args": [1, 2], "expires": 600, **delay}).status_code == 202
    assert len(queued(celery_app, "default")) == 1


def test_task_status_reads_the_result_backend(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    task_id = api.post("/tasks/add", json={"args": [1, 2]}).json()["task_id"]
    assert api.get(f"/tasks/{task_id}").json() == {
        "task_id": task_id,
        "state": "PENDING",
        "result": None,
        "error": None,
    }
    celery_app.backend.store_result("done-1", 5, "SUCCESS")
    assert api.get("/tasks/done-1").json() == {"task_id": "done-1", "state": "SUCCESS", "result": 5, "error": None}
    celery_app.backend.mark_as_failure("failed-1", ValueError("boom"))
    failed = api.get("/tasks/failed-1").json()
    assert (failed["state"], failed["error"]) == ("FAILURE", {"type": "ValueError", "message": "boom"})
    assert api.get("/tasks/bad id").status_code == 422


def test_an_id_nobody_published_is_404_not_pending_forever(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    unknown = api.get("/tasks/never-sent")
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"] == "not_found" and "never-sent" in unknown.json()["detail"]
    # Sent by someone else (beat, the CLI): known once it has a result.
    celery_app.backend.store_result("sent-by-beat", None, "STARTED")
    assert api.get("/tasks/sent-by-beat").json()["state"] == "STARTED"


def test_revoke(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    task_id = api.post("/tasks/add", json={"args": [1, 2], "countdown": 60}).json()["task_id"]
    response = api.delete(f"/tasks/{task_id}", params={"terminate": "true"})
    assert response.status_code == 202
    assert response.json() == {"task_id": task_id, "revoked": True, "terminate": True}


def test_revoking_an_unknown_id_is_404(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    response = api.delete("/tasks/some-task")
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"


def test_chain_group_chord(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    chain = api.post(
        "/workflows/chain", json={"tasks": [{"name": "add", "args": [1, 2]}, {"name": "multiply", "args": [3]}]}
    )
    assert chain.status_code == 202, chain.text
    assert len(chain.json()["task_ids"]) == 2 and chain.json()["task_id"] == chain.json()["task_ids"][-1]
    [first] = queued(celery_app, "default")
    assert first.headers["id"] == chain.json()["task_ids"][0]  # only the first step is queued
    # Later steps are sent by workers under the ids handed out here: every one of them is known.
    assert [api.get(f"/tasks/{task_id}").status_code for task_id in chain.json()["task_ids"]] == [200, 200]

    group = api.post("/workflows/group", json={"tasks": [{"name": "add", "args": [1, 2]}] * 3}).json()
    assert sorted(m.headers["id"] for m in queued(celery_app, "default")) == sorted(group["task_ids"])
    assert {api.get(f"/tasks/{task_id}").status_code for task_id in group["task_ids"]} == {200}
    status = api.get(group["status_url"]).json()
    assert (status["group_id"], status["completed"], status["total"]) == (group["group_id"], 0, 3)
    assert api.get("/workflows/no-such-group").status_code == 404

    chord = api.post(
        "/workflows/chord",
        json={
            "header": [{"name": "add", "args": [1, 2]}, {"name": "add", "args": [3, 4]}],
            "callback": {"name": "sum_results"},
        },
    )
    assert chord.status_code == 202, chord.text
    header = [m.headers["id"] for m in queued(celery_app, "default")]  # the callback waits for them
    assert len(header) == 2 and set(header) < set(chord.json()["task_ids"])
    assert chord.json()["task_ids"][-1] == chord.json()["task_id"]
    assert {api.get(f"/tasks/{task_id}").status_code for task_id in chord.json()["task_ids"]} == {200}

    unknown = api.post("/workflows/chain", json={"tasks": [{"name": "add", "args": [1, 2]}, {"name": "nope"}]})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "tasks", 1, "name"]


def test_signup_hands_off_two_tasks_and_refuses_a_second_signup(memory_api: tuple[TestClient, Celery]) -> None:
    api, celery_app = memory_api
    body = {"email": "Someone@Example.com", "name": "Someone"}
    response = api.post("/users/signup", json=body)
    assert response.status_code == 201, response.text
    assert set(response.json()["tasks"]) == {"send_welcome_email", "notify_admin_new_signup"}
    assert response.json()["email"] == "someone@example.com"
    sent = {m.headers["id"] for m in queued(celery_app, "high_priority")}
    assert sent == set(response.json()["tasks"].values())
    assert {api.get(f"/tasks/{task_id}").status_code for task_id in sent} == {200}
    assert api.post("/users/signup", json=body).status_code == 409


def test_api_key_guards_mutations(make_memory_api: MakeApi) -> None:
    api, _ = make_memory_api(fast_settings(api_key=API_KEY))
    assert api.get("/tasks").status_code == 200
    refused = api.post("/tasks/add", json={"args": [1, 2]})
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert api.post("/tasks/add", json={"args": [1, 2]}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert api.post("/tasks/add", json={"args": [1, 2]}, headers={"X-API-Key": API_KEY}).status_code == 202


def test_oversized_bodies_are_refused(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    response = api.post(
        "/tasks/add", content=b"[" + b"1," * (1 << 20) + b"1]", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_broker_errors_become_503_with_retry_after(
    memory_api: tuple[TestClient, Celery], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, celery_app = memory_api

    def broker_gone(*args: Any, **kwargs: Any) -> Any:
        raise kombu.exceptions.OperationalError("connection refused")

    monkeypatch.setattr(celery_app.tasks["worker.tasks.basic.add"], "apply_async", broker_gone)
    response = api.post("/tasks/add", json={"args": [1, 2]})
    assert response.status_code == 503
    assert response.json()["error"] == "broker_unavailable"
    assert response.headers["retry-after"] == "2"
    assert any(
        line.startswith("brokerstack_broker_calls_total{") and 'outcome="unavailable"' in line and line.endswith(" 1.0")
        for line in api.get("/metrics").text.splitlines()
    )


def test_readyz_reports_broker_and_result_backend(
    memory_api: tuple[TestClient, Celery], monkeypatch: pytest.MonkeyPatch, profile: str
) -> None:
    api, _ = memory_api
    producer = api.app.state.producer  # type: ignore[attr-defined]
    monkeypatch.setattr(producer, "check_result_backend", lambda: None)  # the in-memory backend has no ping
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "profile": profile,
        "queue_type": "classic" if profile == "rabbitmq" else None,
        "broker": {"ok": True},
        "result_backend": {"ok": True},
    }

    def backend_gone() -> None:
        raise ConnectionError("refused")

    monkeypatch.setattr(producer, "check_result_backend", backend_gone)
    down = api.get("/readyz")
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable" and down.json()["result_backend"]["ok"] is False


def test_metrics(memory_api: tuple[TestClient, Celery], profile: str) -> None:
    api, _ = memory_api
    api.post("/tasks/add", json={"args": [1, 2]})
    text = api.get("/metrics").text
    assert f'brokerstack_broker_up{{profile="{profile}"}} 1' in text
    assert f'brokerstack_queue_depth{{profile="{profile}",queue="default"}} 1' in text
    assert f'brokerstack_dead_letters{{profile="{profile}"}} 0' in text
    assert "# TYPE brokerstack_broker_calls_total counter" in text


# --- /dlq ---------------------------------------------------------------------------------------


def test_dlq_list_and_show(make_memory_api: MakeApi) -> None:
    settings = fast_settings()
    api, celery_app = make_memory_api(settings)
    store = MemoryDeadLetterStore(celery_app, [dead_letter("t1"), dead_letter("t2", reason="expired")])
    api.app.state.dead_letters = store  # type: ignore[attr-defined]
    listed = api.get("/dlq").json()
    assert [letter["id"] for letter in listed] == ["t1", "t2"]
    assert {
        "id",
        "task_id",
        "name",
        "queue",
        "reason",
        "exception",
        "retries",
        "death_count",
        "last_death_at",
        "first_death_at",
        "args",
        "kwargs",
        "replay_of",
        "replays",
    } <= set(listed[0])
    assert "traceback" not in listed[0] and "raw" not in listed[0]
    assert len(api.get("/dlq", params={"limit": 1}).json()) == 1
    shown = api.get("/dlq/t2").json()
    assert shown["reason"] == "expired" and shown["traceback"].startswith("Traceback")
    assert api.get("/dlq/t3").status_code == 404


def test_dlq_replay_and_purge_need_a_configured_and_sent_key(make_memory_api: MakeApi) -> None:
    open_api, celery_app = make_memory_api(fast_settings())
    assert open_api.post("/dlq/replay", json={"all": True}).status_code == 403
    assert open_api.delete("/dlq").status_code == 403

    api, celery_app = make_memory_api(fast_settings(api_key=API_KEY))
    store = MemoryDeadLetterStore(celery_app, [dead_letter("t1"), dead_letter("t2"), dead_letter("t3")])
    api.app.state.dead_letters = store  # type: ignore[attr-defined]
    key = {"X-API-Key": API_KEY}
    assert api.post("/dlq/replay", json={"all": True}).status_code == 401
    assert api.post("/dlq/replay", json={"ids": ["t1"], "all": True}, headers=key).status_code == 422
    response = api.post("/dlq/replay", json={"ids": ["t1", "nope"]}, headers=key)
    assert response.status_code == 207, response.text  # some replayed, some not: see the outcomes
    replayed = response.json()
    assert (replayed["replayed"], replayed["failed"]) == (1, 1)
    assert replayed["outcomes"][0] == {
        "id": "t1",
        "ok": True,
        "task_id": "new-t1",
        "queue": "high_priority",
        "error": None,
    }
    assert replayed["outcomes"][1] == {
        "id": "nope",
        "ok": False,
        "task_id": None,
        "queue": None,
        "error": "no such dead letter",
    }
    # The replayed task is one this API published: it polls as PENDING, not 404.
    assert api.get("/tasks/new-t1", headers=key).json()["state"] == "PENDING"
    assert api.post("/dlq/replay", json={"ids": ["t2"]}, headers=key).status_code == 200
    assert api.delete("/dlq", headers=key).json() == {"purged": 1}
    assert api.get("/dlq", headers=key).json() == []


def test_dlq_replay_of_ids_that_are_no_dead_letters_is_404(make_memory_api: MakeApi) -> None:
    api, celery_app = make_memory_api(fast_settings(api_key=API_KEY))
    api.app.state.dead_letters = MemoryDeadLetterStore(celery_app, [dead_letter("t1")])  # type: ignore[attr-defined]
    response = api.post("/dlq/replay", json={"ids": ["nope", "nada"]}, headers={"X-API-Key": API_KEY})
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found" and "'nope'" in response.json()["detail"]
    assert api.app.state.dead_letters.depth() == 1  # type: ignore[attr-defined]


def test_openapi_lists_every_documented_endpoint(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    paths = set(api.get("/openapi.json").json()["paths"])
    assert {
        "/tasks",
        "/tasks/{name}",
        "/tasks/{task_id}",
        "/workflows/chain",
        "/workflows/group",
        "/workflows/chord",
        "/workflows/{group_id}",
        "/users/signup",
        "/dlq",
        "/dlq/{letter_id}",
        "/dlq/replay",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= paths


# --- who may read task data (API_KEY, API_READ_KEY) -----------------------------------------------

READ_KEY = "fast-tier-read-key"
#: Every GET that returns task data: ids, arguments, results, exceptions, tracebacks.
TASK_DATA_ENDPOINTS = ("/tasks/{task_id}", "/workflows/{group_id}", "/dlq", "/dlq/{letter_id}")
#: Every endpoint that changes something, with a body it accepts.
MUTATING_ENDPOINTS = (
    ("POST", "/tasks/add", {"args": [1, 2]}),
    ("DELETE", "/tasks/{task_id}", None),
    ("POST", "/workflows/chain", {"tasks": [{"name": "add", "args": [1, 2]}]}),
    ("POST", "/workflows/group", {"tasks": [{"name": "add", "args": [1, 2]}]}),
    ("POST", "/workflows/chord", {"header": [{"name": "add", "args": [1, 2]}], "callback": {"name": "sum_results"}}),
    ("POST", "/users/signup", {"email": "new@example.com", "name": "New"}),
    ("POST", "/dlq/replay", {"ids": ["{letter_id}"]}),
    ("DELETE", "/dlq", None),
)
#: Open with the keys set: none of them carries task data.
OPEN_ENDPOINTS = ("/healthz", "/readyz", "/metrics", "/tasks", "/openapi.json", "/docs")
#: In the dead letter's arguments: must never reach someone without a key.
SECRET_ADDRESS = "private.person@example.com"


def keyed_settings() -> Settings:
    # model_copy: the read key reaches Settings whether or not it declares api_read_key yet.
    return fast_settings(api_key=API_KEY, api_read_key=READ_KEY)


@pytest.fixture
def keyed_api(make_memory_api: MakeApi, monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, dict[str, str]]:
    """The API with both keys set, one published task, one saved group and one dead letter."""
    api, celery_app = make_memory_api(keyed_settings())
    monkeypatch.setattr(api.app.state.producer, "check_result_backend", lambda: None)  # type: ignore[attr-defined]
    letter = dead_letter("letter-1", args=["u1", SECRET_ADDRESS])
    api.app.state.dead_letters = MemoryDeadLetterStore(celery_app, [letter])  # type: ignore[attr-defined]
    key = {"X-API-Key": API_KEY}
    task_id = api.post("/tasks/send_email", json={"args": ["u1", SECRET_ADDRESS]}, headers=key).json()["task_id"]
    group_id = api.post("/workflows/group", json={"tasks": [{"name": "add", "args": [1, 2]}]}, headers=key).json()
    return api, {"task_id": task_id, "group_id": group_id["group_id"], "letter_id": "letter-1"}


@pytest.mark.parametrize("endpoint", TASK_DATA_ENDPOINTS)
def test_task_data_needs_a_key_once_api_key_is_set(keyed_api: tuple[TestClient, dict[str, str]], endpoint: str) -> None:
    api, ids = keyed_api
    path = endpoint.format(**ids)
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        refused = api.get(path, headers=headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.json()["error"] == "unauthorized"
        assert ids["task_id"] not in refused.text and SECRET_ADDRESS not in refused.text
    for key in (API_KEY, READ_KEY):
        assert api.get(path, headers={"X-API-Key": key}).status_code == 200, key


@pytest.mark.parametrize(("method", "endpoint", "body"), MUTATING_ENDPOINTS, ids=lambda v: str(v)[:30])
def test_the_read_key_cannot_change_anything(
    keyed_api: tuple[TestClient, dict[str, str]], method: str, endpoint: str, body: dict[str, Any] | None
) -> None:
    api, ids = keyed_api
    path = endpoint.format(**ids)
    if body and "ids" in body:
        body = {"ids": [ids["letter_id"]]}
    refused = api.request(method, path, json=body, headers={"X-API-Key": READ_KEY})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "forbidden" and "API_READ_KEY" in refused.json()["detail"]
    assert api.request(method, path, json=body).status_code == 401
    assert api.request(method, path, json=body, headers={"X-API-Key": API_KEY}).status_code < 300


@pytest.mark.parametrize("endpoint", OPEN_ENDPOINTS)
def test_health_metrics_and_docs_stay_open_and_carry_no_task_data(
    keyed_api: tuple[TestClient, dict[str, str]], endpoint: str
) -> None:
    api, ids = keyed_api
    response = api.get(endpoint)
    assert response.status_code == 200, response.text
    for secret in (ids["task_id"], ids["group_id"], ids["letter_id"], SECRET_ADDRESS, "Traceback"):
        assert secret not in response.text, f"{endpoint} shows {secret!r}"


def test_without_keys_the_reads_stay_open(memory_api: tuple[TestClient, Celery]) -> None:
    api, _ = memory_api
    task_id = api.post("/tasks/add", json={"args": [1, 2]}).json()["task_id"]
    assert api.get(f"/tasks/{task_id}").status_code == 200
    assert api.get("/dlq").status_code == 200


# --- /docs without a CDN ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_another_host(memory_api: tuple[TestClient, Celery], page: str) -> None:
    api, _ = memory_api
    response = api.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert re.findall(r"https?://|//[a-z0-9-]+\.[a-z]", response.text, flags=re.IGNORECASE) == []
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", response.text)
    assert all(asset.startswith("/") for asset in assets), assets
    if assets_dir() is None:
        pytest.skip("fastapi-offline not installed: the page is the plain link to /openapi.json")
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in assets:
        assert api.get(asset).status_code == 200, asset


# --- the result backend is down ----------------------------------------------------------------------


def test_task_status_is_a_json_503_when_the_result_backend_is_unreachable() -> None:
    """Celery retries a refused connection a few times, then raises BackendGetMetaError: that
    must be a 503 like the connection error itself, not a plain-text 500."""
    # Long enough for Celery's own retries to give up first (without the fix: BackendGetMetaError).
    settings = fast_settings(publish_timeout=20.0)
    assert settings.result_backend == f"redis://{NOWHERE}/1"  # a real Redis URL where nothing listens
    celery_app = create_celery(settings, main="api-fast", producer_only=True)
    celery_app.conf.update(broker_url="memory://", broker_transport="memory", broker_transport_options={})
    with TestClient(create_app(settings, celery_app=celery_app), raise_server_exceptions=False) as api:
        for path in ("/tasks/some-task", "/workflows/some-group"):
            started = time.monotonic()
            response = api.get(path)
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"] == "result_backend_unavailable"
            assert "ConnectionError" in response.json()["detail"], response.json()
            assert response.headers["retry-after"]
            assert time.monotonic() - started < settings.publish_timeout
