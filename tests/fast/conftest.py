"""The fast tier: no broker, no Docker, no subprocess broker nodes (``make test-fast``, seconds).

The API runs in process through ``create_app(settings, celery_app=...)`` with a Celery app on
Celery's in-memory transport (``memory://``) and an in-memory result backend: the settings stay
the production ones (they accept only real broker URLs, which nothing here connects to), only the
app the API publishes through is swapped. Dead letters come from ``MemoryDeadLetterStore``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from kombu.transport import memory

from services.api.app import create_app
from worker.celery_app import create_celery
from worker.dead_letters import DeadLetter, DeadLetterStore, ReplayOutcome
from worker.settings import Settings
from worker.topology import WORK_QUEUES

#: Addresses nothing listens on: a test that reached a real broker or Redis would fail, not hang.
NOWHERE = "127.0.0.1:9"
API_KEY = "fast-tier-key"


def fast_settings(profile: str = "redis", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "broker_profile": profile,
        "redis_url": f"redis://{NOWHERE}/0",
        "rabbitmq_url": f"amqp://brokerstack:secret@{NOWHERE}/brokerstack",
        "result_backend_url": f"redis://{NOWHERE}/1",
        "publish_timeout": 2.0,
        "environment": "test",
    }
    return Settings(**{**values, **overrides})


def memory_celery(settings: Settings) -> Celery:
    """The Celery app ``settings`` build, publishing to ``memory://`` and storing results in memory."""
    app = create_celery(settings, main="api-fast")
    app.conf.update(
        broker_url="memory://",
        broker_transport="memory",
        broker_transport_options={},
        result_backend="cache+memory://",
    )
    app.backend_cls = None  # Celery's backend for the URL above, not brokerstack's Redis one
    return app


def queued(app: Celery, queue: str) -> list[Any]:
    """Take every message waiting in ``queue`` of the in-memory broker (kombu messages)."""
    taken = []
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            taken.append(message)
    return taken


class MemoryDeadLetterStore(DeadLetterStore):
    """A dead-letter store in a list; replay "publishes" by recording the call."""

    def __init__(self, app: Celery, letters: list[DeadLetter] | None = None) -> None:
        super().__init__(app)
        self.letters = list(letters or [])
        self.replayed: list[str] = []

    def capture(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    def list_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self.letters[:limit] if limit else list(self.letters)

    def replay(self, ids: list[str] | None = None) -> list[ReplayOutcome]:
        known = {letter.id: letter for letter in self.letters}
        outcomes = []
        for letter_id in list(known) if ids is None else ids:
            letter = known.get(letter_id)
            if letter is None:
                outcomes.append(ReplayOutcome(id=letter_id, ok=False, error="no such dead letter"))
                continue
            self.letters.remove(letter)
            self.replayed.append(letter_id)
            outcomes.append(ReplayOutcome(id=letter_id, ok=True, task_id=f"new-{letter_id}", queue=letter.queue))
        return outcomes

    def purge(self) -> int:
        count, self.letters = len(self.letters), []
        return count

    def depth(self) -> int:
        return len(self.letters)


def dead_letter(letter_id: str, **fields: Any) -> DeadLetter:
    values: dict[str, Any] = {
        "id": letter_id,
        "task_id": letter_id,
        "name": "worker.tasks.email.send_email",
        "args": ["u1", "someone@example.com"],
        "kwargs": {},
        "queue": "high_priority",
        "reason": "failed",
        "exception": "MailServerDown: the fake mail server is down",
        "traceback": "Traceback (most recent call last): ...",
        "retries": 3,
        "first_death_at": "2026-01-01T00:00:00.000+00:00",
        "last_death_at": "2026-01-01T00:00:00.000+00:00",
    }
    return DeadLetter(**{**values, **fields})


@pytest.fixture(autouse=True)
def _empty_memory_broker() -> Iterator[None]:
    """The in-memory broker is process-wide state: every test starts with it empty."""
    yield
    memory.Channel.queues.clear()
    memory.Transport.global_state.clear()


@pytest.fixture
def make_memory_api() -> Iterator[Callable[..., tuple[TestClient, Celery]]]:
    """``make_memory_api(settings)`` -> (a started TestClient, the in-memory Celery app behind it)."""
    clients: list[TestClient] = []

    def make(settings: Settings, store: DeadLetterStore | None = None) -> tuple[TestClient, Celery]:
        celery_app = memory_celery(settings)
        api = create_app(settings, celery_app=celery_app)
        api.state.dead_letters = store or MemoryDeadLetterStore(celery_app)
        client = TestClient(api)
        client.__enter__()
        clients.append(client)
        for queue in WORK_QUEUES:  # nothing left from start-up
            queued(celery_app, queue)
        return client, celery_app

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(params=["redis", "rabbitmq"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def memory_api(make_memory_api: Callable[..., tuple[TestClient, Celery]], profile: str) -> tuple[TestClient, Celery]:
    """The API with its default settings (no API key) on ``profile``, over the in-memory broker."""
    return make_memory_api(fast_settings(profile))
