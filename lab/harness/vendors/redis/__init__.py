"""Redis in the lab: its nodes (nodes.py), its config rendering (config.py), its Sentinel groups
(sentinel.py) and its vendor object (vendor.py)."""

from lab.harness.vendors.redis.vendor import VENDOR, RedisVendor

__all__ = ["VENDOR", "RedisVendor"]
