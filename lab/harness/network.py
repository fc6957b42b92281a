"""Network partitions between lab nodes, with the engine's own means.

Docker: a partition is a set of (network, container) attachments that are removed with ``docker
network disconnect`` and put back, with the same static address and aliases, with ``docker
network connect``. Which attachments make up "node X cut off from its peers while clients can
still reach it" depends on the group's topology; the groups (lab.harness.vendors.rabbitmq.cluster
for RabbitMQ, lab.harness.vendors.redis.sentinel for Redis) document theirs and hand the links to
:func:`cut`. Traffic never leaves this machine: the networks are bridges the lab creates.

Processes: brokers on 127.0.0.1 share one network stack, so nothing short of a network namespace
per node (and veth pairs, routes and root) separates them; the process driver does not partition.
:data:`PROCESS_CANNOT_PARTITION` is the one line a scenario prints when asked to.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: What a partition scenario says, and skips, on the process driver.
PROCESS_CANNOT_PARTITION = (
    "the process driver cannot partition: its nodes share 127.0.0.1 and one network stack "
    "(a network namespace per node would be needed); run partitions with --driver docker"
)

#: Subnets of lab networks with static addresses are /SUBNET_PREFIX slices of this range (kept
#: away from Docker's default pools, 172.17-31.0.0/16 and 192.168.0.0/16, which it assigns to
#: networks created without a subnet).
SUBNET_RANGE = ipaddress.IPv4Network("10.213.0.0/16")
SUBNET_PREFIX = 28
#: Attempts at a free subnet before giving up (another network may take one between the check
#: and the creation: the engine refuses the overlap and the next one is tried).
SUBNET_ATTEMPTS = 20


class PartitionError(RuntimeError):
    """A partition could not be made or healed."""


def _client() -> Any:
    from lab.harness.nodes.docker import docker_client

    return docker_client()


def _used_subnets(client: Any) -> list[ipaddress.IPv4Network]:
    used = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            subnet = config.get("Subnet")
            if subnet and ":" not in subnet:
                used.append(ipaddress.IPv4Network(subnet))
    return used


@dataclass
class LabNetwork:
    """A bridge network the lab created (labelled for stale cleanup)."""

    name: str
    subnet: ipaddress.IPv4Network | None = None
    internal: bool = False

    def address(self, n: int) -> str:
        """The n-th host address of the subnet (1 is the bridge's gateway: start at 2)."""
        if self.subnet is None:
            raise PartitionError(f"network {self.name} has no subnet of its own: no static addresses")
        return str(self.subnet.network_address + n)

    def remove(self) -> None:
        import docker

        client = _client()
        try:
            client.networks.get(self.name).remove()
        except docker.errors.NotFound:
            pass
        finally:
            client.close()


def create_network(name: str, *, subnet: bool = False, internal: bool = False) -> LabNetwork:
    """A user-defined bridge named ``name``; ``subnet``: with a free /SUBNET_PREFIX of its own, so
    containers can be given static addresses (the engine allows them only there); ``internal``:
    no gateway, so it never carries a container's published ports or outside traffic."""
    from docker.types import IPAMConfig, IPAMPool

    from lab.harness.nodes.docker import lab_labels

    client = _client()
    try:
        if not subnet:
            client.networks.create(name, driver="bridge", internal=internal, labels=lab_labels("network"))
            return LabNetwork(name, None, internal)
        candidates = list(SUBNET_RANGE.subnets(new_prefix=SUBNET_PREFIX))
        last: Exception | None = None
        for _ in range(SUBNET_ATTEMPTS):
            used = _used_subnets(client)
            free = [c for c in candidates if not any(c.overlaps(u) for u in used)]
            if not free:
                break
            chosen = random.choice(free)
            ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(chosen), gateway=str(chosen.network_address + 1))])
            try:
                client.networks.create(
                    name, driver="bridge", internal=internal, ipam=ipam, labels=lab_labels("network")
                )
            except Exception as exc:  # noqa: BLE001 - taken meanwhile: try another
                last = exc
                continue
            return LabNetwork(name, chosen, internal)
        raise PartitionError(f"no free /{SUBNET_PREFIX} in {SUBNET_RANGE} for network {name}: {last!r}")
    finally:
        client.close()


@dataclass(frozen=True)
class Link:
    """One container's attachment to one network, as it must be restored."""

    network: str
    container: str
    address: str | None = None
    aliases: tuple[str, ...] = ()


def connect(client: Any, link: Link) -> None:
    kwargs: dict[str, Any] = {}
    if link.address:
        kwargs["ipv4_address"] = link.address
    if link.aliases:
        kwargs["aliases"] = list(link.aliases)
    client.networks.get(link.network).connect(link.container, **kwargs)


def connect_all(links: Iterable[Link]) -> None:
    client = _client()
    try:
        for link in links:
            connect(client, link)
    finally:
        client.close()


@dataclass
class Partition:
    """Links that were cut; :meth:`heal` restores them (once; a second call does nothing)."""

    links: list[Link]
    healed: bool = field(default=False)

    def heal(self) -> None:
        if self.healed:
            return
        import docker

        client = _client()
        failed: list[str] = []
        try:
            for link in self.links:
                try:
                    connect(client, link)
                except docker.errors.APIError as exc:
                    # Already attached (a restart re-attached it) is healed too.
                    if "already exists" not in str(exc):
                        failed.append(f"{link.container} to {link.network}: {exc}")
        finally:
            client.close()
        self.healed = True
        if failed:
            raise PartitionError("could not heal: " + "; ".join(failed))


def cut(links: Sequence[Link]) -> Partition:
    """Disconnect every link (``docker network disconnect``); the returned Partition heals them.
    A failure midway reconnects what was already cut before raising."""
    client = _client()
    done: list[Link] = []
    try:
        for link in links:
            try:
                client.networks.get(link.network).disconnect(link.container, force=True)
            except Exception as exc:
                Partition(done).heal()
                raise PartitionError(f"could not disconnect {link.container} from {link.network}: {exc}") from exc
            done.append(link)
    finally:
        client.close()
    return Partition(done)


__all__ = [
    "PROCESS_CANNOT_PARTITION",
    "LabNetwork",
    "Link",
    "Partition",
    "PartitionError",
    "connect_all",
    "create_network",
    "cut",
]
