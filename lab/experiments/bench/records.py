"""The bench record, typed: one model per section, nested as the JSON is, and reading records of
every schema so far as the current one.

The JSON on disk is the contract (``results/bench/*.json`` are published): the models carry the
record's field names as they are, keep fields they do not declare (``extra="allow"``: a newer
writer's field survives an older reader), and :meth:`Model.to_dict` gives back exactly the keys
that were read or set, in the order they were read. So a record read and written again is the same
JSON, which ``tests/bench/test_records.py`` checks on every committed record.

``brokerstack.bench/2`` added the Redis transport comparison (``transport``, ``transports``,
``end_to_end.transports``, ``end_to_end.comparison``, ``ratios.brokerstack_vs_kombu``), repeated
drains (``end_to_end.repeats``; rates became medians with ``per_s_min``, ``per_s_max``,
``per_s_runs``, ``repeats``) and the gevent pool. Every /1 field kept its name and meaning, so a
reader of /1 reads /2 unchanged; :func:`upgrade_record` lifts a /1 record into the /2 shape so a
reader of /2 reads both. A /1 record measured one drain per pool (``repeats`` 1: a range of one
point, no verdict on noise) on Redis with brokerstack's own transport, which was the only one then.

The field guide of ``brokerstack.bench/2`` (rates are ``{"messages", "seconds", "per_s"}``, latencies
``{"n", "p50", "p95", "p99", "max", "mean"}`` in milliseconds, sizes in bytes, CPU in seconds; a
*repeated rate* is a rate whose ``per_s`` is the median of ``repeats`` runs, with ``per_s_min``,
``per_s_max``, ``per_s_runs`` (each run's, in the order run) and the other fields of the run nearest
the median). /2 kept every /1 field; :func:`upgrade_record` reads /1 records as /2::

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
                      ceiling: the broker's best client at the setup's durability, its vendor's ceiling:
                      Redis publish_pipelined / consume_batched, RabbitMQ publish_confirm_pipelined
                      (publish without confirms) / consume_batched; older records: publish[_confirm] /
                      consume), raw_verdicts {"<a> vs <b>": compare(): ratio, verdict ("no
                      difference" when the ranges overlap)},
                      e2e_vs_raw_consume {pool: ratio} (fire-and-forget drain),
                      e2e_defaults_vs_raw_consume {pool: ratio} (defaults drain), best_pool, e2e_vs_raw_consume_best,
                      enqueue_vs_raw_publish {pool: ratio}, goal_e2e_vs_raw_consume (the bench
                      vendor's, set against the one-message ceiling), meets_goal_e2e (against
                      raw_consume_basis, whichever it is), raw_confirm_cost and
                      raw_pipelined_confirm_cost (unconfirmed / confirmed raw publish rate),
                      api_confirm_cost (RabbitMQ: unconfirmed / confirmed API req/s at the
                      highest concurrency, fewest uvicorn workers), api_confirm_cost_by_concurrency,
                      api_confirm_cost_uvicorn_workers, goal_api_confirm_cost_max (2.0),
                      meets_goal_api_confirm_cost, brokerstack_vs_kombu (Redis with both
                      transports: {fire_and_forget, defaults: {pool: ratio}}, else null)
                      peers, peers_verdicts (with a peers section: goal name -> ratio, verdict)
    peers             (records since issue 17; absent before) brokerstack beside what users would
                      otherwise run, alternated in the same run (lab.experiments.bench.peers): tasks,
                      task, repeats, pool, concurrency (brokerstack's and stock Celery's worker),
                      counted (how executions are counted: the same for every system),
                      systems.<brokerstack_defaults|celery_defaults|dramatiq_defaults|
                      brokerstack_fire_and_forget>: {system, version, settings, transport,
                                 kombu_transport, consumer, result_backend (stock Celery), pool,
                                 concurrency, prefetch_multiplier, acks_late, track_started,
                                 results_stored, broker_class, queue, processes, threads,
                                 middleware (Dramatiq), enqueue, consume (repeated rates)},
                      goals.<defaults_vs_dramatiq|defaults_vs_celery|fire_and_forget_vs_dramatiq>:
                                 {ours, theirs, goal, ratio (medians), verdict ("met": our whole
                                 range above goal x theirs, "missed": below it, "no difference":
                                 the ranges overlap, "unknown"), met (true | false | null)},
                      drain_order [{system, repeat, per_s}], error
    errors            [{section, error, traceback}]
    path              where the record was written
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_serializer, model_validator

SCHEMA = "brokerstack.bench/2"
V1 = "brokerstack.bench/1"
#: The transport a /1 record's broker ran on where the broker has a choice of transports: brokerstack's
#: own, the only one there was then.
V1_TRANSPORT = "brokerstack"
#: Schemas :func:`upgrade_record` reads (a /1 record is lifted into the /2 shape).
READABLE_SCHEMAS = (V1, SCHEMA)

#: A measured number as the record has it: JSON keeps 5 and 5.0 apart, and so must a re-written record.
Num = int | float


class Model(BaseModel):
    """A part of the record: declared fields typed, undeclared ones kept, keys dumped as read."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, validate_assignment=False)

    #: The keys of the dict this part was read from, in its order (empty when built in code).
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        if isinstance(data, dict) and isinstance(model, Model):
            fields = type(model).model_fields
            model._order = tuple((fields[key].alias or key) if key in fields else key for key in data)
        return model

    @model_serializer(mode="wrap")
    def _in_order(self, handler: Any) -> Any:
        out = handler(self)
        if not self._order or not isinstance(out, dict):
            return out
        rank = {key: i for i, key in enumerate(self._order)}
        return dict(sorted(out.items(), key=lambda item: rank.get(item[0], len(rank))))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the keys read or set (None included when set), nothing invented."""
        out: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return out

    def measured(self, name: str) -> Any:
        """The field called ``name`` (declared or not), None when absent: for the sections whose
        member is chosen by a name the record itself holds (a raw measurement, a ceiling basis)."""
        value = getattr(self, name, None)
        if value is None and self.model_extra:
            value = self.model_extra.get(name)
        return value


# --- the measurements every section is made of ------------------------------------------------------


class Latency(Model):
    """Milliseconds (``lab.experiments.bench.stats.latency_ms``)."""

    n: int | None = None
    p50: Num | None = None
    p95: Num | None = None
    p99: Num | None = None
    max: Num | None = None
    mean: Num | None = None


class Rate(Model):
    """``{messages, seconds, per_s}``; repeated: ``per_s`` is the median of ``repeats`` runs, with
    their range and every run's rate in the order run (``stats.median_of_runs``)."""

    messages: int | None = None
    seconds: Num | None = None
    per_s: Num | None = None
    per_s_min: Num | None = None
    per_s_max: Num | None = None
    per_s_runs: list[Num | None] | None = None
    repeats: int | None = None


