"""Power loss (issue 12): the broker's data on LazyFS, and each fault a machine crash that drops
every byte not fsynced. The setups that promise ``lost == 0`` keep it; the others report what
they lost (a count in the record, no broken promise), whatever it is at this size.

Small runs (a few hundred tasks, 1-2 cuts) so CI stays within its budget; the CLI runs the
published ones (``brokerstack chaos run --scenario power-loss --setup ... --tasks 5000 --kills 3``).
"""

from __future__ import annotations

import os

import pytest

from lab.cli.chaos import _exit_code
from lab.harness.nodes.lazyfs import LazyFSMount, unavailable_reason
from tests.chaos.test_guarantees import chaos, counts_of, faults

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(unavailable_reason() is not None, reason=f"power loss: {unavailable_reason()}"),
]


def test_a_power_cut_drops_what_was_not_fsynced_and_keeps_what_was():
    with LazyFSMount() as disk:
        synced, unsynced = disk.path / "synced", disk.path / "unsynced"
        with open(synced, "wb") as fh:
            fh.write(b"kept")
            fh.flush()
            os.fsync(fh.fileno())
        with open(unsynced, "wb") as fh:
            fh.write(b"gone")
        assert unsynced.read_bytes() == b"gone"  # the page cache serves it until the cut
        disk.clear_cache()
        assert synced.read_bytes() == b"kept"
        assert unsynced.read_bytes() == b""
        mount_dir = disk.dir
    assert mount_dir is not None and not mount_dir.exists()


def assert_power_cuts(record, kills: int) -> None:
    assert faults(record) == kills
    assert record.details["fault_model"].startswith("power loss of the broker's machine")
    assert all(f["action"] == "power-loss" and f["clear_cache_s"] >= 0 for f in record.faults)
    # The broker booted again on what survived, and the stack worked again after every cut.
    assert all(f["producer_recovery_s"] is not None and f["consumer_recovery_s"] is not None for f in record.faults)


@pytest.mark.parametrize(("setup", "kills"), [("redis-always", 2), ("rabbitmq-confirms", 1)])
def test_setups_that_fsync_before_acknowledging_lose_nothing_in_a_power_cut(results, setup, kills):
    record = chaos("power-loss", setup, results, tasks=200, kills=kills)
    assert_power_cuts(record, kills)
    assert record.guarantee == "lost == 0" and record.guarantee_held is True
    assert counts_of(record).lost == 0


def test_redis_everysec_reports_what_a_power_cut_loses_without_calling_it_a_broken_promise(results):
    record = chaos("power-loss", "redis-everysec", results, tasks=200, kills=1)
    assert_power_cuts(record, 1)
    counts = counts_of(record)
    # Reported, not hidden: the count is in the record (chaos() checked it adds up) ...
    assert counts.lost == counts.acknowledged - counts.executed_acknowledged
    # ... and nothing was promised, so no loss can fail the run.
    assert record.guarantee is None and record.guarantee_held is None
    assert _exit_code([record.to_dict()]) == 0
    assert "aof" in record.details  # the AOF, as evidence of what Redis kept


@pytest.mark.slow  # ~4 min on docker: a 3-node cluster boots, and boots again after the cut
def test_quorum_queues_lose_nothing_when_every_node_of_the_cluster_loses_power_at_once(results):
    # 800 tasks at the automatic rate (10/s): the cut lands mid-load, after the first checkpoint.
    record = chaos("power-loss-all", "rabbitmq-quorum", results, tasks=800, kills=1)
    # Not assert_power_cuts: a node rebuilt from its peers (not_booted) can keep the cluster down
    # past the end of so short a load; chaos() checked that the queues drained afterwards.
    (cut,) = record.faults
    assert cut["action"] == "power-loss" and cut["clear_cache_s"] >= 0
    assert cut["nodes"] == 3 and record.details["victims"] == "all"
    # The writeback model is in the record: each reboot is followed by a checkpoint, and the cut
    # says how long after the last one it came.
    assert "checkpointed" in record.details["fault_model"] and cut["since_checkpoint_s"] > 0
    assert cut["checkpoint_s"] >= 0
    assert all(node["replicas_grown"] >= 1 for node in cut.get("not_booted", []))
    assert record.guarantee == "lost == 0" and record.guarantee_held is True
    assert counts_of(record).lost == 0


@pytest.mark.slow  # ~2 min on docker: a 3-node cluster, one member rebuilt
def test_a_cluster_member_whose_data_is_gone_is_forgotten_rebuilt_and_given_its_replicas_back(tmp_path):
    """What the power-loss scenarios do with a node that will not boot on what survived: its peers
    forget it, it starts afresh on an emptied directory and its quorum queue replicas are grown
    back; the messages its peers hold are all still there."""
    from amqp import Message
    from kombu import Connection

    from lab.experiments.chaos.scenarios.power_loss import wipe_data
    from lab.harness.nodes.cluster import RabbitCluster

    queue = "power-loss-rebuild"
    cluster = RabbitCluster(3)
    victim = cluster.nodes[-1]
    victim.data_mount = tmp_path / "victim-data"  # a directory the test can empty
    victim.data_mount.mkdir(mode=0o777)
    victim.data_mount.chmod(0o777)
    with cluster:
        with Connection(cluster.nodes[0].url, transport_options={"confirm_publish": True}) as conn:
            channel = conn.channel()
            channel.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
            for i in range(50):
                channel.basic_publish(Message(str(i), delivery_mode=2), routing_key=queue)
        victim.kill()
        assert cluster.forget(victim) in cluster.node_names[:2]
        wipe_data(victim)  # its data is gone
        victim.start()
        victim.wait_ready()
        cluster.wait_formed()
        assert cluster.grow_quorum_queues(victim) == 1
        with Connection(victim.url) as conn:
            _, messages, _ = conn.channel().queue_declare(queue, passive=True)
        assert messages == 50
