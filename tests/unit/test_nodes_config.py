"""lab.harness.nodes without brokers: config rendering, URLs, driver choice, ports,
process-tree handling and stale cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kombu.utils.url import parse_url

import lab.harness.nodes.factory as factory
from lab.harness.nodes import (
    DRIVER_ENV,
    RabbitOptions,
    RedisOptions,
    free_port,
    make_node,
    proctree,
    remove_stale_process_nodes,
    resolve_driver,
)
from lab.harness.nodes.base import NodeTimeout, amqp_url, management_http_url, poll, redis_url
from lab.harness.nodes.docker import _owner_gone, owner_token
from lab.harness.nodes.ports import PORT_RANGE_ENV, RESERVED_PORTS, port_is_free
from lab.harness.nodes.process import OWNER_FILE, _is_wrapper
from lab.harness.vendors.rabbitmq.config import rabbit_process_env, render_enabled_plugins, render_rabbitmq_conf
from lab.harness.vendors.redis.config import redis_docker_args, render_redis_conf


def conf_directives(text: str) -> dict[str, str]:
    """redis.conf / rabbitmq.conf as {directive: rest of line}, comments skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if " = " in line:
            key, value = line.split(" = ", 1)
        else:
            key, _, value = line.partition(" ")
        assert key not in out, f"directive {key} appears twice"
        out[key.strip()] = value.strip()
    return out


# -- Redis -----------------------------------------------------------------


def test_redis_conf_defaults_are_volatile_and_loopback_only(tmp_path: Path) -> None:
    conf = conf_directives(render_redis_conf(RedisOptions(), port=23456, data_dir=tmp_path))
    assert conf == {
        "port": "23456",
        "bind": "127.0.0.1",
        "protected-mode": "no",
        "daemonize": "no",
        "logfile": '""',
        "dir": str(tmp_path),
        "appendonly": "no",
        "appendfsync": "everysec",
        "save": '""',
    }


@pytest.mark.parametrize("fsync", ["always", "everysec", "no"])
def test_redis_conf_appendonly(fsync: str, tmp_path: Path) -> None:
    options = RedisOptions(appendonly=True, appendfsync=fsync)  # type: ignore[arg-type]
    conf = conf_directives(render_redis_conf(options, port=1, data_dir=tmp_path))
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == fsync
    assert conf["save"] == '""'


def test_redis_conf_snapshots_and_maxmemory(tmp_path: Path) -> None:
    conf = conf_directives(
        render_redis_conf(RedisOptions(save_snapshots=True, maxmemory="256mb"), port=1, data_dir=tmp_path)
    )
    assert conf["save"] == "3600 1 300 100 60 10000"
    assert conf["maxmemory"] == "256mb"


def test_redis_docker_args() -> None:
    assert redis_docker_args(RedisOptions(appendonly=True, appendfsync="always")) == [
        "--port",
        "6379",
        "--protected-mode",
        "no",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ]
    args = redis_docker_args(RedisOptions(save_snapshots=True, maxmemory="1gb"))
    save_at = args.index("--save")
    assert args[save_at + 1 : save_at + 7] == ["3600", "1", "300", "100", "60", "10000"]
    assert args[-2:] == ["--maxmemory", "1gb"]


@pytest.mark.parametrize("kwargs", [{"appendfsync": "sometimes"}, {"maxmemory": "lots"}, {"maxmemory": "256 mb"}])
def test_redis_options_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RedisOptions(**kwargs)


# -- RabbitMQ --------------------------------------------------------------


def test_rabbitmq_conf_minimal() -> None:
    conf = conf_directives(render_rabbitmq_conf(RabbitOptions()))
    assert conf == {
        "default_user": "brokerstack",
        "default_pass": "brokerstack-test",
        "default_vhost": "/",
        "default_user_tags.administrator": "true",
    }


def test_rabbitmq_conf_management_cluster_and_extra() -> None:
    options = RabbitOptions(vhost="brokerstack", management=True, extra_config="consumer_timeout = 60000\n")
    text = render_rabbitmq_conf(options, management_port=24000, cluster_nodes=["a@localhost", "b@localhost"])
    conf = conf_directives(text)
    assert conf["default_vhost"] == "brokerstack"
    assert conf["management.tcp.port"] == "24000"
    assert conf["management.tcp.ip"] == "127.0.0.1"
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    assert conf["cluster_formation.classic_config.nodes.1"] == "a@localhost"
    assert conf["cluster_formation.classic_config.nodes.2"] == "b@localhost"
    # extra_config comes last so it can override anything above
    assert text.rstrip().endswith("consumer_timeout = 60000")