class Enqueue(Rate):
    """apply_async from one thread."""

    producer_threads: int | None = None
    call_latency_ms: Latency | None = None


class Consume(Rate):
    """A backlog drained by a worker, from the queue's first drop to empty."""

    startup_s: Num | None = None
    truncated: bool | None = None
    prefetch_multiplier: int | None = None
    results_stored: bool | None = None


class RawRate(Rate):
    """A raw client measurement (RabbitMQ notes its confirms, acks and prefetch)."""

    confirms: str | None = None
    acks: str | None = None
    prefetch: int | None = None
    nacked: int | None = None


# --- raw ------------------------------------------------------------------------------------------


class RawSection(Model):
    """The raw client ceiling (:mod:`lab.experiments.bench.raw`)."""

    client: str | None = None
    message_bytes: int | None = None
    header_bytes: int | None = None
    delivery_mode: str | None = None
    batch: int | None = None
    prefetch: int | None = None
    batch_prefetch: int | None = None
    confirm_window: int | None = None
    queue_arguments: dict[str, Any] | None = None
    publish: RawRate | None = None
    publish_pipelined: RawRate | None = None
    publish_confirm: RawRate | None = None
    publish_confirm_pipelined: RawRate | None = None
    consume: RawRate | None = None
    consume_reliable: RawRate | None = None
    consume_prefetch1: RawRate | None = None
    consume_batched: RawRate | None = None
    messages: int | None = None
    repeats: int | None = None
    error: str | None = None

    def rate(self, name: str) -> RawRate | None:
        """The measurement called ``name`` (``publish``, ``consume_batched``, ...), if measured."""
        value = self.measured(name)
        return value if isinstance(value, RawRate) else None


