"""Issue 9, items 2-4: Redis over TLS (rediss://) really is TLS, Redis through Sentinel works for the
broker, the results and the dead letters, and REDIS_GLOBAL_KEYPREFIX keeps every key under it.

The TLS and plaintext servers run on the session's driver (certificates made by the test are
copied into containers). Sentinel runs as local redis-server processes whatever the driver: the
sentinels hand clients the primary's address as they see it, which for containers is an address
inside Docker's network, not the 127.0.0.1 port published to the tests; the process driver runs on
every machine CI has.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from lab.harness.nodes import (
    BrokerNode,
    DriverName,
    ProcessSentinelGroup,
    TLSFiles,
    make_node,
    make_test_certs,
    process_available,
)
from lab.harness.processes import CeleryWorker
from lab.harness.vendors.redis.nodes import make_tls_redis_node
from tests.helpers import run_task, wait_for
from worker.backends import redis_client
from worker.celery_app import create_celery
from worker.settings import Settings, load_settings

pytestmark = pytest.mark.integration
#: Sentinel is local processes on every driver (see the module docstring).
needs_redis_server = pytest.mark.skipif(not process_available("redis"), reason="redis-server is not installed")

#: Not the default "mymaster": a test that passes proves REDIS_SENTINEL_MASTER is what is used.
MASTER = "brokerstack-primary"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_test_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(certs: TLSFiles, driver: DriverName) -> Iterator[BrokerNode]:
    """TLS only, and a client certificate required: a client that works here used all of
    REDIS_SSL_CA_CERTS, REDIS_SSL_CERTFILE and REDIS_SSL_KEYFILE."""
    node = make_tls_redis_node(certs, driver, tls_auth_clients="yes")
    with node:
        yield node


@pytest.fixture(scope="module")
def plain_redis(driver: DriverName) -> Iterator[BrokerNode]:
    node = make_node("redis", driver)
    with node:
        yield node


@pytest.fixture(scope="module")
def sentinels() -> Iterator[ProcessSentinelGroup]:
    with ProcessSentinelGroup(sentinels=2, master=MASTER) as group:
        yield group


def tls_settings(url: str, certs: TLSFiles, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "redis_ssl_ca_certs": str(certs.ca_cert),
        "redis_ssl_certfile": str(certs.client_cert),
        "redis_ssl_keyfile": str(certs.client_key),
    }
    return load_settings(environment="test", broker_profile="redis", redis_url=url, **(values | overrides))


def purged(settings: Settings) -> Settings:
    app = create_celery(settings)
    try:
        app.control.purge()
    finally:
        app.close()
    return settings


def plain_client(node: BrokerNode) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5, decode_responses=True)


# --- TLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["brokerstack", "kombu"])
def test_worker_and_api_run_a_task_over_verified_tls(tls_redis, certs, transport, start_worker, make_api):
    settings = purged(tls_settings(tls_redis.url, certs, redis_transport=transport))
    assert settings.redis_url.startswith("rediss://")
    start_worker(settings)
    api = make_api(settings)
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    status = run_task(api, "add", args=[2, 3])
    assert (status["state"], status["result"]) == ("SUCCESS", 5)
    # The dead-letter store reaches the broker's Redis the same way.
    task_id = api.post("/tasks/fail", json={"args": ["over tls"]}).json()["task_id"]
    letter = wait_for(lambda: [r for r in api.get("/dlq").json() if r["task_id"] == task_id], 30, "the dead letter")
    assert letter[0]["reason"] == "failed"


def test_a_client_without_its_certificate_is_refused(tls_redis, certs):
    """The server requires client certificates: the settings' certificate is not decoration."""
    settings = load_settings(environment="test", redis_url=tls_redis.url, redis_ssl_ca_certs=str(certs.ca_cert))
    with pytest.raises(redis.ConnectionError):
        redis_client(settings.redis_url, settings).ping()


def test_rediss_to_a_plaintext_server_fails_in_one_clear_line(plain_redis, certs, make_api, tmp_path):
    url = plain_redis.url.replace("redis://", "rediss://", 1)
    settings = tls_settings(url, certs, publish_timeout=15)
    with pytest.raises(redis.ConnectionError) as caught:
        redis_client(settings.redis_url, settings).ping()
    message = str(caught.value)
    assert "TLS handshake failed" in message and "plaintext port" in message and "\n" not in message

    api = make_api(settings)
    ready = api.get("/readyz")
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert "TLS handshake failed" in body["result_backend"]["error"], body

    worker = CeleryWorker(settings.to_env(), log_dir=tmp_path)
    with worker:
        worker.wait_for_log(r"consumer: Cannot connect to ", timeout=60)
        assert f"{worker.hostname} ready." not in worker.logs()
        # Never a plaintext fallback: nothing of Celery's (bindings, queues, results) reached the server.
        assert plain_client(plain_redis).dbsize() == 0
        assert "TLS handshake failed" in body["broker"]["error"], body
        worker.wait_for_log("TLS handshake failed", timeout=30)


