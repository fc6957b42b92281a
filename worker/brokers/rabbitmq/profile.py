"""RabbitMQ as Celery's broker: durable queues, publisher confirms, native dead-lettering."""

from __future__ import annotations

from typing import Any

import amqp.exceptions
from celery import Celery
from kombu import Exchange, Queue, binding

from worker.brokers.base import BrokerProfile
from worker.brokers.rabbitmq.dead_letters import RabbitMQDeadLetterStore
from worker.brokers.rabbitmq.delayed import (
    DeclareLadder,
    DelayedDeliveryAMQP,
    delayed_depth,
    silence_false_warnings,
)
from worker.settings import checked_url
from worker.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    PRIORITY_MAX,
    WORK_QUEUES,
    dead_letter_routing_key,
)

#: What kombu speaks AMQP 0-9-1 over (pyamqp names the client library explicitly).
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


class RabbitMQProfile(BrokerProfile):
    name = "rabbitmq"
    url_setting = "rabbitmq_url"
    password_variable = "RABBITMQ_PASSWORD"
    client_errors = (
        amqp.exceptions.RecoverableConnectionError,
        amqp.exceptions.ConnectionError,
        amqp.exceptions.ChannelError,
        # A publish the broker refused to confirm (confirm_publish): not taken, so not a 202.
        amqp.exceptions.MessageNacked,
    )

    @classmethod
    def check_url(cls, value: str) -> str:
        # kombu's failover form: several URLs separated by ';' (one per cluster node).
        for part in value.split(";"):
            checked_url(part.strip(), AMQP_SCHEMES)
        return value

    @property
    def quorum(self) -> bool:
        return self.settings.rabbitmq_queue_type == "quorum"

    def transport_options(self) -> dict[str, Any]:
        return {"confirm_publish": self.settings.rabbitmq_confirm_publish}

    @property
    def max_delay(self) -> tuple[int, str]:
        # Waiting tasks are in the broker's delayed-delivery ladder (worker.brokers.rabbitmq.delayed),
        # not unacked in a worker, so consumer_timeout no longer bounds them.
        return self.settings.max_task_delay, "MAX_TASK_DELAY: the longest delay this deployment accepts"

    def delayed_depth(self, app: Celery) -> int:
        return delayed_depth(app)

    def prepare_app(self, app: Celery) -> None:
        app.amqp_cls = DelayedDeliveryAMQP
        app.steps["consumer"].add(DeclareLadder)
        silence_false_warnings()

    def health_fields(self) -> dict[str, Any]:
        return {"queue_type": self.settings.rabbitmq_queue_type}

    def dead_letter_store(self, app: Celery) -> RabbitMQDeadLetterStore:
        return RabbitMQDeadLetterStore(app)

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-queue-type": self.settings.rabbitmq_queue_type,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": dead_letter_routing_key(queue),
        }
        if self.quorum:
            arguments.update(_quorum_dead_lettering(self.settings.rabbitmq_delivery_limit))
        else:
            arguments["x-max-priority"] = PRIORITY_MAX
        return arguments

    def dead_letter_queues(self) -> list[Queue]:
        exchange = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)
        return [
            Queue(
                DEAD_LETTER_QUEUE,
                bindings=[binding(exchange, routing_key=dead_letter_routing_key(q)) for q in WORK_QUEUES],
                durable=True,
                # Classic even beside quorum work queues: operators read dead letters by taking
                # them and handing them back, which a quorum queue would count towards its
                # delivery limit (and then drop).
                queue_arguments={"x-queue-type": "classic"},
            )
        ]

    def celery_options(self) -> dict[str, Any]:
        return {
            "task_default_queue_type": self.settings.rabbitmq_queue_type,
            # Celery's own delayed-delivery step (quorum queues) declares the same ladder as
            # brokerstack does: with the same queue type, or RabbitMQ refuses the second declaration.
            "broker_native_delayed_delivery_queue_type": self.settings.rabbitmq_queue_type,
            # RabbitMQ requeues every unacked delivery when the channel closes, so a task still
            # running after the connection dropped will be delivered again anyway; letting it
            # finish would only run it twice.
            "worker_cancel_long_running_tasks_on_connection_loss": True,
        }


def _quorum_dead_lettering(delivery_limit: int) -> dict[str, Any]:
    """Quorum queues can dead-letter at-least-once (a dead letter is never dropped in transit),
    which RabbitMQ allows only together with the reject-publish overflow policy."""
    return {
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": delivery_limit,
    }
