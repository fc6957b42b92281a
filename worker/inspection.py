"""What is waiting where: queue depths for metrics and operators, the same on both brokers."""

from __future__ import annotations

from celery import Celery

from worker.topology import WORK_QUEUES


def queue_depths(app: Celery) -> dict[str, int]:
    """Messages ready in each work queue (RabbitMQ: not counting unacked deliveries; Redis: all
    priority lists of the queue). A queue nobody declared yet counts as empty."""
    depths: dict[str, int] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.channel()
        try:
            for name in WORK_QUEUES:
                try:
                    depths[name] = int(channel.queue_declare(name, passive=True).message_count)
                except conn.channel_errors:
                    # NOT_FOUND: RabbitMQ also closes the channel, so carry on with a new one.
                    depths[name] = 0
                    channel = conn.channel()
        finally:
            channel.close()
    return depths