# --- end to end -----------------------------------------------------------------------------------


class Defaults(Model):
    """The same backlog with brokerstack's defaults (prefetch 1, results stored)."""

    prefetch_multiplier: int | None = None
    results_stored: bool | None = None
    enqueue: Enqueue | None = None
    consume: Consume | None = None


class SteadyLatency(Model):
    """Steady load with the ledger on (``e2e.steady_latency``)."""

    rate_target_per_s: Num | None = None
    rate_achieved_per_s: Num | None = None
    tasks: int | None = None
    warmup_tasks: int | None = None
    finished: int | None = None
    enqueue_call_ms: Latency | None = None
    enqueue_to_start_ms: Latency | None = None
    enqueue_to_finish_ms: Latency | None = None
    rate_capped: bool | None = None


class Per10k(Model):
    cpu_s_per_10k: Num | None = None
    rss_growth_bytes_per_10k: Num | None = None


class RssBytes(Model):
    before: int | None = None
    backlog: int | None = None
    drained: int | None = None


class DrainResources(Model):
    """What the broker, result backend and worker spent on the drain nearest the median."""

    broker_publish: Per10k | None = None
    broker_consume: Per10k | None = None
    broker_total_cpu_s_per_10k: Num | None = None
    broker_rss_bytes: RssBytes | None = None
    result_backend_cpu_s_per_10k: Num | None = None
    worker_cpu_s_per_10k: Num | None = None


class PoolResult(Model):
    """One pool: both drains, the latency run and the resources."""

    pool: str | None = None
    concurrency: int | None = None
    transport: str | None = None
    enqueue: Enqueue | None = None
    consume: Consume | None = None
    resources: DrainResources | None = None
    defaults: Defaults | None = None
    latency: SteadyLatency | None = None

    def drain(self, *, defaults: bool = False) -> Consume | None:
        """The fire-and-forget drain, or the one with brokerstack's defaults."""
        if defaults:
            return self.defaults.consume if self.defaults else None
        return self.consume


class TransportPools(Model):
    pools: dict[str, PoolResult] = Field(default_factory=dict)


class RateComparison(Model):
    """Two transports' repeated rates side by side (``stats.compare``)."""

    brokerstack: Rate | None = None
    kombu: Rate | None = None
    ratio: Num | None = None
    ratio_of: str | None = None
    outside_noise: bool | None = None
    faster: str | None = None
    verdict: str | None = None


class LatencyComparison(Model):
    brokerstack: Latency | None = None
    kombu: Latency | None = None
    ratio_p50: Num | None = None
    ratio_of: str | None = None
    verdict: str | None = None


class PoolComparison(Model):
    fire_and_forget: RateComparison | None = None
    defaults: RateComparison | None = None
    enqueue: RateComparison | None = None
    latency_to_finish_ms: LatencyComparison | None = None

    def config(self, name: str) -> RateComparison | None:
        """``fire_and_forget`` or ``defaults``."""
        value = self.measured(name)
        return value if isinstance(value, RateComparison) else None


class DrainOrder(Model):
    pool: str | None = None
    config: str | None = None
    repeat: int | None = None
    transport: str | None = None
    per_s: Num | None = None


class EndToEnd(Model):
    """brokerstack end to end (:mod:`lab.experiments.bench.e2e`)."""

    tasks: int | None = None
    task: str | None = None
    queues_consumed: list[str] | None = None
    prefetch_multiplier: int | None = None
    results_stored: bool | None = None
    defaults_prefetch_multiplier: int | None = None
    repeats: int | None = None
    transport: str | None = None
    pools: dict[str, PoolResult] = Field(default_factory=dict)
    drain_order: list[DrainOrder] | None = None
    transports: dict[str, TransportPools] | None = None
    comparison: dict[str, PoolComparison] | None = None
    error: str | None = None

    def pool(self, name: str) -> PoolResult | None:
        return self.pools.get(name)


