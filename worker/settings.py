"""The one settings object: every knob of brokerstack, read from the environment once.

The environment names are a contract (compose files, CI and users' deployments set them), so the
field names below are exactly those names, lower-cased. Anything that builds a Celery app, the API
or a CLI command takes a ``Settings`` instance; nothing else reads ``os.environ`` for configuration.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BrokerProfileName = Literal["redis", "rabbitmq"]
QueueType = Literal["classic", "quorum"]

#: Passwords and keys that ship in the compose files and docs for local use. They are public, so a
#: process started with ENVIRONMENT=production refuses to run with any of them.
DEVELOPMENT_SECRETS = frozenset({"brokerstack-dev", "brokerstack-dev-key", "brokerstack-test", "guest"})

#: In the compose stacks users set a password, not a URL: name it in the refusal.
COMPOSE_PASSWORD_VARIABLES = {"REDIS_URL": "REDIS_PASSWORD", "RABBITMQ_URL": "RABBITMQ_PASSWORD"}

REDIS_SCHEMES = ("redis", "rediss")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


class ConfigError(ValueError):
    """A setting is wrong. The message is one line that names the environment variable."""


class Settings(BaseSettings):
    """brokerstack's configuration; see docs/configuration.md for every field."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # --- which broker -------------------------------------------------------------------------
    broker_profile: BrokerProfileName = "redis"
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

    # --- tasks and workers --------------------------------------------------------------------
    task_time_limit: int = Field(default=30 * 60, ge=1)
    task_soft_time_limit: int = Field(default=29 * 60, ge=1)
    result_expires: int = Field(default=24 * 3600, ge=1)
    #: 1 makes priorities and routing take effect: a worker holds at most one waiting message
    #: per process, so urgent work is not stuck behind a prefetched backlog.
    worker_prefetch_multiplier: int = Field(default=1, ge=1)
    timezone: str = "UTC"
    heartbeat_interval: float = Field(default=60.0, gt=0)

    # --- failure-injection instrumentation (lab.chaos) -------------------------------------------
    #: A Redis outside the broker under test where workers log every task start and finish.
    ledger_url: str | None = None
    ledger_run: str = "default"

    # --- producer (API) -----------------------------------------------------------------------
    api_key: SecretStr | None = None
    #: Upper bound for one publish, broker down included; the API answers 503 after it.
    publish_timeout: float = Field(default=4.0, gt=0, le=30)
    broker_connection_timeout: float = Field(default=2.0, gt=0)
    broker_pool_limit: int = Field(default=10, ge=1)
    api_max_body_bytes: int = Field(default=1 << 20, ge=1024)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        return _checked_url(value, REDIS_SCHEMES)

    @field_validator("rabbitmq_url")
    @classmethod
    def _check_rabbitmq_url(cls, value: str) -> str:
        # kombu's failover form: several URLs separated by ';' (one per cluster node).
        for part in value.split(";"):
            _checked_url(part.strip(), AMQP_SCHEMES)
        return value

    @field_validator("result_backend_url", "ledger_url")
    @classmethod
    def _check_optional_redis_url(cls, value: str | None) -> str | None:
        return None if not value else _checked_url(value, REDIS_SCHEMES)

    @model_validator(mode="after")
    def _check_production_secrets(self) -> Settings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("TASK_SOFT_TIME_LIMIT must be lower than TASK_TIME_LIMIT")
        if self.environment != "production":
            return self
        for env_name, url in self._broker_urls_in_use():
            password = urlsplit(url).password
            if password in DEVELOPMENT_SECRETS or urlsplit(url).username == "guest":
                hint = COMPOSE_PASSWORD_VARIABLES.get(env_name)
                raise ValueError(
                    f"ENVIRONMENT=production refuses the development credentials in {env_name}: "
                    f"set {env_name} with your own user and password"
                    + (f" (the compose stacks build it from {hint})" if hint else "")
                )
        if self.api_key is None:
            raise ValueError("ENVIRONMENT=production requires API_KEY (sent as X-API-Key)")
        if self.api_key.get_secret_value() in DEVELOPMENT_SECRETS:
            raise ValueError("ENVIRONMENT=production refuses the development API_KEY: set your own")
        return self

    def _broker_urls_in_use(self) -> list[tuple[str, str]]:
        if self.broker_profile == "redis":
            urls = [("REDIS_URL", self.redis_url)]
        else:
            urls = [("RABBITMQ_URL", part.strip()) for part in self.rabbitmq_url.split(";")]
        backend = ("RESULT_BACKEND_URL", self.result_backend_url) if self.result_backend_url else ("REDIS_URL", self.redis_url)
        return urls if backend in urls else [*urls, backend]

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
        return self.redis_url if self.broker_profile == "redis" else self.rabbitmq_url

    @property
    def result_backend(self) -> str:
        return self.result_backend_url or self.redis_url

    @property
    def max_eta_seconds(self) -> int:
        """The longest countdown/ETA the broker can hold without running the task twice or
        having its channel closed (see the two settings it comes from)."""
        if self.broker_profile == "redis":
            return self.redis_visibility_timeout
        return self.rabbitmq_consumer_timeout


def _checked_url(value: str, schemes: tuple[str, ...]) -> str:
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


def load_settings(**overrides: object) -> Settings:
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
