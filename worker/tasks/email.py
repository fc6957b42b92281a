"""E-mail and signup notifications, sent through a fake mail API that records what it sent.

The fake API can be told to fail, so the retry paths are exercised for real: ``fail_times`` makes
the first attempts raise a transient error (retried automatically with exponential backoff and
jitter), ``rate_limited_times`` makes them answer "slow down" (retried by hand after the delay the
server asked for), and the outbox switch ``MAIL_SERVER_DOWN`` takes the whole server down until
it is switched off again (a fault to fix before replaying dead letters). ``MAIL_SERVER_SLOW`` holds
every send inside the call until it is switched off: a worker can be killed mid-send (between the
IdempotentTask's claim and its completion) on purpose.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task, shared_task

from worker.idempotent import IdempotentTask
from worker.outbox import outbox_for

#: Retries after the first attempt before the task fails for good.
EMAIL_MAX_RETRIES = 3
#: Exponential backoff base (seconds): waits are drawn from 0..1, 0..2, 0..4 s (full jitter).
EMAIL_RETRY_BACKOFF = 1
EMAIL_RETRY_BACKOFF_MAX = 60
#: Outbox switch: while on, every send fails as if the mail server were down.
MAIL_SERVER_DOWN = "mail_server_down"
#: Outbox switch: while on, every send waits inside the call (bounded by the soft time limit).
MAIL_SERVER_SLOW = "mail_server_slow"
#: How often a held send looks at the switch again.
SLOW_POLL_SECONDS = 0.1


class EmailDeliveryError(Exception):
    """The mail server failed in a way worth retrying (timeout, 5xx)."""


class EmailRateLimited(Exception):
    """The mail server asked us to come back after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after} s")
        self.retry_after = retry_after


def _fake_mail_api(app: Any, *, to: str, subject: str, attempt: int, fail_times: int, rate_limited_times: int) -> dict:
    outbox = outbox_for(app)
    if outbox.switch(MAIL_SERVER_DOWN):
        raise EmailDeliveryError("mail server down")
    while outbox.switch(MAIL_SERVER_SLOW):
        time.sleep(SLOW_POLL_SECONDS)
    if attempt < rate_limited_times:
        raise EmailRateLimited(retry_after=1)
    if attempt < fail_times:
        raise EmailDeliveryError(f"mail server unavailable (attempt {attempt + 1})")
    return outbox.record("email", to=to, subject=subject, attempt=attempt + 1)


@shared_task(
    bind=True,
    base=IdempotentTask,
    autoretry_for=(EmailDeliveryError,),
    max_retries=EMAIL_MAX_RETRIES,
    retry_backoff=EMAIL_RETRY_BACKOFF,
    retry_backoff_max=EMAIL_RETRY_BACKOFF_MAX,
    retry_jitter=True,
)
def send_email(
    self: Task, user_id: str, email: str, fail_times: int = 0, rate_limited_times: int = 0
) -> dict[str, Any]:
    try:
        _fake_mail_api(
            self.app,
            to=email,
            subject="Hello from brokerstack",
            attempt=self.request.retries,
            fail_times=fail_times,
            rate_limited_times=rate_limited_times,
        )
    except EmailRateLimited as exc:
        # The manual path: the server told us when to come back, so wait exactly that long.
        raise self.retry(exc=exc, countdown=exc.retry_after) from exc
    return {"status": "sent", "user_id": user_id, "email": email, "attempts": self.request.retries + 1}


@shared_task(
    bind=True,
    base=IdempotentTask,
    autoretry_for=(EmailDeliveryError,),
    max_retries=EMAIL_MAX_RETRIES,
    retry_backoff=True,
)
def send_welcome_email(self: Task, user_id: str, email: str) -> dict[str, Any]:
    outbox_for(self.app).record("welcome_email", user_id=user_id, to=email)
    return {"status": "sent", "user_id": user_id}


@shared_task(bind=True, base=IdempotentTask)
def notify_admin_new_signup(self: Task, user_id: str) -> dict[str, Any]:
    outbox_for(self.app).record("admin_notification", user_id=user_id)
    return {"status": "notified", "user_id": user_id}
