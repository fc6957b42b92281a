"""Redis clients beyond the stock ones: the result backend variants, the TLS connection classes and
the one way brokerstack's own stores (dead letters, outbox) reach a Redis URL, plain, TLS or
through Sentinel."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import redis
import redis.sentinel
from celery.backends.redis import RedisBackend, SentinelBackend

from worker.settings import SENTINEL_SCHEME, redis_scheme, url_parts

if TYPE_CHECKING:
    from worker.settings import Settings


class TLSHandshakeError(OSError):
    """A rediss:// endpoint did not complete a TLS handshake. An OSError on purpose: redis-py
    retries its own connection errors and timeouts at once, and a server that does not speak TLS
    (or presents a certificate we do not trust) will not change its mind on a retry; kombu's and
    Celery's reconnect loops still retry it, with their back-off."""


def _handshake_error(exc: BaseException, timeout: float | None) -> TLSHandshakeError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = f"certificate verify failed: {exc.verify_message} (check REDIS_SSL_CA_CERTS)"
    elif isinstance(exc, TimeoutError):
        # A plaintext Redis reads the ClientHello as an unfinished inline command and never answers.
        waited = f" within {timeout:g} s" if timeout else ""
        reason = f"no TLS answer{waited}: a plaintext port behind a rediss:// URL"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    # Two arguments: redis-py renders them as "Error <first> connecting to host:port. <second>."
    return TLSHandshakeError("TLS handshake failed", reason)


class TLSConnection(redis.SSLConnection):
    """redis-py's TLS connection, with the handshake bounded by the connect timeout (it is part of
    connecting) and its failure reported in one line that says it was TLS."""

    def _connect(self) -> Any:
        sock = super(redis.SSLConnection, self)._connect()
        sock.settimeout(self.socket_connect_timeout)
        try:
            tls = self._wrap_socket_with_ssl(sock)
        except (OSError, redis.RedisError) as exc:
            sock.close()
            raise _handshake_error(exc, self.socket_connect_timeout) from exc
        tls.settimeout(self.socket_timeout)
        return tls


class SentinelTLSConnection(redis.sentinel.SentinelManagedConnection, TLSConnection):
    """TLS to whichever server the sentinels name as primary."""


class BrokerstackRedisBackend(RedisBackend):
    """Celery's Redis result backend with TLSConnection for rediss:// (Celery hard-wires
    redis-py's). Named as a class in Celery's configuration (``backend_cls``) before the URL is
    known, so for a sentinel:// URL it builds its Sentinel variant instead."""

    def __new__(cls, *args: Any, url: str | None = None, **kwargs: Any) -> Any:
        target = url or kwargs["app"].conf.result_backend
        if redis_scheme(target) == SENTINEL_SCHEME and not issubclass(cls, SentinelBackend):
            cls = _SENTINEL_VARIANTS[cls]
        return super().__new__(cls)

    def __init__(self, *args: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, url=url or kwargs["app"].conf.result_backend, **kwargs)

    def _params_from_url(self, url: str, defaults: dict[str, Any]) -> dict[str, Any]:
        params = super()._params_from_url(url, defaults)
        if params.get("connection_class") is redis.SSLConnection:
            params["connection_class"] = TLSConnection
        return params


class ProducerRedisBackend(BrokerstackRedisBackend):
    """The Redis result backend for processes that publish tasks but never wait on them (the API).

    Celery's Redis backend subscribes to every published task's result channel so that a later
    ``.get()`` can wait on pub/sub. A producer that only reads states by key would pay a SUBSCRIBE
    round trip to Redis per publish, keep the subscriptions until the results are collected, and
    fail publishes when the *result* Redis is down even though the broker is fine.
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


class BrokerstackSentinelBackend(BrokerstackRedisBackend, SentinelBackend):
    connection_class_ssl = SentinelTLSConnection


class ProducerSentinelBackend(ProducerRedisBackend, SentinelBackend):
    connection_class_ssl = SentinelTLSConnection


_SENTINEL_VARIANTS: dict[type, type] = {
    BrokerstackRedisBackend: BrokerstackSentinelBackend,
    ProducerRedisBackend: ProducerSentinelBackend,
}


def redis_client(
    url: str, settings: Settings, *, socket_timeout: float = 5.0, decode_responses: bool = False
) -> redis.Redis:
    """A client for a REDIS_URL-style URL: redis://, rediss:// with the REDIS_SSL_* settings, or
    sentinel:// (';'-separated) to the primary of REDIS_SENTINEL_MASTER."""
    common: dict[str, Any] = {
        "socket_connect_timeout": settings.broker_connection_timeout,
        "socket_timeout": socket_timeout,
        "decode_responses": decode_responses,
    }
    scheme = redis_scheme(url)
    if scheme == "rediss":
        return redis.Redis.from_url(url, connection_class=TLSConnection, **settings.redis_ssl_options(), **common)
    if scheme != SENTINEL_SCHEME:
        return redis.Redis.from_url(url, **common)
    sentinels, primary = [], {}
    for index, part in enumerate(url_parts(url)):
        parsed = redis.connection.parse_url(part.replace(f"{SENTINEL_SCHEME}://", "redis://", 1))
        sentinels.append((parsed.get("host", "localhost"), int(parsed.get("port", 26379))))
        if index == 0:
            # As kombu and Celery read it: the first URL's credentials and db are the primary's.
            primary = {key: parsed[key] for key in ("username", "password", "db") if key in parsed}
    sentinel = redis.sentinel.Sentinel(
        sentinels, sentinel_kwargs=settings.redis_sentinel_kwargs(socket_timeout), **common
    )
    return sentinel.master_for(settings.redis_sentinel_master, **primary, **common)
