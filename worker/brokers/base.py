"""The small interface every broker profile implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from celery import Celery
from kombu import Queue

from worker.dead_letters.base import DeadLetterStore
from worker.settings import Settings


class BrokerProfile(ABC):
    """What one broker contributes to the Celery configuration."""

    #: The BROKER_PROFILE value that selects this profile.
    name: ClassVar[str]
    #: The setting (a ``Settings`` field, the environment name lower-cased) that holds the URL.
    url_setting: ClassVar[str]
    #: What the compose stacks build that URL from, named when production refuses its password.
    password_variable: ClassVar[str | None] = None
    #: What its client library raises when the broker is unreachable, gone mid-call or refusing
    #: work for now (worker.errors.BROKER_ERRORS gathers them): the API answers them with a 503,
    #: not a 500, and the CLI with one line.
    client_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    @abstractmethod
    def check_url(cls, value: str) -> str:
        """``value`` if this broker's client can connect to it, else ValueError saying why (the
        settings name the variable); run on every Settings, whichever profile is chosen."""

    @property
    def url(self) -> str:
        """The broker URL Celery connects to."""
        return str(getattr(self.settings, self.url_setting))

    @abstractmethod
    def transport_options(self) -> dict[str, Any]:
        """kombu transport options (``broker_transport_options``)."""

    @abstractmethod
    def queue_arguments(self, queue: str) -> dict[str, Any]:
        """Broker-side arguments of a work queue (durability, priority, dead-lettering)."""

    @property
    @abstractmethod
    def max_delay(self) -> tuple[int, str]:
        """The longest countdown/ETA this broker holds without running the task twice or dropping
        it (seconds), and the setting that bounds it with why."""

    @abstractmethod
    def delayed_depth(self, app: Celery) -> int:
        """How many delayed (countdown/ETA) tasks wait in the broker, not yet handed to a worker."""

    def prepare_app(self, app: Celery) -> None:
        """Set up what this broker needs on a new Celery app itself (beyond its settings)."""
        return None

    def flower_broker_url(self) -> str | None:
        """The URL Flower's Broker page (``/api/queues/length``) reads queues through, or None
        where the Celery connection's own URI serves (deploy/container/flower.py)."""
        return None

    def health_fields(self) -> dict[str, Any]:
        """What /readyz reports about this broker besides reachability."""
        return {"queue_type": None}

    @abstractmethod
    def dead_letter_store(self, app: Celery) -> DeadLetterStore:
        """Where this broker's dead letters are kept and read (``brokerstack dlq``, ``/dlq``)."""

    def dead_letter_queues(self) -> list[Queue]:
        """Queues that receive dead letters natively; empty where the broker has none."""
        return []

    def celery_options(self) -> dict[str, Any]:
        """Celery settings whose right value depends on the broker."""
        return {}
