"""Settings -> the whole Celery configuration, in one place."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from worker.brokers import profile_for
from worker.settings import SENTINEL_SCHEME, Settings, redis_scheme
from worker.topology import DEFAULT_QUEUE, TASK_ROUTES, work_queues

#: Modules that define tasks; the worker imports them at start.
TASK_MODULES = (
    "worker.tasks.basic",
    "worker.tasks.email",
    "worker.tasks.batch",
    "worker.tasks.workflows",
    "worker.tasks.tools",
)

#: A publish that fails is retried this often before the caller sees the error. Short on purpose:
#: with the broker down the API must answer 503 within PUBLISH_TIMEOUT, not after minutes.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


def build_celery_config(settings: Settings) -> dict[str, Any]:
    profile = profile_for(settings)
    return {
        # --- broker ---------------------------------------------------------------------------
        "broker_url": profile.url,
        "broker_transport_options": profile.transport_options(),
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        # Workers keep trying to reach a broker that is down; 0 would mean forever in Celery, so
        # give a bound that outlasts a restart or failover by far (about an hour with backoff).
        "broker_connection_max_retries": 1000,
        "broker_connection_timeout": settings.broker_connection_timeout,
        "broker_pool_limit": settings.broker_pool_limit,
        # --- results (Redis on both profiles unless RESULT_BACKEND_URL says otherwise) ----------
        "result_backend": settings.result_backend,
        "result_expires": settings.result_expires,
        "redis_socket_connect_timeout": settings.broker_connection_timeout,
        "redis_socket_timeout": 5.0,
        "redis_backend_health_check_interval": 10,
        # A worker that finished a task while Redis blinked retries storing the result instead of
        # failing the task; bounded so a dead backend surfaces as an error.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 10,
        "result_backend_max_sleep_between_retries_ms": 1000,
        **result_backend_redis_options(settings),
        # --- serialisation: JSON only, a pickle payload is refused, never executed -------------
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # --- delivery guarantees ----------------------------------------------------------------
        # Ack after the task ran, and give the message back if the worker process died, so a
        # crash means "run again", never "lost".
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task that failed for good is rejected (RabbitMQ dead-letters it); a hard time limit
        # is acked, since requeueing it would kill the next worker the same way.
        "task_acks_on_failure": False,
        "task_acks_on_timeout": True,
        "task_track_started": True,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_publish_retry": True,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        # Task events for the monitoring exporter (services.monitoring): workers send them, and
        # every publish sends task-sent (counts, queue, and how long a task waited).
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        # Records poison before letting it go, and reconnects to a lost broker within seconds.
        "worker_consumer": "worker.consumer:BrokerstackConsumer",
        # --- topology -----------------------------------------------------------------------------
        "task_queues": work_queues(profile),
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": TASK_ROUTES,
        # A mistyped queue name is an error at publish time, not a new queue nobody consumes.
        "task_create_missing_queues": False,
        # --- time and schedule ----------------------------------------------------------------
        "timezone": settings.timezone,
        "enable_utc": True,
        "beat_schedule": beat_schedule(settings),
        **profile.celery_options(),
    }


def result_backend_redis_options(settings: Settings) -> dict[str, Any]:
    """TLS, Sentinel and the key prefix for the result backend, from the same settings as the broker."""
    options: dict[str, Any] = {}
    transport: dict[str, Any] = {}
    scheme = redis_scheme(settings.result_backend)
    if scheme == "rediss":
        # Celery refuses a rediss:// backend without ssl_cert_reqs; this also carries the CA.
        options["redis_backend_use_ssl"] = settings.redis_ssl_options()
    elif scheme == SENTINEL_SCHEME:
        transport["master_name"] = settings.redis_sentinel_master
        transport["sentinel_kwargs"] = settings.redis_sentinel_kwargs(5.0)
    if settings.redis_global_keyprefix:
        transport["global_keyprefix"] = settings.redis_global_keyprefix
    if transport:
        options["result_backend_transport_options"] = transport
    return options


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "heartbeat": {"task": "worker.tasks.basic.heartbeat", "schedule": settings.heartbeat_interval},
        "daily-report": {"task": "worker.tasks.basic.daily_report", "schedule": crontab(hour=0, minute=0)},
        "weekly-summary": {
            "task": "worker.tasks.basic.weekly_summary",
            "schedule": crontab(hour=9, minute=0, day_of_week=1),
        },
    }
