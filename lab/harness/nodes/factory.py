"""Choosing a driver and building nodes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

from .base import BrokerKind, BrokerNode, DriverName

#: Environment variable selecting the driver when make_node() is not told.
DRIVER_ENV = "BROKERSTACK_TEST_DRIVER"
DriverChoice = DriverName | Literal["auto"]
_CHOICES: tuple[str, ...] = ("auto", *get_args(DriverName))


def docker_available() -> bool:
    """True if a Docker engine answers (short timeout)."""
    from .docker import docker_available as ping

    return ping()


def resolve_driver(driver: DriverChoice | None = None) -> DriverName:
    """driver, else $BROKERSTACK_TEST_DRIVER, else "auto"; "auto" means docker
    when an engine answers, process otherwise."""
    source = "driver argument"
    chosen: str = driver or ""
    if driver is None:
        chosen = os.environ.get(DRIVER_ENV, "").strip().lower() or "auto"
        source = DRIVER_ENV
    if chosen not in _CHOICES:
        raise ValueError(f"{source} must be one of {', '.join(_CHOICES)}, not {chosen!r}")
    if chosen == "auto":
        return "docker" if docker_available() else "process"
    return "docker" if chosen == "docker" else "process"


def make_node(
    kind: BrokerKind,
    driver: DriverChoice | None = None,
    *,
    options: Any = None,
    name: str | None = None,
    base_dir: str | Path | None = None,
    **by_field: Any,
) -> BrokerNode:
    """A not-yet-started node of kind on the chosen driver (its vendor builds it:
    lab.harness.vendors).

    ``options``: the broker's node options, whatever its kind; each vendor's ``options_field``
    (``redis=``, ``rabbit=``) also takes them, for its kind only. Options of another kind are an
    error rather than silently ignored. base_dir only matters to the process driver (default
    $BROKERSTACK_NODES_DIR or /tmp/brokerstack-nodes).
    """
    from lab.harness.vendors import VENDORS

    vendor = VENDORS.get(kind)
    if vendor is None:
        raise ValueError(f"kind must be one of {get_args(BrokerKind)}, not {kind!r}")
    fields = {v.options_field for v in VENDORS.values()}
    if unknown := sorted(set(by_field) - fields):
        raise TypeError(f"make_node() got an unexpected keyword argument {unknown[0]!r}")
    stray = [field for field, value in by_field.items() if value is not None and field != vendor.options_field]
    if stray:
        raise ValueError(f"{stray[0]} options given for a {kind} node")
    chosen = by_field.get(vendor.options_field)
    if options is not None and chosen is not None:
        raise ValueError("give the node options once: options= or the kind's own keyword")
    return vendor.make_node(resolve_driver(driver), options or chosen, name=name, base_dir=base_dir)
