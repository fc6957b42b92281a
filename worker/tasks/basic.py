"""The walkthrough's basic tasks and the scheduled ones beat runs."""

from __future__ import annotations

import time
from typing import Any

from celery import Task, shared_task

from worker.idempotent import IdempotentTask
from worker.outbox import outbox_for


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task
def multiply(x: int, y: int) -> int:
    return x * y


@shared_task(bind=True)
def task_with_info(self: Task, message: str = "") -> dict[str, Any]:
    """Shows what a bound task knows about its own execution."""
    return {
        "task_id": self.request.id,
        "task_name": self.name,
        "message": message,
        "retries": self.request.retries,
        "args": list(self.request.args or []),
        "kwargs": dict(self.request.kwargs or {}),
        "queue": (self.request.delivery_info or {}).get("routing_key"),
        "priority": (self.request.delivery_info or {}).get("priority"),
        "hostname": self.request.hostname,
    }


@shared_task(bind=True, ignore_result=True)
def heartbeat(self: Task) -> None:
    """Beat's interval task: proves the scheduler and a worker are alive."""
    outbox_for(self.app).record("heartbeat", worker=self.request.hostname)


@shared_task(bind=True, base=IdempotentTask)
def daily_report(self: Task) -> dict[str, Any]:
    """Beat's crontab task (midnight): a fake report, recorded where operators can see it."""
    report = {"period": "day", "date": time.strftime("%Y-%m-%d", time.gmtime())}
    outbox_for(self.app).record("report", **report)
    return report


@shared_task(bind=True)
def weekly_summary(self: Task) -> dict[str, Any]:
    """Beat's Monday 09:00 task."""
    summary = {"period": "week", "week": time.strftime("%G-W%V", time.gmtime())}
    outbox_for(self.app).record("report", **summary)
    return summary
