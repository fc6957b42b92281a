"""Free TCP port allocation for broker nodes.

A node's host port must stay the same across kill + start so that clients can
reconnect to the "same" broker.  Ports handed out by binding port 0 come from
the kernel's ephemeral range, which outgoing client connections also use: a
port freed by a killed broker can be taken by some client's socket before the
broker comes back.  So ports are picked at random *below* the ephemeral range
and checked by binding; binding port 0 is only the fallback.
"""

from __future__ import annotations

import os
import random
import socket
import threading

#: Ports of brokers that this lab never starts and must never collide with
#: (Redis, AMQP, management, Erlang distribution, epmd, Redis cluster bus).
RESERVED_PORTS: frozenset[int] = frozenset({4369, 5671, 5672, 6379, 15672, 15692, 16379, 25672, 35672})

#: Range searched for ports; it stays below Linux's default ephemeral range
#: (32768-60999) and above most well-known service ports.
PORT_RANGE: tuple[int, int] = (20000, 32000)

#: Narrows PORT_RANGE to ``LOW-HIGH``: two test runs side by side (``make test``'s two passes) each
#: take their own part, so that neither can take the port of a broker the other has stopped and is
#: about to start again on the same port.
PORT_RANGE_ENV = "BROKERSTACK_PORT_RANGE"

#: Random candidates tried before falling back to a kernel-chosen port.
MAX_ATTEMPTS = 200

_lock = threading.Lock()
#: Ports already handed out by this process; a node that is stopped does not
#: hold its port, so without this two nodes could be given the same one.
_handed_out: set[int] = set()


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """True if a listening socket could bind ``port`` right now.

    Binding the wildcard address also fails when the port is bound on 127.0.0.1
    only, which is what docker-proxy and our brokers do.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low, high = (int(part) for part in fh.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def port_range() -> tuple[int, int]:
    """PORT_RANGE, or the range ``BROKERSTACK_PORT_RANGE`` gives; a malformed one is refused."""
    raw = os.environ.get(PORT_RANGE_ENV, "").strip()
    if not raw:
        return PORT_RANGE
    try:
        low, high = (int(part) for part in raw.split("-"))
    except ValueError:
        raise ValueError(f"{PORT_RANGE_ENV}={raw!r}: give LOW-HIGH, e.g. 20000-25999") from None
    if not 1024 <= low < high <= 65535:
        raise ValueError(f"{PORT_RANGE_ENV}={raw!r}: need 1024 <= LOW < HIGH <= 65535")
    return low, high


def free_port() -> int:
    """A TCP port that is free now, was not handed out before by this process,
    and lies outside the ephemeral range when possible."""
    eph_low, eph_high = _ephemeral_range()
    low, high = port_range()
    with _lock:
        for _ in range(MAX_ATTEMPTS):
            port = random.randint(low, high)
            if port in RESERVED_PORTS or port in _handed_out or eph_low <= port <= eph_high:
                continue
            if port_is_free(port):
                _handed_out.add(port)
                return port
        # Crowded range: let the kernel pick (ephemeral, but still free now).
        for _ in range(MAX_ATTEMPTS):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in RESERVED_PORTS and port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free TCP port")


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
