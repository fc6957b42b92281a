"""The one settings object: every knob of brokerstack, read from the environment once.

The environment names are a contract (compose files, CI and users' deployments set them), so the
field names below are exactly those names, lower-cased. Anything that builds a Celery app, the API
or a CLI command takes a ``Settings`` instance; nothing else reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import hmac
import os
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from worker.brokers.base import BrokerProfile

    #: A BROKER_PROFILE value: a name in ``worker.brokers.PROFILES``. At run time it is the
    #: ``Literal`` of those names (``typing.get_args`` lists them; see ``__getattr__`` below).
    BrokerProfileName = str

QueueType = Literal["classic", "quorum"]
#: Which kombu transport carries Celery's messages on Redis: brokerstack's (worker.brokers.redis)
#: or kombu's stock one, so every claim about the former is measured against the latter.
RedisTransportName = Literal["brokerstack", "kombu"]
#: Which Redis list a message's priority goes to: brokerstack's scale (9 most urgent, as on
#: RabbitMQ) or kombu's (0 most urgent, what a stock Celery client on the same Redis uses).
RedisPriorityOrder = Literal["brokerstack", "kombu"]
#: How a rediss:// client checks the server's certificate (ssl.CERT_REQUIRED / _OPTIONAL / _NONE).
RedisSslCertReqs = Literal["required", "optional", "none"]

#: Passwords and keys that ship in the compose files and docs for local use. They are public, so a
#: process started with ENVIRONMENT=production refuses to run with any of them.
DEVELOPMENT_SECRETS = frozenset({"brokerstack-dev", "brokerstack-dev-key", "brokerstack-test", "guest"})

#: Redis holds the results (and dead letters, outbox, ledger) whichever broker carries the tasks,
#: so its URLs are checked here; each broker checks its own URL (``BrokerProfile.check_url``).
REDIS_SCHEMES = ("redis", "rediss")
#: Redis reached through Sentinel: kombu's and Celery's form, several sentinels separated by ';'.
SENTINEL_SCHEME = "sentinel"


class ConfigError(ValueError):
    """A setting is wrong. The message is one line that names the environment variable."""


class Settings(BaseSettings):
    """brokerstack's configuration; see docs/configuration.md for every field."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # --- which broker -------------------------------------------------------------------------
    #: A name in worker.brokers.PROFILES; each profile names the field below that holds its URL.
    broker_profile: str = "redis"
    redis_url: str = "redis://localhost:6379/0"
    rabbitmq_url: str = "amqp://brokerstack:brokerstack-dev@localhost:5672/brokerstack"
    #: Celery results live in Redis on both profiles unless this says otherwise.
    result_backend_url: str | None = None
    environment: Literal["development", "test", "production"] = "development"

    # --- RabbitMQ -----------------------------------------------------------------------------
    rabbitmq_queue_type: QueueType = "classic"
    #: Publisher confirms: the producer returns only once RabbitMQ has taken the message.
    rabbitmq_confirm_publish: bool = True
    #: Quorum queues dead-letter a message after this many redeliveries (RabbitMQ 4.0 default: 20).
    rabbitmq_delivery_limit: int = Field(default=20, ge=1)
    #: RabbitMQ closes a channel whose delivery stays unacked this long (server default 30 min);
    #: with acks_late an ETA task is unacked while it waits, so ETAs are bounded by it.
    rabbitmq_consumer_timeout: int = Field(default=1800, ge=1)

    # --- Redis --------------------------------------------------------------------------------
    #: Seconds an unacknowledged Redis message stays invisible before another worker gets it.
    #: Must exceed the longest task run *and* the longest countdown/ETA, or tasks run twice.
    redis_visibility_timeout: int = Field(default=7200, ge=1)
    #: Workers look for unacked messages whose visibility timeout has passed every INTERVAL
    #: seconds but scan Redis only on every THROTTLE-th look, so an abandoned message comes back
    #: up to about INTERVAL x THROTTLE seconds after its visibility timeout (kombu's defaults: 10 x 10).
    redis_unacked_restore_interval: float = Field(default=10.0, gt=0)
    redis_unacked_restore_throttle: int = Field(default=10, ge=1)
    #: brokerstack's transport (atomic batched fetch, doorbells) or kombu's stock one.
    redis_transport: RedisTransportName = "brokerstack"
    #: "kombu" keeps kombu's priority order for fleets that mix brokerstack and stock Celery
    #: clients on one Redis; kombu's transport always uses it.
    redis_priority_order: RedisPriorityOrder = "brokerstack"
    #: TLS for rediss:// URLs (broker, results, dead letters, outbox): "required" verifies the
    #: server's certificate and host name against REDIS_SSL_CA_CERTS (or the system's CAs).
    redis_ssl_cert_reqs: RedisSslCertReqs = "required"
    redis_ssl_ca_certs: str | None = None
    #: A client certificate and its key, for servers that require one (tls-auth-clients yes).
    redis_ssl_certfile: str | None = None
    redis_ssl_keyfile: str | None = None
    #: The Sentinel service name of a sentinel:// REDIS_URL / RESULT_BACKEND_URL.
    redis_sentinel_master: str = Field(default="mymaster", min_length=1)
    #: The sentinels' own password (their requirepass), if they have one; the password in a
    #: sentinel:// URL is the Redis primary's.
    redis_sentinel_password: SecretStr | None = None
    #: Prepended to every Redis key: queues, results, dead letters and the outbox, so several stacks
    #: can share one Redis database. End it with ':' (Celery appends '_' to results' prefix otherwise).
    redis_global_keyprefix: str = ""

    # --- tasks and workers --------------------------------------------------------------------
    #: Longest countdown/ETA the API accepts (seconds, default 7 days), on every broker: waiting
    #: tasks are held by the broker, not by a worker (docs/delayed-tasks.md). At most 2^28 - 1, the
    #: longest delay RabbitMQ's delayed-delivery ladder holds.
    max_task_delay: int = Field(default=7 * 24 * 3600, ge=1, le=2**28 - 1)
    task_time_limit: int = Field(default=30 * 60, ge=1)
    task_soft_time_limit: int = Field(default=29 * 60, ge=1)
    result_expires: int = Field(default=24 * 3600, ge=1)
    #: How long an Idempotency-Key's answer (API) and a task id's completed effect claim (worker)
    #: are remembered: a retry after this is a new request (docs/idempotency.md).
    idempotency_ttl: int = Field(default=24 * 3600, ge=1)
    #: Task events (task-sent from every publish, received/started/succeeded/... from workers):
    #: what the monitoring exporter counts. Off saves a publish per task on the producer and a few
    #: per task on the worker, and the dashboards then show no task counts.
    task_events: bool = True
    #: 1 makes priorities and routing take effect: a worker holds at most one waiting message
    #: per process, so urgent work is not stuck behind a prefetched backlog.
    worker_prefetch_multiplier: int = Field(default=1, ge=1)
    timezone: str = "UTC"
    heartbeat_interval: float = Field(default=60.0, gt=0)

    # --- failure-injection instrumentation (lab.experiments.chaos) ---------------------------
    #: A Redis outside the broker under test where workers log every task start and finish.
    ledger_url: str | None = None
    ledger_run: str = "default"

    # --- producer (API) -----------------------------------------------------------------------
    api_key: SecretStr | None = None
    #: A read-only X-API-Key for dashboards: accepted on the GET endpoints that return task data
    #: (/tasks/{id}, /workflows/{id}, /dlq, /dlq/{id}), refused with 403 on everything that changes state.
    api_read_key: SecretStr | None = None
    #: Upper bound for one publish, broker down included; the API answers 503 after it.
    publish_timeout: float = Field(default=4.0, gt=0, le=30)
    broker_connection_timeout: float = Field(default=2.0, gt=0)
    broker_pool_limit: int = Field(default=10, ge=1)
    api_max_body_bytes: int = Field(default=1 << 20, ge=1024)

    @field_validator("broker_profile")
    @classmethod
    def _check_broker_profile(cls, value: str) -> str:
        names = tuple(_profiles())
        if value not in names:
            raise ValueError(f"{value!r} is not one of {_one_of(names)}")
        return value

    @field_validator("*")
    @classmethod
    def _check_broker_url(cls, value: Any, info: ValidationInfo) -> Any:
        # Every profile's URL, chosen or not: REDIS_URL also holds the results on any broker, and
        # a bad URL should stop a deployment before someone switches BROKER_PROFILE to it.
        for profile in _profiles().values():
            if profile.url_setting == info.field_name:
                value = profile.check_url(value)
        return value

    @field_validator("result_backend_url")
    @classmethod
    def _check_result_backend_url(cls, value: str | None) -> str | None:
        return None if not value else checked_redis_url(value)

    @field_validator("ledger_url")
    @classmethod
    def _check_ledger_url(cls, value: str | None) -> str | None:
        # The ledger is lab instrumentation on a Redis of its own: a plain URL is all it takes.
        return None if not value else checked_url(value, REDIS_SCHEMES)

    @field_validator("redis_ssl_ca_certs", "redis_ssl_certfile", "redis_ssl_keyfile")
    @classmethod
    def _check_readable_file(cls, value: str | None) -> str | None:
        if not value:
            return None
        # Checked at start-up: a missing CA file would otherwise surface as a TLS error much later.
        if not os.path.isfile(value) or not os.access(value, os.R_OK):
            raise ValueError(f"no readable file at {value!r}")
        return value

    @field_validator("redis_global_keyprefix")
    @classmethod
    def _check_keyprefix(cls, value: str) -> str:
        if any(ch.isspace() for ch in value):
            raise ValueError(f"must not contain whitespace (got {value!r})")
        return value

    @model_validator(mode="after")
    def _check_production_secrets(self) -> Settings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("TASK_SOFT_TIME_LIMIT must be lower than TASK_TIME_LIMIT")
        if bool(self.redis_ssl_certfile) != bool(self.redis_ssl_keyfile):
            raise ValueError("REDIS_SSL_CERTFILE and REDIS_SSL_KEYFILE go together: set both or neither")
        if self.api_read_key is not None and self.api_key is None:
            raise ValueError("API_READ_KEY needs API_KEY: without it the endpoints that change state are open")
        if self.api_read_key is not None and self.api_key is not None and _same_secret(self.api_read_key, self.api_key):
            raise ValueError("API_READ_KEY must differ from API_KEY (the same value grants full access)")
        if self.environment != "production":
            return self
        problems = self._production_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _production_problems(self) -> list[str]:
        """Every development credential in use, at once: an operator fixes them in one go."""
        problems = []
        refused = set()
        # In the compose stacks users set a password, not a URL: the refusal names it.
        hints = {profile.url_setting.upper(): profile.password_variable for profile in _profiles().values()}
        for env_name, url in self._broker_urls_in_use():
            password = urlsplit(url).password
            if (password in DEVELOPMENT_SECRETS or urlsplit(url).username == "guest") and env_name not in refused:
                refused.add(env_name)
                hint = hints.get(env_name)
                problems.append(
                    f"ENVIRONMENT=production refuses the development credentials in {env_name}: "
                    f"set {env_name} with your own user and password"
                    + (f" (the compose stacks build it from {hint})" if hint else "")
                )
        for env_name, secret in (
            ("REDIS_SENTINEL_PASSWORD", self.redis_sentinel_password),
            ("API_READ_KEY", self.api_read_key),
        ):
            if secret is not None and secret.get_secret_value() in DEVELOPMENT_SECRETS:
                problems.append(f"ENVIRONMENT=production refuses the development {env_name}: set your own")
        if self.api_key is None:
            problems.append("ENVIRONMENT=production requires API_KEY (sent as X-API-Key)")
        elif self.api_key.get_secret_value() in DEVELOPMENT_SECRETS:
            problems.append("ENVIRONMENT=production refuses the development API_KEY: set your own")
        return problems

    def _broker_urls_in_use(self) -> list[tuple[str, str]]:
        """(env name, one URL) for every URL in use; ';'-separated lists (RabbitMQ failover,
        several sentinels) count URL by URL, so a development password in any of them is found."""
        field = _profiles()[self.broker_profile].url_setting
        urls = [(field.upper(), part) for part in url_parts(getattr(self, field))]
        if self.result_backend_url:
            backend = [("RESULT_BACKEND_URL", part) for part in url_parts(self.result_backend_url)]
        else:
            backend = [("REDIS_URL", part) for part in url_parts(self.redis_url)]
        return urls + [pair for pair in backend if pair not in urls]

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for a worker or API started as a subprocess."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    @property
    def broker_url(self) -> str:
        return str(getattr(self, _profiles()[self.broker_profile].url_setting))

    @property
    def result_backend(self) -> str:
        return self.result_backend_url or self.redis_url

    def redis_ssl_options(self) -> dict[str, str]:
        """redis-py's ssl_* connection arguments (also the shape of Celery's broker_use_ssl and
        redis_backend_use_ssl) for a rediss:// URL."""
        options: dict[str, str] = {"ssl_cert_reqs": self.redis_ssl_cert_reqs}
        for key, value in (
            ("ssl_ca_certs", self.redis_ssl_ca_certs),
            ("ssl_certfile", self.redis_ssl_certfile),
            ("ssl_keyfile", self.redis_ssl_keyfile),
        ):
            if value:
                options[key] = value
        return options

    def redis_sentinel_kwargs(self, socket_timeout: float) -> dict[str, object]:
        """Connection arguments for the sentinels themselves. Always explicit: Celery's result
        backend would otherwise talk to them with no timeout at all."""
        kwargs: dict[str, object] = {
            "socket_connect_timeout": self.broker_connection_timeout,
            "socket_timeout": socket_timeout,
        }
        if self.redis_sentinel_password is not None:
            kwargs["password"] = self.redis_sentinel_password.get_secret_value()
        return kwargs


