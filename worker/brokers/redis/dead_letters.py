"""Dead letters on Redis: Redis has no dead-lettering, so the worker's hooks capture each one
into a store that lives in the broker's Redis (same persistence as the queues)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis
from kombu import Exchange, Queue

from worker.backends import redis_client
from worker.dead_letters.base import (
    REPLAY_OF_HEADER,
    REPLAYS_HEADER,
    DeadLetterStore,
    ReplayOutcome,
    new_task_id,
)
from worker.dead_letters.record import DeadLetter

#: id -> record JSON
RECORDS_KEY = "brokerstack:dlq:records"
#: id scored by the time of its last death, for listing oldest first
ORDER_KEY = "brokerstack:dlq:order"
#: A capture of a task that is already in the store counts one more death; bounded retries on
#: concurrent captures of the same id.
CAPTURE_ATTEMPTS = 5


class RedisDeadLetterStore(DeadLetterStore):
    native_rejects = False

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        # The broker's Redis, reached as the broker is (TLS, Sentinel), under its key prefix.
        self._redis = redis_client(self.settings.redis_url, self.settings, socket_timeout=5, decode_responses=True)
        prefix = self.settings.redis_global_keyprefix
        self.records_key = prefix + RECORDS_KEY
        self.order_key = prefix + ORDER_KEY

    def capture(self, letter: DeadLetter) -> None:
        for _ in range(CAPTURE_ATTEMPTS):
            with self._redis.pipeline() as pipe:
                try:
                    pipe.watch(self.records_key)
                    existing = pipe.hget(self.records_key, letter.id)
                    if existing is not None:
                        earlier = DeadLetter.model_validate_json(existing)
                        letter = letter.model_copy(
                            update={"first_death_at": earlier.first_death_at, "death_count": earlier.death_count + 1}
                        )
                    pipe.multi()
                    pipe.hset(self.records_key, letter.id, letter.model_dump_json())
                    pipe.zadd(self.order_key, {letter.id: _score(letter)})
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        raise RuntimeError(f"could not record dead letter {letter.id}: the store kept changing")

    def list_letters(self, limit: int = 100) -> list[DeadLetter]:
        ids: list[str] = self._redis.zrange(self.order_key, 0, (limit - 1) if limit else -1)  # type: ignore[assignment]
        if not ids:
            return []
        return [
            DeadLetter.model_validate_json(raw) for raw in self._redis.hmget(self.records_key, ids) if raw is not None
        ]

    def get(self, letter_id: str) -> DeadLetter | None:
        raw = self._redis.hget(self.records_key, letter_id)
        return DeadLetter.model_validate_json(raw) if raw is not None else None

    def replay(self, ids: list[str] | None = None) -> list[ReplayOutcome]:
        outcomes = []
        every: list[str] = self._redis.zrange(self.order_key, 0, -1) if ids is None else []  # type: ignore[assignment]
        for letter_id in ids if ids is not None else every:
            letter = self.get(letter_id)
            if letter is None:
                outcomes.append(ReplayOutcome(id=letter_id, ok=False, error="no such dead letter"))
                continue
            try:
                task_id = self._republish(letter)
            except Exception as exc:  # noqa: BLE001 - reported per record; the record stays
                outcomes.append(ReplayOutcome(id=letter.id, ok=False, error=f"{type(exc).__name__}: {exc}"))
                break  # the broker is in trouble: stop, keep the rest for the next attempt
            # Only now, with the new message in Redis, may the record go.
            with self._redis.pipeline() as pipe:
                pipe.hdel(self.records_key, letter.id)
                pipe.zrem(self.order_key, letter.id)
                pipe.execute()
            outcomes.append(ReplayOutcome(id=letter.id, ok=True, task_id=task_id, queue=letter.queue))
        return outcomes

    def _republish(self, letter: DeadLetter) -> str:
        task_id = new_task_id()
        headers = {REPLAY_OF_HEADER: letter.id, REPLAYS_HEADER: letter.replays + 1}
        if letter.name and letter.raw is None:
            self.app.send_task(
                letter.name,
                args=letter.args or [],
                kwargs=letter.kwargs or {},
                task_id=task_id,
                queue=letter.queue,
                headers=headers,
                retries=0,
            )
            return task_id
        raw = letter.raw
        assert raw is not None
        message_headers = {**raw.headers, **headers}
        if "id" in message_headers:
            message_headers["id"] = task_id
            message_headers["root_id"] = task_id
        message_headers["retries"] = 0
        queue = Queue(letter.queue, Exchange(letter.queue, type="direct"), routing_key=letter.queue)
        with self.app.producer_or_acquire() as producer:
            producer.publish(
                raw.body,
                exchange=queue.exchange,
                routing_key=letter.queue,
                declare=[queue],
                content_type=raw.content_type,
                content_encoding=raw.content_encoding or "utf-8",
                headers=message_headers,
                retry=True,
            )
        return task_id

    def purge(self) -> int:
        with self._redis.pipeline() as pipe:
            pipe.hlen(self.records_key)
            pipe.delete(self.records_key, self.order_key)
            count, _ = pipe.execute()
        return int(count)

    def depth(self) -> int:
        return int(self._redis.hlen(self.records_key))


def _score(letter: DeadLetter) -> float:
    return datetime.fromisoformat(letter.last_death_at).timestamp()
