"""RabbitMQ as Celery's broker: the profile (durable queues, publisher confirms, quorum or classic)
and the dead-letter store over RabbitMQ's native dead-lettering."""

from worker.brokers.rabbitmq.profile import RabbitMQProfile

__all__ = ["RabbitMQProfile"]
