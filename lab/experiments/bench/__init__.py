"""Benchmarks: brokerstack against the raw client ceiling, on the same broker setups as the chaos runs.

    from lab.experiments.bench import BenchParams, run_bench

    record = run_bench("rabbitmq-confirms", BenchParams.quick())
    record["ratios"]["e2e_vs_raw_consume"]      # {"solo": 0.61, "threads": ..., "prefork": ..., "gevent": ...}
    record["path"]                              # results/bench/rabbitmq-confirms-docker-quick.json

On Redis every end-to-end drain runs on brokerstack's transport and on kombu's stock one
(``REDIS_TRANSPORT``) in the same run, the two alternated in each of ``repeats`` repetitions so that
drift weighs on both alike; ``end_to_end.comparison`` puts them side by side with the ratio of the
medians and whether the difference is outside the noise (the repetitions' ranges do not overlap).

The peers section (:mod:`lab.experiments.bench.peers`, on unless ``--no-peers``) drains the same
backlog with brokerstack's defaults, stock Celery with the same settings, Dramatiq with its own
defaults and brokerstack fire-and-forget, alternated in the same run, and judges issue 17's goals
against the noise (``peers.goals``, ``ratios.peers``); ``--section peers`` runs it alone, into
``<setup>-<driver>-peers.json``.

``brokerstack bench`` is the command line over the same calls. A run starts the setup's broker node
and an auxiliary Redis (Celery results and the execution ledger) through :class:`lab.harness.stacks.Stack`,
measures, stops everything (on failure and Ctrl-C too) and writes one JSON record per setup:
``<results dir>/bench/<setup>-<driver>.json`` (full runs) or ``<setup>-<driver>-quick.json``
(``--quick``), with ``-<transport>`` added when a Redis run measured one transport only; a run
that did not complete goes to ``bench/failed/`` so it never replaces a good record. The results
dir is ``--results-dir``, else ``$BROKERSTACK_RESULTS_DIR``, else ``results/``.

The record is typed: :class:`lab.experiments.bench.records.BenchRecord` and one model per section,
nested as the JSON is (``record.end_to_end.pools["solo"].consume.per_s``); that module's docstring
is the field guide, and it reads records of older schemas as the current one.

What each section does, exactly, is in the docstrings of :mod:`lab.experiments.bench.raw`,
:mod:`lab.experiments.bench.e2e`, :mod:`lab.experiments.bench.api` and :mod:`lab.experiments.bench.resources`.
"""

from lab.experiments.bench.runner import (
    CATEGORY,
    CONFIGS,
    GOALS,
    POOLS,
    READABLE_SCHEMAS,
    REDIS_TRANSPORTS,
    SCHEMA,
    SECTIONS,
    BenchInterrupted,
    BenchParams,
    BenchRun,
    Progress,
    ProgressCallback,
    available_pools,
    compute_ratios,
    record_name,
    run_bench,
    transport_comparison,
)

__all__ = [
    "CATEGORY",
    "CONFIGS",
    "GOALS",
    "POOLS",
    "READABLE_SCHEMAS",
    "REDIS_TRANSPORTS",
    "SCHEMA",
    "SECTIONS",
    "BenchInterrupted",
    "BenchParams",
    "BenchRun",
    "Progress",
    "ProgressCallback",
    "available_pools",
    "compute_ratios",
    "record_name",
    "run_bench",
    "transport_comparison",
]