# --- API, resources, ratios -----------------------------------------------------------------------


class ApiRun(Model):
    uvicorn_workers: int | None = None
    confirm_publish: bool | None = None
    concurrency: int | None = None
    duration_s: Num | None = None
    warmup_s: Num | None = None
    requests: int | None = None
    ok: int | None = None
    errors: int | None = None
    statuses: dict[str, int] | None = None
    #: The median of ``repeats`` runs, with their range (records before repetitions: one run).
    rps: Num | None = None
    repeats: int | None = None
    rps_min: Num | None = None
    rps_max: Num | None = None
    rps_runs: list[Num | None] | None = None
    #: The run nearest the median: its latency and costs.
    latency_ms: Latency | None = None
    client_cpu_s: Num | None = None
    api_cpu_ms_per_request: Num | None = None
    api_rss_bytes: int | None = None


class ApiSection(Model):
    """The API under load (:mod:`lab.experiments.bench.api`)."""

    endpoint: str | None = None
    load_generator: str | None = None
    consumers: int | None = None
    duration_s: Num | None = None
    warmup_s: Num | None = None
    runs: list[ApiRun] = Field(default_factory=list)
    error: str | None = None


class Usage(Model):
    rss_bytes: int | None = None
    cpu_seconds: Num | None = None


class Backlog(Model):
    tasks: int | None = None
    held: int | None = None
    fill_seconds: Num | None = None
    message_bytes: int | None = None
    rss_before_bytes: int | None = None
    rss_with_backlog_bytes: int | None = None
    rss_growth_bytes: int | None = None
    bytes_per_task: Num | None = None
    redis_used_memory_growth_bytes: int | None = None


class PoolCost(Model):
    broker_cpu_s: Num | None = None
    broker_rss_growth_bytes_queued: Num | None = None
    result_backend_cpu_s: Num | None = None
    worker_cpu_s: Num | None = None


class ResourcesSection(Model):
    """Broker memory and CPU (:mod:`lab.experiments.bench.resources`)."""

    broker_idle: Usage | None = None
    backlog: Backlog | None = None
    per_10k_tasks: dict[str, PoolCost] = Field(default_factory=dict)
    error: str | None = None


class Ratios(Model):
    """brokerstack against the raw client ceiling (``runner.compute_ratios``)."""

    raw_consume_per_s: Num | None = None
    raw_publish_per_s: Num | None = None
    raw_publish_basis: str | None = None
    raw_consume_basis: str | None = None
    e2e_vs_raw_consume: dict[str, Num | None] = Field(default_factory=dict)
    e2e_defaults_vs_raw_consume: dict[str, Num | None] = Field(default_factory=dict)
    best_pool: str | None = None
    e2e_vs_raw_consume_best: Num | None = None
    enqueue_vs_raw_publish: dict[str, Num | None] = Field(default_factory=dict)
    goal_e2e_vs_raw_consume: Num | None = None
    meets_goal_e2e: bool | None = None
    raw_confirm_cost: Num | None = None
    raw_pipelined_confirm_cost: Num | None = None
    api_confirm_cost: Num | None = None
    api_confirm_cost_by_concurrency: dict[str, Num | None] | None = None
    goal_api_confirm_cost_max: Num | None = None
    meets_goal_api_confirm_cost: bool | None = None
    brokerstack_vs_kombu: dict[str, dict[str, Num | None]] | None = None
    raw_verdicts: dict[str, dict[str, Any]] | None = None
    api_confirm_cost_uvicorn_workers: int | None = None
    #: ``compare`` of unconfirmed against confirmed API rates at the level api_confirm_cost is
    #: taken at: "unknown" for records with one run per level.
    api_confirm_verdict: dict[str, Any] | None = None
    #: The peers' goals (records with a peers section): goal name -> ours / theirs (medians).
    peers: dict[str, Num | None] | None = None
    #: goal name -> "met" | "missed" | "no difference" | "unknown" (peers.goals.<name>.verdict).
    peers_verdicts: dict[str, str | None] | None = None


