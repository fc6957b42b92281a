"""The long lab commands (``brokerstack delayed-memory``, ``task-cost``) print their progress as
lines on stderr (a 100,000-task run once printed nothing for 19 minutes): each new phase at once, a
phase's repeated readings at most every few seconds."""

from __future__ import annotations

from lab.cli import progress as cli


def test_a_new_phase_is_printed_at_once_and_a_repeated_one_at_most_every_interval(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
    printed: list[str] = []
    lines = cli.ProgressLines(printed.append, every=10.0)

    lines("redis: before")
    lines("redis: worker: 10.5 MiB")
    lines("redis: worker: 10.7 MiB")  # the same phase a moment later: not printed
    now[0] += 10.0
    lines("redis: worker: 10.8 MiB")  # the same phase after the interval
    lines("redis: published 10,000 of 100,000 (10 %) in 31 s")
    lines("redis: settling: in the broker 3, ready 1, held by the worker 0")

    assert printed == [
        "redis: before",
        "redis: worker: 10.5 MiB",
        "redis: worker: 10.8 MiB",
        "redis: published 10,000 of 100,000 (10 %) in 31 s",
        "redis: settling: in the broker 3, ready 1, held by the worker 0",
    ]
