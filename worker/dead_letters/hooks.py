"""Where the worker sees a message die, and tells the dead-letter store.

* task failures (retries used up, ``fail``, time limits, ``Reject(requeue=False)``): Celery's
  ``task_failure`` signal, in the process that saw it;
* tasks that reached a worker after their ``expires`` time: ``task_revoked`` with ``expired``;
* poison (unregistered task, malformed or undecodable message): ``record_poison``, called by the
  consumer (worker.consumer.BrokerstackConsumer) before it lets the message go.

On RabbitMQ the rejected message is dead-lettered by the broker and the hook only adds the
exception (``annotate``); on Redis the hook's record *is* the dead letter (``capture``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import Reject, TimeLimitExceeded
from celery.signals import task_failure, task_revoked, worker_ready

from worker.brokers import store_for
from worker.dead_letters.base import REPLAY_OF_HEADER, REPLAYS_HEADER, DeadLetterStore, default_queue_for, digest_id
from worker.dead_letters.record import DeadLetter, RawMessage, now_iso

logger = logging.getLogger(__name__)


def _store(app: Any) -> DeadLetterStore | None:
    if getattr(app, "brokerstack_settings", None) is None:
        return None
    store = getattr(app, "_brokerstack_dead_letters", None)
    if store is None:
        store = app._brokerstack_dead_letters = store_for(app)
    return store


def _safely(what: str, action: Any, *args: Any) -> None:
    """A failing store must not take the worker down with it: log loudly and go on."""
    try:
        action(*args)
    except Exception:
        logger.exception("dead letters: could not %s", what)


def _queue_of(request: Any, task_name: str | None) -> str:
    delivery_info = getattr(request, "delivery_info", None) or {}
    return delivery_info.get("routing_key") or default_queue_for(task_name)


def _replay_link(request: Any) -> dict[str, Any]:
    """Message headers become request attributes: a replayed task knows its old record."""
    replay_of = getattr(request, REPLAY_OF_HEADER, None)
    return {"replay_of": replay_of, "replays": int(getattr(request, REPLAYS_HEADER, 0) or 0)} if replay_of else {}


def _describe(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__name__}: {exc}"


# --- failures and expiry: the task's own process ------------------------------------------------


@task_failure.connect
def _on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    store = _store(sender.app)
    request = sender.request
    if store is None or getattr(request, "is_eager", False):
        return
    at = now_iso()
    letter_id: str = task_id or request.id
    letter = DeadLetter(
        id=letter_id,
        task_id=letter_id,
        name=sender.name,
        args=list(args or []),
        kwargs=dict(kwargs or {}),
        queue=_queue_of(request, sender.name),
        reason="rejected" if isinstance(exception, Reject) else "failed",
        exception=_describe(exception),
        traceback=str(einfo) if einfo is not None else None,
        retries=int(getattr(request, "retries", 0) or 0),
        first_death_at=at,
        last_death_at=at,
        **_replay_link(request),
    )
    # A hard time limit is acked (requeueing would kill the next worker too): the broker never
    # sees that death, so it is captured even on RabbitMQ.
    if store.native_rejects and not isinstance(exception, TimeLimitExceeded):
        _safely(f"annotate {task_id}", store.annotate, letter)
    else:
        _safely(f"capture {task_id}", store.capture, letter)


@task_revoked.connect
def _on_task_revoked(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    store = _store(sender.app) if sender is not None else None
    if store is None or not expired:
        return  # a revoke by an operator is a decision, not a death
    at = now_iso()
    letter = DeadLetter(
        id=request.id,
        task_id=request.id,
        name=sender.name,
        args=list(request.args or []),
        kwargs=dict(request.kwargs or {}),
        queue=_queue_of(request, sender.name),
        reason="expired",
        retries=int(request.retries or 0),
        first_death_at=at,
        last_death_at=at,
        **_replay_link(request),
    )
    _safely(f"capture expired {request.id}", store.capture, letter)


# --- poison: the consumer, in the worker's main process -----------------------------------------


def record_poison(consumer: Any, message: Any, exc: BaseException | None, detail: str) -> None:
    """Record a message the consumer cannot run, before it rejects it."""
    store = _store(consumer.app)
    if store is None:
        return
    headers = dict(message.headers or {})
    raw = RawMessage.of(message.body, message.content_type, message.content_encoding, headers, message.properties)
    at = now_iso()
    task_name = headers.get("task")
    letter = DeadLetter(
        id=headers.get("id") or digest_id(raw.body, headers),
        task_id=headers.get("id"),
        name=task_name,
        queue=(message.delivery_info or {}).get("routing_key") or default_queue_for(task_name),
        reason="poison",
        exception=_describe(exc) or detail,
        retries=int(headers.get("retries") or 0),
        first_death_at=at,
        last_death_at=at,
        raw=raw,
    )
    action = store.annotate if store.native_rejects else store.capture
    _safely(f"record poison message {letter.id}", action, letter)


@worker_ready.connect
def _declare_dead_letter_queues(sender: Any = None, **_: Any) -> None:
    # The DLQ must exist before the first message dies, or RabbitMQ drops the dead letter.
    store = _store(sender.app)
    if store is not None:
        _safely("declare the dead-letter queue", store.ensure_declared)
