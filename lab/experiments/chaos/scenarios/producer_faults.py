"""Faults seen from the producer's side: the API during a broker outage, a burst publisher."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from lab.experiments.chaos.load import ApiLoad
from lab.experiments.chaos.runner import RunOptions, summarize
from lab.experiments.chaos.scenarios.base import (
    CONSUME_RETRY_S,
    REFUSAL_SLACK,
    Closer,
    Scenario,
    broker_recovery_metrics,
    describe_errors,
    fault_entry,
    finish_load,
    first_limit,
    restart_node,
    run_faults,
    start_stack,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lab.experiments.chaos.runner import ChaosRun
    from lab.harness.setups import Setup


class ProducerOutage(Scenario):
    name = "producer-outage"
    description = "the API under load while the broker is down: a 202 must mean stored; API recovery time"
    defaults: ClassVar[dict[str, Any]] = {"pool": "solo", "concurrency": 1, "down_seconds": 5.0}

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return (options.down_seconds or 0.0) + super().fault_period(setup, options)

    def run(self, ctx: ChaosRun) -> None:
        start_stack(ctx)
        o = ctx.options
        settings = ctx.settings
        api = ctx.stack.start_api()
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        points = ctx.fault_points()
        load = ApiLoad(
            api.url,
            ctx.ledger,
            total=o.tasks,
            rate=ctx.rate,
            clients=o.clients,
            request_timeout=o.publish_timeout + 10,
            api_key=api_key,
            limit=first_limit(points, o.tasks),
        )
        ctx.register_load(load)
        load.start()
        run_faults(ctx, load, points, self.inject)
        finish_load(ctx, load)
        ctx.drain()
        broker_recovery_metrics(ctx)
        stats = load.stats
        bound = o.publish_timeout + REFUSAL_SLACK
        latencies = stats.refusal_latencies
        ctx.record.details.update(
            statuses=dict(stats.statuses),
            refusals=stats.refusals,
            transport_errors=stats.transport_errors,
            refusal_bound_s=bound,
            max_refusal_latency_s=round(max(latencies), 3) if latencies else None,
            refusals_over_bound=sum(1 for latency in latencies if latency > bound),
        )
        if ctx.record.details["refusals_over_bound"]:
            ctx.note(f"{ctx.record.details['refusals_over_bound']} refusal(s) took longer than {bound:g} s")
        describe_errors(ctx)

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        node = ctx.stack.broker
        assert node is not None
        ctx.emit("fault", f"outage {n}/{ctx.faults_total}: broker killed", force=True)
        killed_at = time.time()
        node.kill()
        fault = fault_entry(ctx, n, "kill", node.name, killed_at)
        fault["dead_at"] = time.time()
        ctx.pause(ctx.options.down_seconds or 0.0, "broker down")
        return restart_node(node, fault, killed_at)


# --- a plain kombu publisher, killed right after a burst ------------------------------------------------------


class PublishKill(Scenario):
    name = "publish-kill"
    description = "plain kombu burst of persistent messages; kill -9 the broker ~0.2 s after the last publish"

    def faults_planned(self, options: RunOptions) -> int:
        return max(1, options.kills)

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        return 0.0  # a burst: as fast as the publisher goes

    def run(self, ctx: ChaosRun) -> None:
        started = time.time()
        ctx.stack.start_nodes(aux=False)
        node = ctx.stack.broker
        assert node is not None
        ctx.record.versions["broker"] = node.version()
        ctx.timings["setup_s"] = time.time() - started
        o = ctx.options
        rounds = max(1, o.kills)
        sizes = [o.tasks // rounds + (1 if r < o.tasks % rounds else 0) for r in range(rounds)]
        confirm = ctx.setup.vendor.confirms_publishes(ctx.setup.settings)
        quorum = ctx.setup.settings.get("rabbitmq_queue_type") == "quorum"
        ctx.record.details.update(confirm_publish=confirm, rounds=rounds, messages_per_round=sizes)
        load_s = 0.0
        consumed_all = True
        for r, size in enumerate(sizes):
            queue = f"brokerstack.chaos.publish-kill.{ctx.run_id}.{r}"
            ctx.emit("load", f"round {r + 1}/{rounds}: publishing {size}", force=True)
            published_at, last_return = self._publish(ctx, node.url, queue, size, r, quorum)
            load_s += last_return - published_at
            # The fact under test: what a broker killed right after the publishes returned keeps.
            remaining = last_return + o.kill_after - time.time()
            if remaining > 0:
                time.sleep(remaining)
            killed_at = time.time()
            node.kill()
            fault = fault_entry(ctx, n=r + 1, action="kill", node=node.name, killed_at=killed_at)
            fault.update(published=size, publish_s=last_return - published_at, kill_after_s=killed_at - last_return)
            start_call = time.time()
            node.start()
            node.wait_ready()
            fault["restart_s"] = time.time() - start_call
            ctx.emit("drain", f"round {r + 1}/{rounds}: counting what survived", force=True)
            found, empty = self._consume(ctx, node.url, queue, quorum)
            consumed_all &= empty
            fault["survived"] = found
            fault["killed_at"] = killed_at - ctx.t0_wall
            ctx.record.faults.append(fault)
            ctx.faults_done = r + 1
        ctx.record.drained = consumed_all
        ctx.timings["load_s"] = load_s
        ctx.timings["restart_s"] = summarize([f["restart_s"] for f in ctx.record.faults])
        describe_errors(ctx)

    @staticmethod
    def _declarations(queue: str, quorum: bool) -> tuple[Any, Any]:
        from kombu import Exchange, Queue

        exchange = Exchange(queue, type="direct", durable=True)
        arguments = {"x-queue-type": "quorum"} if quorum else {}
        return exchange, Queue(queue, exchange, routing_key=queue, durable=True, queue_arguments=arguments)

    def _publish(
        self, ctx: ChaosRun, url: str, queue_name: str, size: int, round_: int, quorum: bool
    ) -> tuple[float, float]:
        from kombu import Connection

        exchange, queue = self._declarations(queue_name, quorum)
        options = ctx.setup.vendor.publish_options(ctx.setup.settings)
        conn = Connection(url, transport_options=options, connect_timeout=5)
        try:
            channel = conn.channel()
            queue(channel).declare()
            producer = conn.Producer(channel=channel, serializer="json")
            started = time.time()
            for i in range(size):
                task_id = f"chaos-{ctx.run_id}-{round_}-{i:07d}"
                attempt = ctx.ledger.invoke(task_id, "message")
                try:
                    producer.publish(
                        {"id": task_id}, exchange=exchange, routing_key=queue_name, delivery_mode=2, retry=False
                    )
                except Exception as exc:  # noqa: BLE001
                    ctx.ledger.fail(attempt, f"{type(exc).__name__}: {exc}")
                else:
                    ctx.ledger.ok(attempt)
                if i % 500 == 0:
                    ctx.emit("load", f"round {round_ + 1}: published {i}/{size}")
            return started, time.time()
        finally:
            # The socket is written; closing it is for after the kill (it may fail then).
            ctx.register_load(Closer(conn))

    def _consume(self, ctx: ChaosRun, url: str, queue_name: str, quorum: bool) -> tuple[int, bool]:
        """Take everything the queue kept (no_ack gets); retried while the restarted broker does
        not serve the queue yet (a quorum queue answers INTERNAL_ERROR until its replica is back)."""
        from kombu import Connection

        _, queue = self._declarations(queue_name, quorum)
        found = 0
        deadline = time.monotonic() + CONSUME_RETRY_S
        while True:
            try:
                with Connection(url, connect_timeout=5) as conn:
                    bound = queue(conn.channel())
                    try:
                        while True:
                            message = bound.get(no_ack=True)
                            if message is None:
                                return found, True
                            ctx.executions.add(message.payload["id"])  # type: ignore[union-attr]
                            found += 1
                    except conn.channel_errors as exc:
                        # A queue that did not survive the restart (404) held nothing.
                        if "NOT_FOUND" in str(exc) or getattr(exc, "code", None) == 404:
                            return found, True
                        raise
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise
                log.debug("publish-kill: queue not served yet (%r); retrying", exc)
                ctx.pause(0.5, "waiting for the queue to be served again")
