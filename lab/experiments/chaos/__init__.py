"""Failure injection with Jepsen-style accounting.

    from lab.experiments.chaos import RunOptions, run_scenario, applicable_pairs

    record = run_scenario("broker-kill", "rabbitmq-confirms", RunOptions(tasks=300, kills=3, seed=1))
    record.counts.lost          # acknowledged but never executed
    record.counts.duplicated    # executed more than once
    record.path                 # results/chaos/broker-kill/rabbitmq-confirms/<stamp>-<run id>.json

A run starts everything it needs (broker nodes through lab.harness.nodes, a Redis for results and the
execution ledger, ``celery worker`` processes, the API), drives one scenario through it, drains,
counts (:func:`account`) and stops all of it, on failure and Ctrl-C too. ``brokerstack chaos`` is
the command line over the same calls.
"""

from lab.experiments.chaos.ledger import Attempt, Counts, Execution, ProducerLedger, account, load_history, save_history
from lab.experiments.chaos.record import (
    HEADLINE_COUNTS,
    RunRecord,
    load_records,
    record_mode,
    record_transport,
    results_dir,
    summary_row,
)
from lab.experiments.chaos.runner import ChaosRun, Progress, RunInterrupted, RunOptions, parse_duration, run_scenario
from lab.experiments.chaos.scenarios import SCENARIOS, Scenario, get_scenario
from lab.harness.setups import ROUTINE, SCENARIO_NAMES, SETUPS, TRANSPORTS, Setup, get_setup


def applicable_pairs(scenarios: list[str] | None = None, setups: list[str] | None = None) -> list[tuple[str, str]]:
    """Every (scenario, setup) pair that applies, in table order, optionally filtered."""
    return [
        (scenario, setup.name)
        for scenario in SCENARIO_NAMES
        if scenarios is None or scenario in scenarios
        for setup in SETUPS.values()
        if (setups is None or setup.name in setups) and setup.applies_to(scenario)
    ]


__all__ = [
    "HEADLINE_COUNTS",
    "ROUTINE",
    "SCENARIOS",
    "SCENARIO_NAMES",
    "SETUPS",
    "TRANSPORTS",
    "Attempt",
    "ChaosRun",
    "Counts",
    "Execution",
    "ProducerLedger",
    "Progress",
    "RunInterrupted",
    "RunOptions",
    "RunRecord",
    "Scenario",
    "Setup",
    "account",
    "applicable_pairs",
    "get_scenario",
    "get_setup",
    "load_history",
    "load_records",
    "parse_duration",
    "record_mode",
    "record_transport",
    "results_dir",
    "run_scenario",
    "save_history",
    "summary_row",
]
