"""RabbitMQ in the lab: its nodes (nodes.py), its config rendering (config.py), its cluster
(cluster.py) and its vendor object (vendor.py)."""

from lab.harness.vendors.rabbitmq.vendor import VENDOR, RabbitMQVendor

__all__ = ["VENDOR", "RabbitMQVendor"]
