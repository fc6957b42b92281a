"""The Redis broker profile: URL, transport options and the Celery settings Redis needs."""

from __future__ import annotations

from typing import Any

import redis.exceptions
from celery import Celery

from worker.brokers.base import BrokerProfile
from worker.brokers.redis.dead_letters import RedisDeadLetterStore
from worker.brokers.redis.errors import UNWRITABLE_ERRORS
from worker.brokers.redis.transport import PRIORITY_STEPS, SENTINEL_TRANSPORT_PATH, TRANSPORT_PATH
from worker.settings import SENTINEL_SCHEME, checked_redis_url, redis_scheme, url_parts
from worker.topology import WORK_QUEUES

#: Seconds the lock that one worker takes to give back expired unacked messages outlives a worker
#: killed while holding it. kombu's default (300) means one kill at the wrong moment stops every
#: redelivery for five minutes (seen in the worker-kill soak). A scan takes milliseconds, and two
#: workers restoring at once cannot restore a message twice (each restore is a WATCH transaction),
#: so a short lock costs nothing.
UNACKED_MUTEX_EXPIRE = 10

#: Publishes to a Redis that stopped answering fail after this; consumers block in BRPOP for 1 s at
#: a time, well inside it.
MIN_SOCKET_TIMEOUT = 5.0


class RedisProfile(BrokerProfile):
    name = "redis"
    url_setting = "redis_url"
    password_variable = "REDIS_PASSWORD"
    client_errors = (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        # A primary that is up but takes no writes (failover, min-replicas-to-write).
        *UNWRITABLE_ERRORS,
    )

    @classmethod
    def check_url(cls, value: str) -> str:
        # The same form as the result backend's (worker.settings): one Redis, TLS or sentinels.
        return checked_redis_url(value)

    @property
    def scheme(self) -> str:
        return redis_scheme(self.settings.redis_url)

    def transport_options(self) -> dict[str, Any]:
        socket_timeout = max(MIN_SOCKET_TIMEOUT, self.settings.broker_connection_timeout)
        options: dict[str, Any] = {
            "visibility_timeout": self.settings.redis_visibility_timeout,
            "unacked_restore_interval": self.settings.redis_unacked_restore_interval,
            "unacked_restore_throttle": self.settings.redis_unacked_restore_throttle,
            "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE,
            "priority_steps": PRIORITY_STEPS,
            "brokerstack_priority_order": self.priority_order,
            "socket_connect_timeout": self.settings.broker_connection_timeout,
            "socket_timeout": socket_timeout,
            "socket_keepalive": True,
            "health_check_interval": 10,
        }
        if self.settings.redis_global_keyprefix:
            options["global_keyprefix"] = self.settings.redis_global_keyprefix
        if self.scheme == SENTINEL_SCHEME:
            options["master_name"] = self.settings.redis_sentinel_master
            options["sentinel_kwargs"] = self.settings.redis_sentinel_kwargs(socket_timeout)
        return options

    @property
    def max_delay(self) -> tuple[int, str]:
        longest = self.settings.max_task_delay
        if self.settings.redis_transport == "kombu" and self.settings.redis_visibility_timeout < longest:
            # kombu's transport hands a delayed task to a worker at once, which holds it unacked
            # until due; past the visibility timeout another worker gets it too.
            return (
                self.settings.redis_visibility_timeout,
                "REDIS_VISIBILITY_TIMEOUT: with REDIS_TRANSPORT=kombu a longer wait would be redelivered and run twice",
            )
        return longest, "MAX_TASK_DELAY: the longest delay this deployment accepts"

    def delayed_depth(self, app: Celery) -> int:
        if self.settings.redis_transport == "kombu":
            return 0  # kombu's transport keeps no delayed set: its waiting tasks are in the workers
        with app.connection_for_read() as connection:
            return int(connection.default_channel.delayed_depth(list(WORK_QUEUES)))

    def flower_broker_url(self) -> str:
        # brokerstack's transport is picked by class path, so the connection's URI starts
        # "worker.brokers.redis:Transport://", which Flower has no queue reader for (404 "'redis'
        # broker is not supported"). Its Sentinel reader asks one sentinel: it parses one URL, not
        # kombu's ';' list.
        return url_parts(self.settings.redis_url)[0]

    def dead_letter_store(self, app: Celery) -> RedisDeadLetterStore:
        return RedisDeadLetterStore(app)

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        # Redis lists have no server-side arguments; priority comes from PRIORITY_STEPS.
        return {}

    @property
    def priority_order(self) -> str:
        """Which end of the 0..9 scale is urgent on Redis; kombu's transport only knows its own."""
        if self.settings.redis_transport == "kombu":
            return "kombu"
        return self.settings.redis_priority_order

    def celery_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.settings.redis_transport == "brokerstack":
            # A class path, not a URL scheme, picks the transport: kombu then never sees "rediss"
            # and would speak plaintext unless broker_use_ssl (below) says TLS.
            options["broker_transport"] = SENTINEL_TRANSPORT_PATH if self.scheme == SENTINEL_SCHEME else TRANSPORT_PATH
        if self.scheme == "rediss":
            options["broker_use_ssl"] = self.settings.redis_ssl_options()
        return {
            **options,
            # Redis keeps an unacked message in its "unacked" hash across reconnects, so a task
            # that was running when the connection dropped can still be acked when it finishes:
            # cancelling it would only make it run again after the visibility timeout.
            "worker_cancel_long_running_tasks_on_connection_loss": False,
        }