def test_enabled_plugins() -> None:
    assert render_enabled_plugins(False) == "[].\n"
    assert render_enabled_plugins(True) == "[rabbitmq_management].\n"


@pytest.mark.parametrize("kwargs", [{"password": "two\nlines"}, {"user": ""}, {"vhost": ""}, {"password": "has#hash"}])
def test_rabbit_options_reject_values_that_break_the_conf(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RabbitOptions(**kwargs)


def test_rabbit_process_env_is_built_from_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RABBITMQ_NODE_PORT", "5672")
    monkeypatch.setenv("RABBITMQ_CONFIG_FILE", "/etc/rabbitmq/rabbitmq")
    env = rabbit_process_env(
        node_name="bs1@localhost",
        node_port=21001,
        dist_port=21002,
        epmd_port=21003,
        node_dir=tmp_path,
        home=tmp_path / "home",
        path="/usr/bin:/bin",
    )
    assert env["RABBITMQ_NODE_PORT"] == "21001"
    assert env["RABBITMQ_DIST_PORT"] == "21002"
    assert env["ERL_EPMD_PORT"] == "21003"
    assert env["RABBITMQ_NODE_IP_ADDRESS"] == "127.0.0.1"
    # The full file name works on 3.10 and 4.x alike.
    assert env["RABBITMQ_CONFIG_FILE"] == str(tmp_path / "rabbitmq.conf")
    assert env["RABBITMQ_ENABLED_PLUGINS_FILE"] == str(tmp_path / "enabled_plugins")
    assert env["HOME"] == str(tmp_path / "home")
    assert not any(value.startswith("/etc/rabbitmq") for value in env.values())


# -- URLs ------------------------------------------------------------------


def test_redis_url() -> None:
    assert redis_url(21000) == "redis://127.0.0.1:21000/0"


@pytest.mark.parametrize(("vhost", "path"), [("/", "%2F"), ("brokerstack", "brokerstack"), ("/bs/x", "%2Fbs%2Fx")])
def test_amqp_url_quotes_vhost(vhost: str, path: str) -> None:
    url = amqp_url(21000, RabbitOptions(vhost=vhost))
    assert url == f"amqp://brokerstack:brokerstack-test@127.0.0.1:21000/{path}"
    assert parse_url(url)["virtual_host"] == vhost


def test_amqp_url_quotes_credentials() -> None:
    options = RabbitOptions(user="u@x", password="p:w/d%")
    parsed = parse_url(amqp_url(21000, options))
    assert (parsed["userid"], parsed["password"], parsed["port"]) == ("u@x", "p:w/d%", 21000)


def test_management_url() -> None:
    assert management_http_url(21001, RabbitOptions()) == "http://brokerstack:brokerstack-test@127.0.0.1:21001"


# -- driver choice -----------------------------------------------------------


def test_explicit_driver_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DRIVER_ENV, "docker")
    assert resolve_driver("process") == "process"


@pytest.mark.parametrize("value", ["process", "docker", " Process "])
def test_driver_from_env(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(DRIVER_ENV, value)
    assert resolve_driver() == value.strip().lower()


@pytest.mark.parametrize(("engine", "expected"), [(True, "docker"), (False, "process")])
def test_auto_driver_follows_docker_availability(monkeypatch: pytest.MonkeyPatch, engine: bool, expected: str) -> None:
    monkeypatch.delenv(DRIVER_ENV, raising=False)
    monkeypatch.setattr(factory, "docker_available", lambda: engine)
    assert resolve_driver() == expected
    assert resolve_driver("auto") == expected


def test_bad_env_driver_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DRIVER_ENV, "kubernetes")
    with pytest.raises(ValueError, match=DRIVER_ENV):
        resolve_driver()
    with pytest.raises(ValueError, match=DRIVER_ENV):
        make_node("redis")


def test_bad_driver_argument() -> None:
    with pytest.raises(ValueError, match="kubernetes"):
        resolve_driver("kubernetes")  # type: ignore[arg-type]


def test_make_node_rejects_options_of_the_other_kind() -> None:
    with pytest.raises(ValueError):
        make_node("redis", "process", rabbit=RabbitOptions())
    with pytest.raises(ValueError):
        make_node("rabbitmq", "process", redis=RedisOptions())
    with pytest.raises(ValueError):
        make_node("kafka", "process")


def test_unstarted_process_nodes_know_their_address(tmp_path: Path) -> None:
    redis_node = make_node("redis", "process", base_dir=tmp_path)
    rabbit_node = make_node("rabbitmq", "process", rabbit=RabbitOptions(vhost="bs", management=True), base_dir=tmp_path)
    try:
        assert redis_node.url == f"redis://127.0.0.1:{redis_node.port}/0"
        assert rabbit_node.url.endswith(f"@127.0.0.1:{rabbit_node.port}/bs")
        assert rabbit_node.management_url is not None and redis_node.management_url is None
        assert redis_node.name.startswith("brokerstack-test-redis-")
        assert not redis_node.is_running() and redis_node.pid() is None
        assert list(tmp_path.iterdir()) == []  # nothing is created before start()
    finally:
        redis_node.close()
        rabbit_node.close()
        rabbit_node.close()  # twice is fine


