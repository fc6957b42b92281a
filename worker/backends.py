"""Redis clients beyond the stock ones: the result backend variants, the TLS connection classes and
the one way brokerstack's own stores (dead letters, outbox) reach a Redis URL, plain, TLS or
through Sentinel."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
import redis.sentinel
from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

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


#: worker/store_result.lua: store a state unless the task already succeeded, and publish it.
STORE_RESULT_SCRIPT = Path(__file__).with_name("store_result.lua").read_text()


class BrokerstackRedisBackend(RedisBackend):
    """Celery's Redis result backend with TLSConnection for rediss:// (Celery hard-wires
    redis-py's), storing a state in one round trip instead of two (store_result.lua). Named as a
    class in Celery's configuration (``backend_cls``) before the URL is known, so for a
    sentinel:// URL it builds its Sentinel variant instead."""

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

    def _store_result(
        self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None, **kwargs: Any
    ) -> Any:
        """Celery's store (meta as Celery writes it, a SUCCESS never overwritten, FAILURE kept for
        result_expires or failure_expires, published on the key's channel) in one EVALSHA."""
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        expires = self.failure_expires if state == states.FAILURE else None
        if expires is None:
            expires = self.expires
        self.ensure(self._run_store_script, (self.get_key_for_task(task_id), value, int(expires or 0)))
        return result

    def _run_store_script(self, key: str, value: Any, expires: int) -> Any:
        script = self.__dict__.get("_store_script")
        if script is None or script.registered_client is not self.client:
            script = self._store_script = self.client.register_script(STORE_RESULT_SCRIPT)
        return script(keys=[key], args=[value, expires])


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
