"""The bench on RabbitMQ: publishes with and without confirms, the raw ceiling is the plain publish,
the pipelined confirmed publish and the batched consume."""

from __future__ import annotations

from typing import Any

from lab.experiments.bench import e2e, raw, resources
from lab.experiments.bench.raw import CapturedMessage, Tick
from lab.experiments.bench.vendors import BenchVendor, RawParams


def _amqp_raw(url: str, message: CapturedMessage, p: RawParams, args: dict[str, Any], tick: Tick | None) -> Any:
    return raw.amqp_raw(url, message, p.raw_messages, args, prefetch=p.raw_prefetch, window=p.confirm_window, tick=tick)


BENCH_VENDOR = BenchVendor(
    name="rabbitmq",
    api_confirm_modes=(True, False),
    confirms=True,
    ceiling=("publish", "publish_confirm_pipelined", "consume_batched"),
    old_ceiling=("publish", "publish_confirm", "consume"),
    raw_pairs=(
        ("publish", "publish_confirm"),
        ("publish", "publish_confirm_pipelined"),
        ("publish_confirm_pipelined", "publish_confirm"),
        ("consume_batched", "consume"),
        ("consume", "consume_prefetch1"),
    ),
    goal_e2e_vs_raw_consume=0.6,
    measure_raw=_amqp_raw,
    queue_depth=e2e.AmqpQueueDepth,
    capture=e2e.capture_amqp_message,
    fill=resources.fill_amqp,
)
