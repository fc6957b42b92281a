"""beat's scheduler for the containers: Celery's PersistentScheduler, plus a liveness mark.

``celery beat --scheduler deploy.container.beat:LivenessScheduler`` touches BEAT_LIVENESS_FILE on
every tick (at least every ``--max-interval`` seconds), so the healthcheck can tell a scheduler
whose loop turns from a process that is merely alive. Scheduling itself is unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler

BEAT_LIVENESS_FILE = Path(os.environ.get("BEAT_LIVENESS_FILE", "/tmp/beat-alive"))


class LivenessScheduler(PersistentScheduler):
    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = super().tick(*args, **kwargs)
        BEAT_LIVENESS_FILE.touch()
        return interval