def test_a_certificate_from_another_ca_is_refused(tls_redis, certs, tmp_path, make_api):
    other = make_test_certs(tmp_path / "other-ca", name="not-trusted")
    settings = tls_settings(tls_redis.url, certs, redis_ssl_ca_certs=str(other.ca_cert))
    with pytest.raises(redis.ConnectionError) as caught:
        redis_client(settings.redis_url, settings).ping()
    assert "certificate verify failed" in str(caught.value)
    body = make_api(settings).get("/readyz").json()
    assert body["status"] == "unavailable" and "certificate verify failed" in body["result_backend"]["error"], body
    assert "certificate verify failed" in body["broker"]["error"], body


# --- Sentinel ----------------------------------------------------------------------------------


@needs_redis_server
@pytest.mark.parametrize("transport", ["brokerstack", "kombu"])
def test_worker_api_and_dead_letters_through_sentinel(sentinels, transport, start_worker, make_api):
    settings = purged(
        load_settings(
            environment="test",
            broker_profile="redis",
            redis_url=sentinels.url,
            redis_sentinel_master=MASTER,
            redis_transport=transport,
        )
    )
    assert ";" in settings.redis_url  # kombu's form, both sentinels
    start_worker(settings)
    api = make_api(settings)
    assert api.get("/readyz").status_code == 200
    status = run_task(api, "add", args=[20, 22])
    assert (status["state"], status["result"]) == ("SUCCESS", 42)
    task_id = api.post("/tasks/fail", json={"args": ["through sentinel"]}).json()["task_id"]
    wait_for(lambda: [r for r in api.get("/dlq").json() if r["task_id"] == task_id], 30, "the dead letter")
    # All of it lives in the primary the sentinels name.
    primary = plain_client(sentinels.primary)
    assert primary.hexists("brokerstack:dlq:records", task_id)
    assert primary.exists(f"celery-task-meta-{task_id}")


@needs_redis_server
def test_sentinels_with_a_password(start_worker, make_api):
    with ProcessSentinelGroup(sentinels=1, master=MASTER, sentinel_password="sentinel-secret") as group:
        base = {"environment": "test", "redis_url": group.url, "redis_sentinel_master": MASTER}
        refused = load_settings(**base)
        with pytest.raises(redis.ConnectionError, match="AuthenticationError"):  # the sentinels refused it
            redis_client(refused.redis_url, refused).ping()
        settings = purged(load_settings(**base, redis_sentinel_password="sentinel-secret"))
        start_worker(settings)
        api = make_api(settings)
        status = run_task(api, "add", args=[3, 4])
        assert (status["state"], status["result"]) == ("SUCCESS", 7)


@needs_redis_server
def test_an_unknown_sentinel_master_is_an_error_not_a_hang(sentinels, make_api):
    settings = load_settings(environment="test", redis_url=sentinels.url, redis_sentinel_master="no-such-master")
    with pytest.raises(redis.sentinel.MasterNotFoundError):
        redis_client(settings.redis_url, settings).ping()
    assert make_api(settings).get("/readyz").status_code == 503


# --- global key prefix -------------------------------------------------------------------------


def test_global_keyprefix_keeps_every_key_under_it(plain_redis, start_worker, make_api):
    prefix = "stack-a:"
    settings = purged(
        load_settings(
            environment="test",
            broker_profile="redis",
            redis_url=plain_redis.url,
            redis_global_keyprefix=prefix,
        )
    )
    client = plain_client(plain_redis)
    client.flushdb()
    start_worker(settings)
    api = make_api(settings)
    status = run_task(api, "add", args=[1, 1])
    assert (status["state"], status["result"]) == ("SUCCESS", 2)
    task_id = api.post("/tasks/fail", json={"args": ["prefixed"]}).json()["task_id"]
    wait_for(lambda: [r for r in api.get("/dlq").json() if r["task_id"] == task_id], 30, "the dead letter")
    keys = sorted(str(key) for key in client.keys("*"))
    assert keys, "nothing was written"
    assert [key for key in keys if not key.startswith(prefix)] == [], keys
    assert f"{prefix}brokerstack:dlq:records" in keys
