"""docs/sizing.md (and the ``brokerstack sizing`` table) from the sizing records: bytes per queued
task, per stored result and per dead letter on both brokers, the formula they go into, and a
worked example against the ``maxmemory`` of deploy/redis/redis.conf."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.table import Table

from lab.harness.vendors import VENDORS, broker_rank

SCHEMA = "brokerstack.sizing/1"
REDIS_CONF = Path("deploy/redis/redis.conf")
DASH = "—"

#: What each measured item is, as the doc names it.
ITEMS = {
    "queued_task": "queued task (no-op, as `apply_async` sends it)",
    "result": "stored result (no-op, SUCCESS)",
    "dead_letter": "dead letter",
    "failed_task_in_redis": "failed task, in the results Redis",
}
#: Where each metric is read.
METRICS = {
    "used_memory": "Redis `used_memory` (what `maxmemory` counts)",
    "keys_memory": "Redis `MEMORY USAGE` of the keys",
    "queue_memory": "RabbitMQ queue `memory`",
    "message_bytes": "RabbitMQ queue `message_bytes`",
    "node_mem_used": "RabbitMQ node `mem_used`",
}
#: The figure each broker's memory is sized with: what its own limit counts (Redis' maxmemory
#: checks used_memory; RabbitMQ's memory alarm the node's memory, of which a queue's is the share
#: that grows with its messages).
HEADLINE = {name: vendor.memory_headline for name, vendor in VENDORS.items()}
#: The worked example: the issue's case (about 40 tasks/s with results kept a day filled 1 GB)
#: with a backlog and a DLQ an incident could leave behind.
EXAMPLE = {"tasks_per_s": 40, "backlog": 100_000, "dead_letters": 10_000}
VERDICT_TEXT = {
    "ok": "ok",
    "noisy": "**noisy** (slopes scatter or a line fits badly: not a size)",
    "negative": "**negative** (no growth measurable at these sizes)",
    "unsettled": "**unsettled** (memory still moving when read)",
}
UNITS = {"b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def load_sizing(root: Path) -> list[dict[str, Any]]:
    """The sizing records under ``root/sizing`` (one per broker and driver), Redis first."""
    records = []
    for path in sorted((root / "sizing").glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA:
            records.append({**data, "source": path.as_posix()})
    return sorted(records, key=lambda r: (broker_rank(r["broker"]), r["broker"], r.get("driver", "")))


def maxmemory_bytes(conf: Path = REDIS_CONF) -> int | None:
    """``maxmemory`` of a redis.conf in bytes (Redis' units: 1gb = 1024^3, 1g = 1000^3)."""
    if not conf.is_file():
        return None
    match = re.search(r"^\s*maxmemory\s+(\d+)\s*([a-z]*)\s*$", conf.read_text(), re.M | re.I)
    if not match:
        return None
    return int(match.group(1)) * UNITS.get(match.group(2).lower() or "b", 1)


def figure(record: dict[str, Any], item: str, metric: str | None = None) -> dict[str, Any] | None:
    metric = metric or HEADLINE.get(record["broker"], "used_memory")
    if item in ("result", "failed_task_in_redis"):
        metric = "used_memory"  # results live in Redis on both stacks
    return next((f for f in record["figures"] if f["item"] == item and f["metric"] == metric), None)


def span(low: float, high: float) -> str:
    """``1,000-1,100``; ``-214 to 75`` when a dash would read as a minus."""
    return f"{low:,.0f} to {high:,.0f}" if low < 0 else f"{low:,.0f}-{high:,.0f}"


def spread(value: dict[str, Any] | None) -> str:
    """``1,234 B (1,200-1,260)``: the median of the repetitions' slopes and their range."""
    if not value:
        return DASH
    if value["verdict"] == "negative":
        return f"not measurable (slopes {span(value['min'], value['max'])} B)"
    median, low, high = (f"{value[k]:,.0f}" for k in ("median", "min", "max"))
    text = f"{median} B" if low == high else f"{median} B ({span(value['min'], value['max'])})"
    return text if value["verdict"] == "ok" else f"{text} {value['verdict']}"


def size(value: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(value) >= scale:
            return f"{value / scale:,.2f} {unit}"
    return f"{value:,.0f} B"


def _sizes(record: dict[str, Any]) -> str:
    return (
        f"{', '.join(map(str, record['task_sizes']))} tasks; {', '.join(map(str, record['dead_letter_sizes']))} "
        f"dead letters; {record['repetitions']} repetitions"
    )


def measured_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| broker | per | read as | bytes per item: median (min-max) | worst R² | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for record in records:
        for f in record["figures"]:
            lines.append(
                f"| {record['broker']} | {ITEMS.get(f['item'], f['item'])} | {METRICS.get(f['metric'], f['metric'])} "
                f"| {f['median']:,.0f} ({span(f['min'], f['max'])}) | {f['r2_min']:.3f} "
                f"| {VERDICT_TEXT.get(f['verdict'], f['verdict'])} |"
            )
    return "\n".join(lines)


def summary_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """Per broker: the figures the formula uses."""
    return [
        [
            record["broker"],
            spread(figure(record, "queued_task")),
            spread(figure(record, "result")),
            spread(figure(record, "dead_letter")),
            spread(figure(record, "failed_task_in_redis")),
        ]
        for record in records
    ]


SUMMARY_HEADER = [
    "stack",
    "per queued task (broker)",
    "per stored result (results Redis)",
    "per dead letter (broker)",
    "per failed task (results Redis)",
]


def sizing_table(records: list[dict[str, Any]]) -> Table:
    table = Table(*SUMMARY_HEADER, title="bytes per item: median (min-max) of the repetitions' slopes")
    for row in summary_rows(records):
        table.add_row(*row)
    return table


def _median(record: dict[str, Any] | None, item: str) -> float | None:
    value = figure(record, item) if record else None
    return None if value is None or value["verdict"] == "negative" else float(value["median"])


def worked_example(records: list[dict[str, Any]], maxmemory: int | None) -> str:
    # The worked example is the Redis stack's (one Redis for queue, results and dead letters).
    by_broker = {r["broker"]: r for r in reversed(records)}
    redis, rabbit = by_broker.get("redis"), by_broker.get("rabbitmq")
    if redis is None or maxmemory is None:
        return "_(needs a Redis record and `maxmemory` in deploy/redis/redis.conf)_"
    per_result, per_task, per_letter = (_median(redis, i) for i in ("result", "queued_task", "dead_letter"))
    if per_result is None or per_task is None or per_letter is None:
        return "_(a Redis figure came out negative: no worked example from it)_"
    ttl = int(redis["result_expires_s"])
    rate, backlog, letters = EXAMPLE["tasks_per_s"], EXAMPLE["backlog"], EXAMPLE["dead_letters"]
    results_b = rate * ttl * per_result
    backlog_b = backlog * per_task
    letters_b = letters * per_letter
    total = results_b + backlog_b + letters_b
    fits = (maxmemory - backlog_b - letters_b) / (ttl * per_result)
    lines = [
        f"The Redis stack, one Redis for queue, results and dead letters, `maxmemory` {size(maxmemory)} "
        f"(deploy/redis/redis.conf), results kept {ttl / 3600:g} h (`RESULT_EXPIRES`), at {rate} tasks/s with "
        f"a backlog of {backlog:,} tasks and {letters:,} dead letters:",
        "",
        "```",
        f"results      {rate} /s x {ttl:,} s x {per_result:,.0f} B = {size(results_b)}",
        f"backlog      {backlog:,} x {per_task:,.0f} B = {size(backlog_b)}",
        f"dead letters {letters:,} x {per_letter:,.0f} B = {size(letters_b)}",
        f"total        {size(total)} of {size(maxmemory)} ({100 * total / maxmemory:.0f} %)",
        "```",
        "",
        f"Results dominate: with that backlog and DLQ, the {size(maxmemory)} are full at about "
        f"**{fits:,.0f} tasks/s** sustained for {ttl / 3600:g} h; Redis then refuses writes (`noeviction`): "
        "enqueues answer 503 on the Redis stack, and results can no longer be stored on both. Halving "
        "`RESULT_EXPIRES` doubles that rate; doubling `maxmemory` more than doubles it.",
    ]
    rabbit_result = _median(rabbit, "result")
    rabbit_failed = _median(rabbit, "failed_task_in_redis")
    if rabbit is not None and rabbit_result is not None:
        ttl_r = int(rabbit["result_expires_s"])
        lines += [
            "",
            f"On the RabbitMQ stack the Redis holds the results only (and a note per dead letter): "
            f"{rate} /s x {ttl_r:,} s x {rabbit_result:,.0f} B = {size(rate * ttl_r * rabbit_result)}, "
            f"full at about **{maxmemory / (ttl_r * rabbit_result):,.0f} tasks/s**"
            + (
                f"; each failed task keeps {rabbit_failed:,.0f} B there (its FAILURE result, kept as long as "
                "results, and the dead letter's note, kept 30 days)."
                if rabbit_failed is not None
                else "."
            ),
        ]
        lines += ["", rabbit_backlog(rabbit, backlog, letters)]
    return "\n".join(lines)


def rabbit_backlog(rabbit: dict[str, Any], backlog: int, letters: int) -> str:
    """The backlog and the DLQ in RabbitMQ: sized by queue memory where it grew measurably per
    message, else said so, with the message bytes it keeps (on disk) instead."""
    queued, dead = figure(rabbit, "queued_task"), figure(rabbit, "dead_letter")
    if queued and dead and queued["verdict"] == dead["verdict"] == "ok":
        total = backlog * queued["median"] + letters * dead["median"]
        return (
            f"The backlog and the DLQ sit in RabbitMQ ({backlog:,} x {queued['median']:,.0f} B + {letters:,} x "
            f"{dead['median']:,.0f} B = {size(total)} of queue memory), against its memory alarm "
            "(`vm_memory_high_watermark.relative = 0.6` of the host's RAM, deploy/rabbitmq/rabbitmq.conf) "
            "rather than a fixed byte limit."
        )
    body_q = figure(rabbit, "queued_task", "message_bytes")
    body_d = figure(rabbit, "dead_letter", "message_bytes")
    judged = "; ".join(
        f"per {name}: {spread(value)}" for name, value in (("queued task", queued), ("dead letter", dead)) if value
    )
    text = (
        f"In RabbitMQ ({rabbit['queue_type'] or 'its'} queues) the queue's memory did not grow measurably "
        f"per message at these sizes ({judged}): no per-message memory figure to size with, consistent with "
        "classic queues keeping message bodies on disk rather than in memory."
    )
    if body_q and body_d:
        text += (
            f" Its message bodies are {body_q['median']:,.0f} B per queued task and {body_d['median']:,.0f} B "
            f"per dead letter (`message_bytes`): {backlog:,} tasks and {letters:,} dead letters are about "
            f"{size(backlog * body_q['median'] + letters * body_d['median'])} of bodies (headers and the queue "
            "index come on top), kept on a disk whose free space the node guards with "
            "`disk_free_limit.absolute = 512MB` (deploy/rabbitmq/rabbitmq.conf)."
        )
    return text


def render_sizing(records: list[dict[str, Any]], maxmemory: int | None) -> str:
    header = "| " + " | ".join(SUMMARY_HEADER) + " |\n|" + "---|" * len(SUMMARY_HEADER)
    summary = "\n".join("| " + " | ".join(row) + " |" for row in summary_rows(records))
    sources = "\n".join(
        f"- `{r['source']}`: {r['broker_version']} ({r['driver']}"
        + (f", {r['queue_type']} queues" if r.get("queue_type") else "")
        + f"), {_sizes(r)}, measured {r.get('written_at', '?')}; one stored message {r['message_bytes']:,} B"
        for r in records
    )
    return f"""# Sizing: memory per queued task, stored result and dead letter

_Generated by `brokerstack report` from the records in `results/sizing/` (`brokerstack sizing`);
do not edit by hand._

## Measured

Bytes per item on each stack: every figure is the median of the repetitions' slopes (bytes
against items, measured at several sizes, each from an empty baseline) with their range in
brackets. The broker's figure is what its own limit counts: on Redis `used_memory`; on RabbitMQ the
queue's `memory`. Results live in Redis on both stacks.

{header}
{summary}

Every reading, with how well the lines fit:

{measured_table(records)}

How it is measured (lab/experiments/sizing.py): no-op tasks are published with `apply_async`
through brokerstack's own app, run by a real `celery worker` with the shipped defaults (results
stored, `RESULT_EXPIRES` TTL), and dead letters come from `worker.tasks.tools.fail` failing for
good on the real dead-letter path of each broker. A warm-up round is measured first and left out.
Redis is read once `used_memory` stops moving,
with no worker connected; RabbitMQ once its queue statistics agree twice. A figure whose slopes
scatter (range wider than half the median, a line fitting with R² below 0.9) or go negative is
labelled, never clipped. A real task's result adds the JSON of what it returns (and a failure its
traceback) to the no-op's bytes.

{sources}

## The formula

```
Redis memory    = tasks/s x RESULT_EXPIRES x bytes per result
                + backlog x bytes per queued task          (Redis stack only)
                + dead letters x bytes per dead letter     (Redis stack; RabbitMQ: the note per failed task)
                must stay below maxmemory (deploy/redis/redis.conf)
RabbitMQ memory = backlog x bytes per queued task + dead letters x bytes per dead letter
                must stay below its memory alarm
```

A failed task's result is bigger than a successful no-op's (it holds the traceback): count the
failures per second at the *per failed task* figure; on the RabbitMQ stack that figure also holds
the dead letter's note, kept 30 days.

`maxmemory-policy noeviction` is on purpose: a full Redis refuses writes (503) instead of dropping
queued tasks or results. Size for the peak backlog (an outage of the workers at the arrival
rate) and for the DLQ you let grow before an operator purges or replays it.

## Worked example

{worked_example(records, maxmemory)}

## Regenerate

```
brokerstack sizing      # measures both brokers (results/sizing/)
brokerstack report      # this file, with docs/ops-comparison.md
```
"""


def write_sizing(root: Path, output: Path, conf: Path = REDIS_CONF) -> Path | None:
    """Render docs/sizing.md from the records under ``root``; None (nothing written) without any."""
    records = load_sizing(root)
    if not records:
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_sizing(records, maxmemory_bytes(conf)))
    return output
