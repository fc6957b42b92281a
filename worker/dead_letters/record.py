"""One dead letter, the same shape on both brokers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

#: Why a message died:
#:   failed          the task raised after its retries were used up (or hit its hard time limit)
#:   rejected        the task (or a consumer) rejected the message without requeueing it
#:   expired         it was still waiting when its ``expires`` time passed
#:   poison          it could not be run at all: undecodable body, unregistered task, bad format
#:   delivery-limit  it was delivered more often than the queue allows (quorum queues)
#:   maxlen          the queue was full (a length limit policy dropped it)
Reason = Literal["failed", "rejected", "expired", "poison", "delivery-limit", "maxlen"]
REASONS: tuple[str, ...] = ("failed", "rejected", "expired", "poison", "delivery-limit", "maxlen")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def iso_from_timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class RawMessage(BaseModel):
    """The message as the broker had it, for poison messages that cannot be rebuilt from a task
    name and arguments. ``body`` is base64 so any bytes survive JSON."""

    body_b64: str
    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(
        cls,
        body: bytes | str,
        content_type: str | None,
        content_encoding: str | None,
        headers: dict | None,
        properties: dict | None,
    ) -> RawMessage:
        raw = body.encode() if isinstance(body, str) else bytes(body or b"")
        return cls(
            body_b64=base64.b64encode(raw).decode(),
            content_type=content_type,
            content_encoding=content_encoding,
            headers=_jsonable(headers or {}),
            properties=_jsonable({k: v for k, v in (properties or {}).items() if k != "delivery_info"}),
        )

    @property
    def body(self) -> bytes:
        return base64.b64decode(self.body_b64)


class DeadLetter(BaseModel):
    #: The record's id: the task id where the message had one, else a digest of the message.
    id: str
    task_id: str | None
    name: str | None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    queue: str | None
    reason: Reason
    exception: str | None = None
    traceback: str | None = None
    retries: int = 0
    first_death_at: str
    last_death_at: str
    death_count: int = 1
    #: Set on a message that was replayed before and died again: the record it was replayed from.
    replay_of: str | None = None
    replays: int = 0
    raw: RawMessage | None = None

    def summary(self) -> dict[str, Any]:
        """The fields a listing shows."""
        return self.model_dump(
            include={"id", "task_id", "name", "queue", "reason", "exception", "retries", "last_death_at", "death_count"}
        )


def _jsonable(value: Any) -> Any:
    """Headers can hold bytes, datetimes and AMQP tables; keep what JSON can carry."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
