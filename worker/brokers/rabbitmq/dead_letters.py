"""Dead letters on RabbitMQ: native. Each work queue dead-letters through the DLX into
``brokerstack.dead_letters`` with RabbitMQ's ``x-death`` reason; the worker adds the exception
and traceback as a note in the result backend's Redis, keyed by task id.

Listing reads messages off the dead-letter queue without acking them and gives them back by
closing the channel (the queue is a classic queue, so nothing counts those returns). Replay acks a
dead letter only after its new message was confirmed by the broker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import amqp
import redis
from kombu import Connection
from kombu.serialization import dumps

from worker.backends import redis_client
from worker.brokers.rabbitmq.delayed import LADDER_QUEUES, declare_ladder, ladder_routing_key
from worker.dead_letters.base import (
    REPLAY_OF_HEADER,
    REPLAYS_HEADER,
    DeadLetterStore,
    ReplayOutcome,
    default_queue_for,
    digest_id,
    new_task_id,
)
from worker.dead_letters.record import DeadLetter, RawMessage, Reason, iso_from_timestamp
from worker.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, dead_letter_routing_key

NOTE_KEY = "brokerstack:dlq:notes:{letter_id}"
#: Notes outlive any sane DLQ backlog; the message itself stays in RabbitMQ until replayed/purged.
NOTE_TTL_SECONDS = 30 * 24 * 3600
#: Header on messages the worker dead-letters itself (what the broker never saw die).
DEATH_HEADER = "brokerstack_death"
#: RabbitMQ's x-death reasons in the store's vocabulary.
NATIVE_REASONS: dict[str, Reason] = {
    "rejected": "rejected",
    "expired": "expired",
    "maxlen": "maxlen",
    "delivery_limit": "delivery-limit",
}
#: Headers that describe a death or a schedule, dropped when a dead letter is replayed.
_DROPPED_ON_REPLAY = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "eta",
    "expires",
    DEATH_HEADER,
)


class RabbitMQDeadLetterStore(DeadLetterStore):
    native_rejects = True

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._notes = redis_client(self.settings.result_backend, self.settings, socket_timeout=5, decode_responses=True)
        self._note_key = self.settings.redis_global_keyprefix + NOTE_KEY

    # --- the worker side ----------------------------------------------------------------------

    def annotate(self, letter: DeadLetter) -> None:
        note = letter.model_dump(include={"reason", "exception", "traceback", "retries", "last_death_at"})
        key = self._note_key.format(letter_id=letter.id)
        self._notes.set(key, json.dumps(note), ex=NOTE_TTL_SECONDS)

    def capture(self, letter: DeadLetter) -> None:
        """Publish a dead letter into the DLQ ourselves, for deaths RabbitMQ never saw (a task
        killed by its hard time limit is acked, a task found expired by the worker is acked)."""
        if letter.queue:
            # A delayed task arrives with the ladder's delay prefixed to its routing key, which the
            # worker takes for its queue: the dead-letter binding knows the queue's own name.
            letter = letter.model_copy(update={"queue": ladder_routing_key(letter.queue)})
        if letter.raw is not None:
            body, content_type, encoding, headers = (
                letter.raw.body,
                letter.raw.content_type,
                letter.raw.content_encoding,
                dict(letter.raw.headers),
            )
        else:
            message = self.app.amqp.as_task_v2(
                letter.task_id, letter.name, args=letter.args or [], kwargs=letter.kwargs or {}, retries=letter.retries
            )
            content_type, encoding, body = dumps(message.body, serializer="json")
            headers = dict(message.headers)
        headers[DEATH_HEADER] = json.dumps(
            letter.model_dump(include={"reason", "exception", "traceback", "queue", "last_death_at"})
        )
        with self._channel() as channel:
            channel.basic_publish(
                amqp.Message(
                    body,
                    content_type=content_type,
                    content_encoding=encoding,
                    application_headers=headers,
                    delivery_mode=2,
                ),
                exchange=DEAD_LETTER_EXCHANGE,
                routing_key=dead_letter_routing_key(letter.queue or default_queue_for(letter.name)),
            )

    # --- the operator side --------------------------------------------------------------------

    def list_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._channel() as channel:
            return [self._to_letter(message) for message in self._peek(channel, limit)]

    def replay(self, ids: list[str] | None = None) -> list[ReplayOutcome]:
        wanted = None if ids is None else set(ids)
        outcomes: list[ReplayOutcome] = []
        with self._channel() as channel:
            for message in self._peek(channel, limit=0):
                letter = self._to_letter(message)
                if wanted is not None and letter.id not in wanted:
                    continue
                try:
                    task_id = self._republish(channel, message, letter)
                except Exception as exc:  # noqa: BLE001 - reported; unacked dead letters go back
                    outcomes.append(ReplayOutcome(id=letter.id, ok=False, error=f"{type(exc).__name__}: {exc}"))
                    break
                # Confirmed by the broker (confirm mode): now the dead letter may go.
                channel.basic_ack(message.delivery_tag)
                outcomes.append(ReplayOutcome(id=letter.id, ok=True, task_id=task_id, queue=letter.queue))
                if wanted is not None:
                    wanted.discard(letter.id)
        outcomes += [ReplayOutcome(id=i, ok=False, error="no such dead letter") for i in sorted(wanted or ())]
        return outcomes

    def purge(self) -> int:
        with self._channel() as channel:
            return int(channel.queue_purge(DEAD_LETTER_QUEUE) or 0)

    def depth(self) -> int:
        with self._channel() as channel:
            return int(channel.queue_declare(DEAD_LETTER_QUEUE, passive=True).message_count)

    def ensure_declared(self) -> None:
        with self._connection() as conn:
            for queue in _dead_letter_queues(self.app):
                queue(conn.default_channel).declare()
            # The API calls this at start: the delayed-delivery ladder, declared in full where a
            # publish's deadline does not apply.
            declare_ladder(self.app, conn)

    # --- helpers ----------------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        # Confirms always on here: a replay must know the broker has the new message.
        conn = self.app.connection_for_write(transport_options={"confirm_publish": True})
        try:
            conn.ensure_connection(max_retries=2)
            yield conn
        finally:
            conn.release()

    @contextmanager
    def _channel(self) -> Iterator[Any]:
        with self._connection() as conn:
            for queue in _dead_letter_queues(self.app):
                queue(conn.default_channel).declare()
            channel = conn.channel()
            try:
                yield channel
            finally:
                # Closing the channel hands every delivery we did not ack back to the queue.
                channel.close()

    @staticmethod
    def _peek(channel: Any, limit: int) -> Iterator[Any]:
        count = 0
        while not limit or count < limit:
            message = channel.basic_get(DEAD_LETTER_QUEUE, no_ack=False)
            if message is None:
                return
            count += 1
            yield message

    def _to_letter(self, message: Any) -> DeadLetter:
        props = dict(message.properties)
        headers = dict(props.get("application_headers") or {})
        raw = RawMessage.of(message.body, props.get("content_type"), props.get("content_encoding"), headers, props)
        task_id = headers.get("id")
        # A delayed task's trip through the delayed-delivery ladder is a dead-lettering per level:
        # those are no deaths of the task.
        deaths = [d for d in headers.get("x-death") or [] if str(d.get("queue")) not in LADDER_QUEUES]
        own = json.loads(headers[DEATH_HEADER]) if DEATH_HEADER in headers else {}
        reason: Reason
        if deaths:
            latest = deaths[0]
            reason = NATIVE_REASONS.get(str(latest.get("reason")), "rejected")
            queue = str(latest.get("queue"))
            times = [_epoch(d.get("time")) for d in deaths if d.get("time") is not None]
            first, last = (min(times), max(times)) if times else (None, None)
            count = sum(int(d.get("count", 1)) for d in deaths)
        else:
            reason, queue = own.get("reason", "rejected"), own.get("queue") or default_queue_for(headers.get("task"))
            first = last = None
            count = 1
        letter_id = task_id or digest_id(raw.body, headers)
        note = self._note(letter_id)
        if note and reason == "rejected":
            reason = note.get("reason", reason)  # the worker knows *why* it rejected: failed / poison
        args, kwargs = _task_arguments(message.body, props.get("content_type"))
        last_iso = own.get("last_death_at") or (iso_from_timestamp(last) if last else note.get("last_death_at"))
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        return DeadLetter(
            id=letter_id,
            task_id=task_id,
            name=headers.get("task"),
            args=args,
            kwargs=kwargs,
            queue=queue,
            reason=reason,
            exception=own.get("exception") or note.get("exception"),
            traceback=own.get("traceback") or note.get("traceback"),
            retries=int(headers.get("retries") or note.get("retries") or 0),
            first_death_at=iso_from_timestamp(first) if first else (last_iso or now),
            last_death_at=last_iso or now,
            death_count=count,
            replay_of=headers.get(REPLAY_OF_HEADER),
            replays=int(headers.get(REPLAYS_HEADER) or 0),
            raw=raw,
        )

    def _note(self, letter_id: str) -> dict[str, Any]:
        try:
            raw = self._notes.get(self._note_key.format(letter_id=letter_id))
        except redis.RedisError:
            return {}  # the message itself is what matters; the note only adds detail
        return json.loads(raw) if raw else {}

    def _republish(self, channel: Any, message: Any, letter: DeadLetter) -> str:
        props = dict(message.properties)
        props.pop("expiration", None)  # a replay is deliberate: it must not die of old age again
        headers = {
            k: v for k, v in (props.pop("application_headers", None) or {}).items() if k not in _DROPPED_ON_REPLAY
        }
        task_id = new_task_id()
        if "id" in headers:
            if headers.get("root_id") in (None, headers["id"]):
                headers["root_id"] = task_id
            headers["id"] = task_id
            props["correlation_id"] = task_id
        headers["retries"] = 0
        headers[REPLAY_OF_HEADER] = letter.id
        headers[REPLAYS_HEADER] = letter.replays + 1
        props["delivery_mode"] = 2
        # The default exchange routes by queue name: the original queue, whatever its bindings.
        channel.basic_publish(
            amqp.Message(message.body, application_headers=headers, **props), exchange="", routing_key=letter.queue
        )
        return task_id


def _dead_letter_queues(app: Any) -> list[Any]:
    from worker.brokers import profile_for

    return profile_for(app.brokerstack_settings).dead_letter_queues()


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or UTC).timestamp()
    return float(value)


def _task_arguments(body: bytes, content_type: str | None) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """args and kwargs of a Celery protocol-2 JSON body ([args, kwargs, embed]), if it is one."""
    if content_type != "application/json":
        return None, None
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if (
        isinstance(decoded, list)
        and len(decoded) >= 2
        and isinstance(decoded[0], list)
        and isinstance(decoded[1], dict)
    ):
        return decoded[0], decoded[1]
    return None, None