def url_parts(value: str) -> list[str]:
    """The URLs of a ';'-separated list (kombu's failover and Sentinel form)."""
    return [part.strip() for part in value.split(";") if part.strip()]


def redis_scheme(url: str) -> str:
    """How a (validated) Redis URL is reached: "redis", "rediss" or "sentinel"."""
    return urlsplit(url_parts(url)[0]).scheme


def checked_redis_url(value: str) -> str:
    """``value`` if it is a Redis URL (plain, TLS, or a ';'-separated list of sentinels)."""
    parts = url_parts(value)
    if not parts:
        raise ValueError("empty URL")
    if urlsplit(parts[0]).scheme == SENTINEL_SCHEME:
        for part in parts:
            checked_url(part, (SENTINEL_SCHEME,))
        return value
    if len(parts) > 1:
        raise ValueError(f"only sentinel:// URLs may be a ';'-separated list (got {value!r})")
    return checked_url(value, (*REDIS_SCHEMES, SENTINEL_SCHEME))


def checked_url(value: str, schemes: tuple[str, ...]) -> str:
    """``value`` if it is a well-formed URL with a host and one of ``schemes``, else ValueError."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"malformed URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in schemes)} (got {value!r})")
    if not parts.hostname:
        raise ValueError(f"no host in {value!r}")
    return value


def _profiles() -> dict[str, type[BrokerProfile]]:
    """The broker registry. worker.brokers imports this module (a profile is built from a Settings),
    so the registry is read when settings are validated, never while this module is imported."""
    from worker.brokers import PROFILES

    return PROFILES


def _one_of(names: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'``: how pydantic lists a Literal's choices, so messages read the same."""
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def __getattr__(name: str) -> Any:
    # BrokerProfileName is the Literal of the registered names, built on first use for the same
    # reason as _profiles(); the lab iterates over it (typing.get_args) and types node kinds by it.
    if name == "BrokerProfileName":
        return Literal[tuple(_profiles())]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _same_secret(a: SecretStr, b: SecretStr) -> bool:
    return hmac.compare_digest(a.get_secret_value().encode(), b.get_secret_value().encode())


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and ``overrides``), or raise ConfigError in one line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "literal_error":
            message = f"{error['input']!r} is not one of {error['ctx']['expected']}"
        problems.append(f"{field}: {message}" if field else message)
    return "configuration error: " + "; ".join(problems)
