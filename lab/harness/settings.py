"""Settings for a brokerstack stack running on lab broker nodes."""

from __future__ import annotations

from typing import Any

from lab.harness.nodes import BrokerNode
from worker.settings import Settings, load_settings


def settings_for(broker: BrokerNode, results: BrokerNode | None = None, **overrides: Any) -> Settings:
    """Settings that point a stack at ``broker``, with results (and the outbox) in ``results``
    (a Redis node), or where the broker's vendor keeps them without one (Redis: in the broker)."""
    urls = broker.vendor.settings_urls(broker.url, results.url if results is not None else None)
    return load_settings(environment="test", **urls, **overrides)
