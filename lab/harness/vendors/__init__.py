"""One package per broker holding everything the lab knows about it, after pytest-celery's
``vendors/<broker>/``: ``lab/harness/vendors/<broker>/`` has its node classes (nodes.py) and its
:class:`~lab.harness.vendors.base.LabVendor` (vendor.py, ``VENDOR``).

    from lab.harness.vendors import vendor_for

    vendor_for(setup.broker).pending_messages(stack)

``VENDORS`` follows the product's profile registry (``worker.brokers.PROFILES``): a broker
profile without a package of the same name here fails on import, not in the middle of a run.
Nothing else in the lab compares broker names (tests/fast/test_architecture.py greps for it).
"""

from __future__ import annotations

from importlib import import_module

from lab.harness.vendors.base import LabVendor
from worker.brokers import PROFILES


def _load(name: str) -> LabVendor:
    vendor = import_module(f"{__name__}.{name}").VENDOR
    if not isinstance(vendor, LabVendor) or vendor.name != name:
        raise TypeError(f"{__name__}.{name}.VENDOR must be the LabVendor of {name!r}, not {vendor!r}")
    return vendor


#: broker name -> its vendor, in the order of worker.brokers.PROFILES.
VENDORS: dict[str, LabVendor] = {name: _load(name) for name in PROFILES}


def vendor_for(broker: str) -> LabVendor:
    """The vendor of ``broker`` (a profile name, a node's ``kind``, a setup's ``broker``)."""
    try:
        return VENDORS[broker]
    except KeyError:
        raise ValueError(f"unknown broker {broker!r}; one of: {', '.join(VENDORS)}") from None


def broker_rank(broker: str) -> int:
    """Where ``broker`` stands in the registry (unknown names last): the order tables list brokers in."""
    names = list(VENDORS)
    return names.index(broker) if broker in names else len(names)


__all__ = ["VENDORS", "LabVendor", "broker_rank", "vendor_for"]