def test_node_names_are_checked() -> None:
    with pytest.raises(ValueError):
        make_node("redis", "process", name="bad name")


# -- ports ---------------------------------------------------------------


def test_free_ports_are_distinct_bindable_and_not_reserved() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert not set(ports) & RESERVED_PORTS
    assert all(port_is_free(port) for port in ports)


def test_free_ports_stay_in_the_range_the_environment_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORT_RANGE_ENV, "26000-26099")
    ports = [free_port() for _ in range(20)]
    assert all(26000 <= port <= 26099 for port in ports), ports


@pytest.mark.parametrize("value", ["26000", "26000-x", "26099-26000", "80-90"])
def test_a_malformed_port_range_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(PORT_RANGE_ENV, value)
    with pytest.raises(ValueError, match=PORT_RANGE_ENV):
        free_port()


# -- polling ---------------------------------------------------------------


def test_poll_times_out_with_last_error_and_extra_text() -> None:
    def never() -> None:
        raise ConnectionRefusedError("nope")

    started = time.monotonic()
    with pytest.raises(NodeTimeout, match=r"(?s)nope.*LOG TAIL"):
        poll(never, 0.2, 0.01, "test thing", on_timeout=lambda: "LOG TAIL")
    assert time.monotonic() - started < 2


# -- process trees and stale cleanup -----------------------------------------


def test_kill_tree_reaches_children_in_their_own_session() -> None:
    # Like erl_child_setup, the grandchild calls setsid(): only the
    # parent-pid walk finds it, not the process group.
    proc = subprocess.Popen(["sh", "-c", "setsid sleep 300 & sleep 300; true"], start_new_session=True)

    def whole_tree() -> list[int] | None:
        tree = proctree.process_tree(proc.pid)
        return tree if len(tree) == 3 else None

    try:
        tree = poll(whole_tree, 5, 0.02, "process tree")
        sessions = {os.getsid(pid) for pid in tree}
        assert len(sessions) == 2
        proctree.kill_tree(proc.pid, timeout=5)
        proc.wait(5)
        assert not any(proctree.pid_alive(pid) for pid in tree)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tree_usage_counts_this_process() -> None:
    usage = proctree.tree_usage(os.getpid())
    assert usage["rss_bytes"] > 1_000_000
    assert usage["cpu_seconds"] > 0


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_remove_stale_process_nodes(tmp_path: Path) -> None:
    stale, live = tmp_path / "stale-node", tmp_path / "live-node"
    stale.mkdir()
    live.mkdir()
    (stale / OWNER_FILE).write_text(f"{_dead_pid()} 12345\n")
    (live / OWNER_FILE).write_text(f"{os.getpid()} {proctree.start_ticks(os.getpid())}\n")
    leftover = subprocess.Popen(["sleep", "300"], cwd=stale, start_new_session=True)
    try:
        assert remove_stale_process_nodes(tmp_path) == ["stale-node"]
        assert leftover.wait(5) is not None
        assert not stale.exists() and live.exists()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_docker_owner_tokens() -> None:
    assert not _owner_gone(owner_token())
    host = owner_token().rsplit(":", 2)[0]
    assert _owner_gone(f"{host}:{_dead_pid()}:1")
    assert not _owner_gone(f"some-other-host:{_dead_pid()}:1")  # not ours to judge
    assert not _owner_gone(None)


def test_wrapper_scripts_are_not_taken_for_rabbitmq_server(tmp_path: Path) -> None:
    real = tmp_path / "rabbitmq-server"
    real.write_text("#!/bin/sh\n. rabbitmq-env\nexec erl\n")
    wrapper_target = tmp_path / "rabbitmq-script-wrapper"
    wrapper_target.write_text("#!/bin/sh\nsu rabbitmq -s /bin/sh -c ...\n")
    link = tmp_path / "sbin-rabbitmq-server"
    link.symlink_to(wrapper_target)
    assert not _is_wrapper(str(real))
    assert _is_wrapper(str(link))


def test_open_nodes_are_closed_at_exit_unless_closed_before(tmp_path: Path) -> None:
    from lab.harness.nodes import base

    node = make_node("redis", "process", base_dir=tmp_path)
    assert id(node) in base._unclosed
    node.close()
    assert id(node) not in base._unclosed
