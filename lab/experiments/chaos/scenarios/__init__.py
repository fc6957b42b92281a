"""The scenarios: what is started, what load is put on it, which fault is injected and when.

All share the runner's skeleton (lab.experiments.chaos.runner.ChaosRun): start the stack, put load on it,
inject ``kills`` faults at seeded points of the stream, drain, count. Times in fault entries are
seconds since the run started; the per-fault recovery numbers are filled in after the drain,
from the ledger.

* ``broker-kill``     kill -9 the broker K times under load, restart it on the same data.
* ``broker-restart``  the same with a graceful stop.
* ``worker-kill``     kill -9 a worker (or one pool process) while it runs long tasks; measures
                      how long until those tasks run again (redelivery delay).
* ``producer-outage`` the API under load while the broker is down for a while: a 202 must mean
                      stored; measures how fast the API accepts tasks again.
* ``publish-kill``    a plain kombu publisher sends a burst of persistent messages; the broker is
                      killed ~0.2 s after the last publish returned; what survives is counted.
* ``node-loss``       a 3-node RabbitMQ cluster with quorum queues; one node (the queue leader's)
                      is killed under load and restarted.

High availability (lab.experiments.chaos.scenarios.ha: a Redis Sentinel group or a 3-node
RabbitMQ cluster):

* ``failover``        kill -9 the Redis primary / the node leading the work queue, K times under
                      load; a replica is promoted / a leader elected; the node rejoins.
* ``partition``       cut that node off from its peers while clients still reach it, then heal.

Routine operations, where a consumer is idle or shuts down on purpose rather than crashing under
steady load (where deferred work such as an ack always gets out):

* ``rolling-deploy``  tasks of 1-3 s under load; each worker in turn gets SIGTERM (warm shutdown:
                      it finishes what it runs and exits by itself) and a replacement; K rounds.
* ``broker-restart-mid-task``  a graceful broker restart while tasks longer than the restart run.
* ``idle-kill``       one task at a time; kill -9 of the prefork worker 50-200 ms after its last task
                      succeeded, the queue empty.

``worker-kill`` also has a soak mode (``RunOptions.duration``): hard worker kills at seeded random
intervals under steady load until the time is up; Ctrl-C ends it early and still drains and counts.

Machine crashes (lab.experiments.chaos.scenarios.power_loss: the broker's data on LazyFS):

* ``power-loss``      K power cuts of the broker's machine (kill -9, then every byte not fsynced is
                      dropped), restart on what is left.
* ``power-loss-node`` / ``power-loss-all``  the 3-node quorum cluster: one machine, or all three.

Delayed tasks (lab.experiments.chaos.scenarios.delayed):

* ``delayed``         N tasks with countdowns over the next minutes; kill -9 the broker and a worker
                      while they wait; lost, duplicated and lateness (run time - due time).
"""

from __future__ import annotations

from lab.experiments.chaos.scenarios.base import Scenario
from lab.experiments.chaos.scenarios.broker_faults import BrokerKill, BrokerRestart, NodeLoss
from lab.experiments.chaos.scenarios.delayed import Delayed
from lab.experiments.chaos.scenarios.ha import Failover, Partition
from lab.experiments.chaos.scenarios.power_loss import PowerLoss, PowerLossAll, PowerLossNode
from lab.experiments.chaos.scenarios.producer_faults import ProducerOutage, PublishKill
from lab.experiments.chaos.scenarios.routine import BrokerRestartMidTask, IdleKill, RollingDeploy
from lab.experiments.chaos.scenarios.worker_kill import WorkerKill

#: Every scenario by its CLI name; a new scenario is a module here and one line in this tuple.
SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        BrokerKill(),
        BrokerRestart(),
        WorkerKill(),
        ProducerOutage(),
        PublishKill(),
        NodeLoss(),
        RollingDeploy(),
        BrokerRestartMidTask(),
        IdleKill(),
        Failover(),
        Partition(),
        PowerLoss(),
        PowerLossNode(),
        PowerLossAll(),
        Delayed(),
    )
}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; one of: {', '.join(SCENARIOS)}") from None


__all__ = ["SCENARIOS", "Scenario", "get_scenario"]
