"""Benchmarks: brokerstack against the raw client ceiling, on the same broker setups as the chaos runs.

    from lab.experiments.bench import BenchParams, run_bench

    record = run_bench("rabbitmq-confirms", BenchParams.quick())
    record["ratios"]["e2e_vs_raw_consume"]      # {"solo": 0.61, "threads": ..., "prefork": ..., "gevent": ...}
    record["path"]                              # results/bench/rabbitmq-confirms-docker-quick.json

On Redis every end-to-end drain runs on brokerstack's transport and on kombu's stock one
(``REDIS_TRANSPORT``) in the same run, the two alternated in each of ``repeats`` repetitions so that
drift weighs on both alike; ``end_to_end.comparison`` puts them side by side with the ratio of the
medians and whether the difference is outside the noise (the repetitions' ranges do not overlap).

``brokerstack bench`` is the command line over the same calls. A run starts the setup's broker node
and an auxiliary Redis (Celery results and the execution ledger) through :class:`lab.harness.stacks.Stack`,
measures, stops everything (on failure and Ctrl-C too) and writes one JSON record per setup:
``<results dir>/bench/<setup>-<driver>.json`` (full runs) or ``<setup>-<driver>-quick.json``
(``--quick``), with ``-<transport>`` added when a Redis run measured one transport only; a run
that did not complete goes to ``bench/failed/`` so it never replaces a good record. The results
dir is ``--results-dir``, else ``$BROKERSTACK_RESULTS_DIR``, else ``results/``.

Record schema ``brokerstack.bench/2`` (rates are ``{"messages", "seconds", "per_s"}``, latencies
``{"n", "p50", "p95", "p99", "max", "mean"}`` in milliseconds, sizes in bytes, CPU in seconds; a
*repeated rate* is a rate whose ``per_s`` is the median of ``repeats`` runs, with ``per_s_min``,
``per_s_max``, ``per_s_runs`` (each run's, in the order run) and the other fields of the run nearest
the median). /2 kept every /1 field; :mod:`lab.experiments.bench.records` reads /1 records as /2::

    schema            "brokerstack.bench/2"
    written_at        UTC time the file was written (lab.harness.results.write_record)
    setup             preset name (lab.harness.setups.SETUPS): redis-volatile ... rabbitmq-quorum
    broker            "redis" | "rabbitmq"
    mode              "full" | "quick"
    transport         Redis: the transport (REDIS_TRANSPORT) end_to_end.pools, api and resources
                      were measured on, "brokerstack" unless --transport kombu; RabbitMQ: null
    transports        Redis: every transport end_to_end measured, e.g. ["brokerstack", "kombu"];
                      RabbitMQ: null
    status            "completed" | "failed" (a section has "error"; see errors[])
    run_id, driver    random id; "docker" | "process"
    broker_version    e.g. "redis 8.0.2", "rabbitmq 4.0.9" (as the running broker reports it)
    aux_version       the auxiliary Redis (results backend, ledger)
    clients           lab.harness.results.client_versions(): python, celery, kombu, amqp, redis
    machine           lab.harness.results.machine() + memory_bytes, cpu_model, load_average_at_start
    code              {commit: git HEAD, modified: tracked files under worker/ services/ lab/ that
                      differ from it} (None outside a git checkout)
    parameters        every BenchParams field (sizes: raw_messages, tasks, latency_rate, ...,
                      backlog_tasks, pools, concurrency, gevent_concurrency, transports (null on
                      RabbitMQ), repeats), setup (preset description), driver, worker_loglevel,
                      settings (BROKER_PROFILE, REDIS_TRANSPORT, RABBITMQ_QUEUE_TYPE, RABBITMQ_CONFIRM_PUBLISH,
                      WORKER_PREFETCH_MULTIPLIER, ...), message_bytes (the captured noop message)
    started_at        UTC start; duration_s: wall time of the whole run
    raw               the raw client ceiling (lab.experiments.bench.raw): client, message_bytes (Redis: the
                      stored envelope; RabbitMQ: the body, plus header_bytes), messages and
                      redis:    publish (LPUSH loop), publish_pipelined, consume (BRPOP loop),
                                consume_reliable (BRPOP + unacked bookkeeping + ack, 3 round trips),
                                consume_batched (RPOP count), batch
                      rabbitmq: publish (persistent, no confirms), publish_confirm (a confirm per
                                message), publish_confirm_pipelined (window), consume (prefetch,
                                one ack per message), consume_prefetch1, consume_batched (prefetch
                                batch_prefetch, multiple acks), queue_arguments, prefetch
                      repeats: every rate is a median of ``repeats`` alternated runs with
                      per_s_min, per_s_max, per_s_runs (lab.experiments.bench.stats.median_of_runs)
    end_to_end        tasks (backlog per pool), task, queues_consumed, prefetch_multiplier (of the
                      throughput drain), results_stored (false: fire-and-forget),
                      defaults_prefetch_multiplier, repeats, transport (as above), and
                      pools.<solo|threads|prefork|gevent> (on ``transport``):
                        pool, concurrency (solo 1, gevent gevent_concurrency), transport (Redis)
                        enqueue    repeated rate of apply_async(ignore_result=True) from one thread
                                   + producer_threads, call_latency_ms (per apply_async call)
                        consume    repeated rate from the queue's first drop to empty (at most
                                   drain_max_seconds: then truncated is true) + startup_s,
                                   prefetch_multiplier, results_stored
                        defaults   the same backlog with brokerstack's defaults: prefetch_multiplier
                                   (1), results_stored (true), enqueue, consume (repeated rates)
                        latency    steady load, defaults, ledger on, at latency_rate or half the
                                   defaults drain rate if lower (of the slower transport: both
                                   get the same load): rate_target_per_s, rate_achieved_per_s,
                                   rate_capped, tasks, warmup_tasks, finished, enqueue_call_ms,
                                   enqueue_to_start_ms, enqueue_to_finish_ms
                        resources  broker_publish / broker_consume {cpu_s_per_10k,
                                   rss_growth_bytes_per_10k}, broker_total_cpu_s_per_10k,
                                   broker_rss_bytes {before, backlog, drained},
                                   result_backend_cpu_s_per_10k, worker_cpu_s_per_10k (of the
                                   fire-and-forget drain nearest the median)
                      drain_order [{pool, config ("fire_and_forget" | "defaults"), repeat,
                                   transport (null on RabbitMQ), per_s}]: every drain as it ran
                      Redis only:
                      transports.<brokerstack|kombu>.pools   the same per-pool results per transport
                      comparison.<pool> (null unless both transports ran):
                        fire_and_forget, defaults, enqueue   {brokerstack, kombu: {per_s, per_s_min,
                                   per_s_max, per_s_runs, repeats}, ratio (brokerstack / kombu
                                   medians), ratio_of, outside_noise (ranges do not overlap; null
                                   with fewer than 2 repeats), faster ("brokerstack" | "kombu" |
                                   null), verdict ("brokerstack faster" | "kombu faster" |
                                   "no difference" | "unknown")}
                        latency_to_finish_ms  {brokerstack, kombu: {p50, p99}, ratio_p50, ratio_of,
                                   verdict "unknown" (one steady-load run each: no noise measure)}
    api               endpoint, load_generator, consumers (0: nobody consumes meanwhile),
                      duration_s, warmup_s, runs[]: {uvicorn_workers, confirm_publish (bool on
                      RabbitMQ, null on Redis), concurrency, requests, ok, errors, statuses, rps,
                      latency_ms, client_cpu_s, api_cpu_ms_per_request, api_rss_bytes}
    resources         broker_idle {rss_bytes, cpu_seconds},
                      backlog {tasks, held, fill_seconds, message_bytes, rss_before_bytes,
                               rss_with_backlog_bytes, rss_growth_bytes, bytes_per_task
                               [, redis_used_memory_growth_bytes]},
                      per_10k_tasks.<pool> {broker_cpu_s, broker_rss_growth_bytes_queued,
                               result_backend_cpu_s, worker_cpu_s}
    ratios            raw_consume_per_s, raw_publish_per_s, raw_publish_basis, raw_consume_basis (the
                      ceiling: the broker's best client at the setup's durability, raw.CEILING:
                      Redis publish_pipelined / consume_batched, RabbitMQ publish_confirm_pipelined
                      (publish without confirms) / consume_batched; older records: publish[_confirm] /
                      consume), raw_verdicts {"<a> vs <b>": compare(): ratio, verdict ("no
                      difference" when the ranges overlap)},
                      e2e_vs_raw_consume {pool: ratio} (fire-and-forget drain),
                      e2e_defaults_vs_raw_consume {pool: ratio} (defaults drain), best_pool, e2e_vs_raw_consume_best,
                      enqueue_vs_raw_publish {pool: ratio}, goal_e2e_vs_raw_consume (0.5 Redis,
                      0.6 RabbitMQ), meets_goal_e2e, raw_confirm_cost and
                      raw_pipelined_confirm_cost (unconfirmed / confirmed raw publish rate),
                      api_confirm_cost (RabbitMQ: unconfirmed / confirmed API req/s at the
                      highest concurrency, fewest uvicorn workers), api_confirm_cost_by_concurrency,
                      api_confirm_cost_uvicorn_workers, goal_api_confirm_cost_max (2.0),
                      meets_goal_api_confirm_cost, brokerstack_vs_kombu (Redis with both
                      transports: {fire_and_forget, defaults: {pool: ratio}}, else null)
    errors            [{section, error, traceback}]
    path              where the record was written

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
