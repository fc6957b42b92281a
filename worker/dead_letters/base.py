"""The dead-letter store interface: what the worker hooks, the CLI and the API use."""

from __future__ import annotations

import hashlib
import uuid
from abc import ABC, abstractmethod
from typing import Any

from celery import Celery
from pydantic import BaseModel

from worker.dead_letters.record import DeadLetter
from worker.topology import DEFAULT_QUEUE, TASK_ROUTES

#: Headers a replayed message carries: the record it came from and how often it was replayed.
REPLAY_OF_HEADER = "brokerstack_replay_of"
REPLAYS_HEADER = "brokerstack_replays"


class ReplayOutcome(BaseModel):
    id: str
    ok: bool
    task_id: str | None = None
    queue: str | None = None
    error: str | None = None


class DeadLetterStore(ABC):
    """Dead letters of one broker.

    ``native_rejects``: the broker itself dead-letters a message a worker rejects (RabbitMQ's DLX),
    so the worker only adds what the broker cannot know (the exception) with ``annotate``; where
    it does not (Redis), the worker ``capture``s the whole record.
    """

    native_rejects: bool = False

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.settings = app.brokerstack_settings

    # --- the worker side ----------------------------------------------------------------------

    @abstractmethod
    def capture(self, letter: DeadLetter) -> None:
        """Dead-letter something the broker did not (and could not) dead-letter itself."""

    def annotate(self, letter: DeadLetter) -> None:
        """Add the worker's knowledge (reason, exception) to a message the broker dead-letters."""
        self.capture(letter)

    # --- the operator side --------------------------------------------------------------------

    @abstractmethod
    def list_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters (0: all of them). ``brokerstack dlq list`` and
        ``GET /dlq`` show these. (Named ``list_letters``, not ``list``: a method called ``list``
        shadows the built-in inside the class body, and ``list[...]`` annotations below it would
        name the method.)"""

    def get(self, letter_id: str) -> DeadLetter | None:
        return next((letter for letter in self.list_letters(limit=0) if letter.id == letter_id), None)

    @abstractmethod
    def replay(self, ids: list[str] | None = None) -> list[ReplayOutcome]:
        """Publish the records (all of them when ``ids`` is None) to their original queues as new
        tasks; a record leaves the store only once the broker took its new message."""

    @abstractmethod
    def purge(self) -> int:
        """Drop every dead letter; returns how many."""

    @abstractmethod
    def depth(self) -> int:
        """How many dead letters there are."""

    def ensure_declared(self) -> None:  # noqa: B027 - optional hook: most brokers need nothing declared
        """Create what must exist before the first message dies (nothing on most brokers)."""


def new_task_id() -> str:
    return str(uuid.uuid4())


def default_queue_for(task_name: str | None) -> str:
    return TASK_ROUTES.get(task_name or "", {}).get("queue", DEFAULT_QUEUE)


def digest_id(body: bytes, headers: dict[str, Any]) -> str:
    """An id for a message that has no task id (poison), stable across listings: the broker's
    own ``x-`` headers (x-death and friends) are left out, since they change as it dies again."""
    own = sorted(
        (k, repr(v)) for k, v in headers.items() if not k.startswith("x-") and not k.startswith("brokerstack_")
    )
    return "msg-" + hashlib.sha1(body + repr(own).encode()).hexdigest()[:16]
