"""A long batch job with the walkthrough's soft/hard time limits.

The soft limit raises SoftTimeLimitExceeded inside the task, which saves how far it got and cleans
up before failing; the hard limit kills the process if cleanup itself hangs. Both need the prefork
pool (Celery enforces time limits only there).
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from worker.outbox import outbox_for

SOFT_TIME_LIMIT = 3500
HARD_TIME_LIMIT = 3600


@shared_task(bind=True, soft_time_limit=SOFT_TIME_LIMIT, time_limit=HARD_TIME_LIMIT)
def long_batch_job(self: Task, items: int = 10, seconds_per_item: float = 0.1) -> dict[str, Any]:
    done = 0
    try:
        for _ in range(items):
            time.sleep(seconds_per_item)  # stands in for one unit of real work
            done += 1
    except SoftTimeLimitExceeded:
        outbox_for(self.app).record("batch_checkpoint", task_id=self.request.id, done=done, total=items)
        raise
    return {"processed": done, "total": items}
