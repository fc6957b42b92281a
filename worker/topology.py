"""Queues, routes and the priority scale: the same names and meaning on every broker.

Each broker module adds its own queue arguments (see worker.brokers); this module decides which
queues exist, which task goes where and what a priority number means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kombu import Exchange, Queue

if TYPE_CHECKING:
    from worker.brokers.base import BrokerProfile

#: Work queues, most urgent first. Each gets a worker pool of its own in the compose stacks.
WORK_QUEUES = ("high_priority", "default", "low_priority")
DEFAULT_QUEUE = "default"

#: The users' priority scale on every broker and queue type: 9 is the most urgent, 0 the least, and
#: a message sent without a priority ranks as 0. RabbitMQ classic queues honour all ten steps;
#: quorum queues (RabbitMQ 4.0) have two levels, see QUORUM_HIGH_PRIORITY_FROM.
PRIORITY_MIN = 0
PRIORITY_MAX = 9

#: RabbitMQ 4.0 quorum queues treat priorities 0-4 as "normal" and 5 and above as "high", and
#: deliver high and normal in a 2:1 ratio rather than strictly (RabbitMQ 3.x quorum queues ignore
#: priority altogether).
QUORUM_HIGH_PRIORITY_FROM = 5

#: RabbitMQ routes messages that die in a work queue here, with the reason in ``x-death``.
DEAD_LETTER_EXCHANGE = "brokerstack.dlx"
DEAD_LETTER_QUEUE = "brokerstack.dead_letters"

#: Task name -> queue. Anything not listed goes to DEFAULT_QUEUE.
TASK_ROUTES = {
    "worker.tasks.email.send_email": {"queue": "high_priority"},
    "worker.tasks.email.send_welcome_email": {"queue": "high_priority"},
    "worker.tasks.email.notify_admin_new_signup": {"queue": "high_priority"},
    "worker.tasks.batch.long_batch_job": {"queue": "low_priority"},
    "worker.tasks.basic.daily_report": {"queue": "low_priority"},
    "worker.tasks.basic.weekly_summary": {"queue": "low_priority"},
}


def dead_letter_routing_key(queue: str) -> str:
    return f"dead.{queue}"


def work_queues(profile: BrokerProfile) -> tuple[Queue, ...]:
    """The durable work queues, each on a direct exchange of its own name (Celery's convention),
    with the broker's arguments."""
    return tuple(
        Queue(
            name,
            Exchange(name, type="direct", durable=True),
            routing_key=name,
            durable=True,
            queue_arguments=profile.queue_arguments(name),
        )
        for name in WORK_QUEUES
    )


def check_priority(priority: int) -> int:
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX} (9 is most urgent)")
    return priority