class PeerSystem(Model):
    """One system of the peers section: what it is and ran with, and its repeated rates."""

    system: str | None = None
    version: str | None = None
    settings: str | None = None
    transport: str | None = None
    kombu_transport: str | None = None
    consumer: str | None = None
    result_backend: str | None = None
    pool: str | None = None
    concurrency: int | None = None
    prefetch_multiplier: int | None = None
    acks_late: bool | None = None
    track_started: bool | None = None
    results_stored: bool | None = None
    broker_class: str | None = None
    queue: str | None = None
    processes: int | None = None
    threads: int | None = None
    middleware: list[str] | None = None
    enqueue: Enqueue | None = None
    consume: Consume | None = None


class PeerGoal(Model):
    """One of the issue's goals: ``ours`` drain rate over ``theirs``, judged against the noise."""

    ours: str | None = None
    theirs: str | None = None
    goal: Num | None = None
    ratio: Num | None = None
    verdict: str | None = None
    met: bool | None = None


class PeerDrain(Model):
    system: str | None = None
    repeat: int | None = None
    per_s: Num | None = None


class PeersSection(Model):
    """brokerstack beside stock Celery and Dramatiq, same backlog, same run (``bench.peers``)."""

    tasks: int | None = None
    task: str | None = None
    repeats: int | None = None
    pool: str | None = None
    concurrency: int | None = None
    counted: str | None = None
    systems: dict[str, PeerSystem] = Field(default_factory=dict)
    goals: dict[str, PeerGoal] = Field(default_factory=dict)
    drain_order: list[PeerDrain] | None = None
    error: str | None = None

    def drain(self, system: str) -> Consume | None:
        entry = self.systems.get(system)
        return entry.consume if entry else None


# --- the header -----------------------------------------------------------------------------------


class Machine(Model):
    cpus: int | None = None
    platform: str | None = None
    machine: str | None = None
    memory_bytes: int | None = None
    cpu_model: str | None = None
    load_average_at_start: list[Num] | None = None


class CodeVersion(Model):
    commit: str | None = None
    modified: list[str] | None = None


class SectionError(Model):
    section: str
    error: str
    traceback: str | None = None


class BenchRecord(Model):
    """One bench run on one setup, as written to ``<results>/bench/<name>.json``."""

    written_at: str | None = None
    schema_: str = Field(default=SCHEMA, alias="schema")
    setup: str
    broker: str
    mode: str | None = None
    status: str | None = None
    #: Redis: the transport end_to_end.pools, api and resources ran on; RabbitMQ: None.
    transport: str | None = None
    #: Redis: every transport end_to_end measured; RabbitMQ: None.
    transports: list[str] | None = None
    run_id: str | None = None
    driver: str | None = None
    broker_version: str | None = None
    clients: dict[str, str] = Field(default_factory=dict)
    machine: Machine = Field(default_factory=Machine)
    code: CodeVersion | None = None
    #: Every BenchParams field, the setup, the driver, the settings and the captured message's size.
    parameters: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    duration_s: Num | None = None
    raw: RawSection | None = None
    end_to_end: EndToEnd | None = None
    api: ApiSection | None = None
    resources: ResourcesSection | None = None
    #: Absent in records from before the peers were measured.
    peers: PeersSection | None = None
    ratios: Ratios | None = None
    errors: list[SectionError] = Field(default_factory=list)
    aux_version: str | None = None
    path: str | None = None
    #: Set by :func:`upgrade_record` on an older record: the schema it was read as.
    read_as: str | None = None

    #: The file it was read from (not part of the JSON).
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def pools(self) -> dict[str, PoolResult]:
        """The end-to-end results per pool (empty when the section failed or is missing)."""
        return self.end_to_end.pools if self.end_to_end else {}

    def pool(self, name: str) -> PoolResult | None:
        return self.pools.get(name)

    def drain(self, pool: str, *, defaults: bool = False) -> Consume | None:
        result = self.pool(pool)
        return result.drain(defaults=defaults) if result else None

    @property
    def repeats(self) -> int:
        """Drains per pool and configuration (1 for a /1 record)."""
        return (self.end_to_end.repeats if self.end_to_end else None) or 1

    def ceiling(self) -> RawRate | None:
        """The raw consume the ratios are taken against (the broker's best client; ``consume`` in
        records from before the ceiling was the best client)."""
        basis = (self.ratios.raw_consume_basis if self.ratios else None) or "consume"
        return self.raw.rate(basis) if self.raw else None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> BenchRecord:
        """A record dict of the current schema (see :func:`upgrade_record` for older ones)."""
        record = cls.model_validate(data)
        record._source = Path(source) if source is not None else None
        return record


