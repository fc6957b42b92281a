"""The bench on Redis: no publisher confirms (the reply to LPUSH is the acknowledgement), the raw
ceiling is the pipelined publish and the batched consume."""

from __future__ import annotations

from typing import Any

from lab.experiments.bench import e2e, raw, resources
from lab.experiments.bench.raw import CapturedMessage, Tick
from lab.experiments.bench.vendors import BenchVendor, RawParams


def _redis_raw(url: str, message: CapturedMessage, p: RawParams, _args: dict[str, Any], tick: Tick | None) -> Any:
    return raw.redis_raw(url, message, p.raw_messages, batch=p.redis_batch, tick=tick)


BENCH_VENDOR = BenchVendor(
    name="redis",
    api_confirm_modes=(None,),
    confirms=False,
    # No confirms: the reply to LPUSH is the acknowledgement, so both publish keys are the pipelined one.
    ceiling=("publish_pipelined", "publish_pipelined", "consume_batched"),
    old_ceiling=("publish", "publish", "consume"),
    raw_pairs=(("publish_pipelined", "publish"), ("consume_batched", "consume")),
    goal_e2e_vs_raw_consume=0.5,
    measure_raw=_redis_raw,
    queue_depth=e2e.RedisQueueDepth,
    capture=e2e.capture_redis_message,
    fill=resources.fill_redis,
    used_memory=resources.redis_used_memory,
)
