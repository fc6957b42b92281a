"""Progress as plain lines on stderr, for the long-running lab commands: the rich status spinner
draws nothing where stderr is not a terminal (a log file, CI), and a run of many minutes must still
show where it is."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

#: A phase's repeated progress lines (the same text but for its figures) are printed at most this
#: often (seconds); a new phase at once.
PROGRESS_EVERY = 10.0
_FIGURES = re.compile(r"[\d.,]+")


class ProgressLines:
    """Ticks as lines on stderr, so a long run shows where it is even where the status spinner
    draws nothing (stderr not a terminal, a log file): each new phase at once, the repeats of one
    phase (the same text but for its figures) every PROGRESS_EVERY seconds at most."""

    def __init__(self, write: Callable[[str], Any], every: float = PROGRESS_EVERY) -> None:
        self.write = write
        self.every = every
        self._phase: str | None = None
        self._printed_at = 0.0

    def __call__(self, text: str) -> None:
        phase, now = _FIGURES.sub("#", text), time.monotonic()
        if phase != self._phase or now - self._printed_at >= self.every:
            self._phase, self._printed_at = phase, now
            self.write(text)