# --- reading --------------------------------------------------------------------------------------


def is_bench_record(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") in READABLE_SCHEMAS


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` in the current schema's shape (a copy; a current record is returned as is).
    ``schema`` keeps what the file says; ``read_as`` says what it was read as."""
    schema = record.get("schema")
    if schema == SCHEMA:
        return record
    if schema != V1:
        raise ValueError(
            f"not a bench record this version reads: schema {schema!r} (reads {', '.join(READABLE_SCHEMAS)})"
        )
    out = copy.deepcopy(record)
    out["read_as"] = SCHEMA
    redis = _has_transports(out.get("broker"))
    out.setdefault("transport", V1_TRANSPORT if redis else None)
    out.setdefault("transports", [V1_TRANSPORT] if redis else None)
    e2e = out.get("end_to_end")
    if isinstance(e2e, dict) and "error" not in e2e:
        e2e.setdefault("repeats", 1)
        e2e.setdefault("transport", out["transport"])
        for result in (e2e.get("pools") or {}).values():
            _one_run(result.get("enqueue"))
            _one_run(result.get("consume"))
            defaults = result.get("defaults") or {}
            _one_run(defaults.get("enqueue"))
            _one_run(defaults.get("consume"))
            if redis:
                result.setdefault("transport", V1_TRANSPORT)
        if redis:
            e2e.setdefault("transports", {"brokerstack": {"pools": e2e.get("pools") or {}}})
            e2e.setdefault("comparison", None)
    if isinstance(out.get("ratios"), dict):
        out["ratios"].setdefault("brokerstack_vs_kombu", None)
    return out


def _has_transports(broker: Any) -> bool:
    """Whether ``broker`` has a choice of client transports (its lab vendor's); an unknown one has none."""
    from lab.harness.vendors import VENDORS  # lazily: reading a record needs no broker nodes until here

    vendor = VENDORS.get(broker) if isinstance(broker, str) else None
    return bool(vendor and vendor.transports)


def _one_run(rate: dict[str, Any] | None) -> None:
    if not isinstance(rate, dict) or "repeats" in rate:
        return
    value = rate.get("per_s")
    rate.update(repeats=1, per_s_min=value, per_s_max=value, per_s_runs=[value])


def read_record(data: dict[str, Any], source: str | Path | None = None) -> BenchRecord:
    """A record dict of any readable schema, typed (ValueError if it is not a bench record)."""
    if not is_bench_record(data):
        found = data.get("schema") if isinstance(data, dict) else type(data)
        raise ValueError(f"{source or 'record'}: not a bench record ({found})")
    return BenchRecord.from_dict(upgrade_record(data), source)


def load_record(path: str | Path) -> BenchRecord:
    """A bench record file, upgraded and typed; ValueError if it is not one."""
    return read_record(json.loads(Path(path).read_text()), path)


__all__ = [
    "READABLE_SCHEMAS",
    "SCHEMA",
    "V1",
    "ApiRun",
    "ApiSection",
    "BenchRecord",
    "Consume",
    "EndToEnd",
    "Enqueue",
    "Latency",
    "PeerGoal",
    "PeerSystem",
    "PeersSection",
    "PoolComparison",
    "PoolResult",
    "Rate",
    "RateComparison",
    "Ratios",
    "RawRate",
    "RawSection",
    "ResourcesSection",
    "SectionError",
    "is_bench_record",
    "load_record",
    "read_record",
    "upgrade_record",
]
