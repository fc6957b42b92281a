"""docs/ops-comparison.md, rendered from the measured records (never edited by hand)."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lab.experiments.bench.records import (
    Backlog,
    BenchRecord,
    Consume,
    Latency,
    Rate,
    Ratios,
    ResourcesSection,
    SteadyLatency,
)
from lab.experiments.bench.stats import NO_DIFFERENCE, UNKNOWN, compare
from lab.experiments.bench.vendors import BENCH_VENDORS, bench_vendor
from lab.experiments.chaos.record import summary_row
from lab.harness.setups import DEFAULT_TRANSPORT, ROUTINE, SCENARIO_NAMES, SETUPS
from lab.report import charts
from lab.report.delayed import delayed_section
from lab.report.failover import failover_section
from lab.report.idempotency import idempotency_section
from lab.report.peers import peers_table
from lab.report.power_loss import (
    everysec_power_loss,
    power_loss_answer,
    power_loss_opinions,
    power_loss_section,
    power_loss_use,
)
from lab.report.sources import (
    PUBLISHED_MIN_CHAOS_TASKS,
    PUBLISHED_MIN_ROUTINE_FAULTS,
    PUBLISHED_MIN_SOAK_FAULTS,
    Sources,
)

POOLS = charts.POOLS
DASH = "—"
#: The client libraries the header names.
CLIENTS_SHOWN = ("celery", "kombu", "amqp", "redis", "redis-py", "python")

#: The public figure a soak is compared with: a soak harness for a Redis transport reported kombu's
#: stock transport losing this many acknowledged tasks per hard worker kill (about 300 kills, 3
#: million tasks).
KOMBU_SOAK_ANCHOR = (0.14, 0.20)

REGENERATE_COMMANDS = (
    (f"brokerstack chaos matrix --tasks {PUBLISHED_MIN_CHAOS_TASKS} --kills 3", "durability (results/chaos/)"),
    ("brokerstack bench", "speed and resources (results/bench/)"),
    ("brokerstack priority", "priority (results/priority/)"),
    (f"brokerstack report --min-chaos-tasks {PUBLISHED_MIN_CHAOS_TASKS}", "this file and its charts"),
)
#: How the routine operations and the soaks are measured (shown once the results hold such runs).
ROUTINE_COMMANDS = (
    (
        f"brokerstack chaos matrix --scenario rolling-deploy --kills {PUBLISHED_MIN_ROUTINE_FAULTS // 2} --tasks 240 "
        "--transport brokerstack --transport kombu",
        "a deploy: 10 rounds of 2 workers",
    ),
    (
        f"brokerstack chaos matrix --scenario broker-restart-mid-task --scenario idle-kill --kills "
        f"{PUBLISHED_MIN_ROUTINE_FAULTS} --tasks 200 --transport brokerstack --transport kombu",
        "the other routine operations",
    ),
    (
        "brokerstack chaos run --scenario worker-kill --setup redis-everysec --duration 16m --fault-interval 5 "
        "--visibility-timeout 5 "
        "[--transport kombu]",
        f"soaks (>= {PUBLISHED_MIN_SOAK_FAULTS} kills)",
    ),
)


def regenerate(commands: Iterable[tuple[str, str]]) -> str:
    """One command a line with its comment beside it, or above it when the command is long."""
    return "\n".join(
        f"{command:<50}# {what}" if len(command) < 50 else f"# {what}:\n{command}" for command, what in commands
    )


REGENERATE = regenerate(REGENERATE_COMMANDS)


# --- formatting ---------------------------------------------------------------------------------


def n(value: Any) -> str:
    return DASH if value is None else f"{value:,.0f}"


def rate(value: Any) -> str:
    return DASH if not value else f"{value:,.0f}/s"


def secs(value: Any) -> str:
    return DASH if value is None else (f"{value:.2f} s" if value < 10 else f"{value:.0f} s")


def ms(value: Any) -> str:
    return DASH if value is None else (f"{value:.1f}" if value < 100 else f"{value:,.0f}")


def median_rate(section: Rate | None) -> str:
    """A repeated rate as its median with the repetitions' range; a single run as the bare rate."""
    if section is None:
        return DASH
    return ranged_rate(section.per_s, section.per_s_min, section.per_s_max, section.repeats)


def ranged_rate(median: Any, low: Any, high: Any, repeats: int | None) -> str:
    if not median:
        return DASH
    if (repeats or 1) < 2:
        return rate(median)
    return f"{rate(median)} [{low or 0:,.0f}-{high or 0:,.0f}]"


def judged_ratio(value: Any, judged: dict[str, Any] | None) -> str:
    """A ratio of two repeated rates with what the ranges say of it (``stats.compare``): a ratio whose
    ranges overlap is no difference, whichever side of 1 it falls."""
    if value is None:
        return DASH
    verdict = (judged or {}).get("verdict")
    if verdict == NO_DIFFERENCE:
        return f"{ratio(value)}: no difference (the ranges overlap)"
    if verdict is None or verdict == UNKNOWN:
        return f"{ratio(value)} (one run: no range)"
    return ratio(value)


def _ahead(first: tuple[str, Rate | None], second: tuple[str, Rate | None]) -> str:
    """Which of two repeated rates is ahead, only where the difference is outside the noise (the
    rule every bench comparison uses: ``stats.compare``)."""
    (a_name, a), (b_name, b) = first, second
    if a is None or b is None or not a.per_s or not b.per_s:
        return "not measured on both"
    judged = compare((a_name, a.model_dump()), (b_name, b.model_dump()))
    if judged["faster"]:
        return f"{judged['faster']} ahead"
    if judged["verdict"] == NO_DIFFERENCE:
        return "no difference: the ranges overlap"
    return "one run on a side: no range to rank them by"


def repeats_note(record: BenchRecord) -> str:
    return "1 (one run, no range)" if record.repeats < 2 else str(record.repeats)


#: Bench runs that started within this long of the previous one's end were measured in one sitting
#: (one ``brokerstack bench`` of several setups, or runs back to back): longer than one setup's run
#: (up to ~40 min), so a sitting whose middle record was measured again later stays one.
SITTING_GAP_S = 45 * 60


def sittings(records: Iterable[BenchRecord]) -> list[list[BenchRecord]]:
    """The records grouped by sitting, in time order. A shared machine drifts between sittings (other
    load, another day), so rows of one sitting compare better than rows of different ones."""
    timed = sorted((r for r in records if r.started_at), key=lambda r: datetime.fromisoformat(str(r.started_at)))
    groups: list[list[BenchRecord]] = []
    end: datetime | None = None
    for record in timed:
        start = datetime.fromisoformat(str(record.started_at))
        if end is None or (start - end).total_seconds() > SITTING_GAP_S:
            groups.append([])
        groups[-1].append(record)
        end = start + timedelta(seconds=float(record.duration_s or 0))
    return groups


#: The two drain configurations of a bench, as the records and the tables name them.
CONFIGS = (("fire_and_forget", "fire-and-forget"), ("defaults", "defaults"))


def per(value: Any) -> str:
    return DASH if value is None else f"{value:.3f}"


def _is_default(row: dict[str, Any]) -> bool:
    return row["mode"] == "fixed" and row["transport"] in (None, DEFAULT_TRANSPORT)


def ratio(value: Any) -> str:
    """Two decimals; a ratio that would read 0.00 or 0.01 (e.g. against a batched ceiling) keeps
    two significant digits instead, so it never reads as zero."""
    if value is None:
        return DASH
    if 0 < abs(value) < 0.01:
        return f"{value:.{1 - math.floor(math.log10(abs(value)))}f}"
    return f"{value:.2f}"


def mib(value: Any) -> str:
    return DASH if value is None else f"{value / 2**20:,.0f} MiB"


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _consume_rate(record: BenchRecord, pool: str, *, defaults: bool = False) -> float | None:
    """A pool's drain rate: fire-and-forget with the throughput prefetch, or with brokerstack's
    defaults (prefetch 1, results stored)."""
    drain = record.drain(pool, defaults=defaults)
    return drain.per_s if drain else None


def _drain(record: BenchRecord, pool: str, _rate: float = 0.0, *, defaults: bool = False) -> Consume | None:
    """A pool's drain section (the repeated rate with its range); ``_rate`` lets a ``_fastest`` tuple
    be passed as is."""
    return record.drain(pool, defaults=defaults)


def _best_e2e(record: BenchRecord, *, defaults: bool = False) -> tuple[str | None, float | None]:
    rates: dict[str, float] = {}
    for pool in POOLS:
        value = _consume_rate(record, pool, defaults=defaults)
        if value:
            rates[pool] = value
    if not rates:
        return None, None
    best = max(rates, key=lambda pool: rates[pool])
    return best, rates[best]


# --- the report ---------------------------------------------------------------------------------


def _size_per_task(bytes_per_task: float | None) -> str:
    """A backlog's RSS growth per task, or that none was measurable (RSS stayed or fell)."""
    if bytes_per_task is not None and bytes_per_task <= 0:
        return "none measurable"
    return n(bytes_per_task)


class Report:
    def __init__(self, sources: Sources, output: Path, charts_dir: Path, *, draw_charts: bool = True) -> None:
        self.src = sources
        self.output = output
        self.charts_dir = charts_dir
        #: False renders the Markdown only (links to the charts as they would be drawn).
        self.draw_charts = draw_charts
        self.all_chaos_rows = [{**summary_row(r), "_record": r} for r in sources.chaos]
        #: The rows most of the report speaks of: fixed-size runs on brokerstack's own transport (or RabbitMQ).
        self.chaos_rows = [r for r in self.all_chaos_rows if _is_default(r)]

    def render(self) -> str:
        parts = [
            self.header(),
            self.answers(),
            self.opinions(),
            self.durability(),
            failover_section(self),
            power_loss_section(self),
            delayed_section(self),
            idempotency_section(self),
            self.soak(),
            self.speed(),
            self.priority(),
            self.dead_letters(),
            self.resources(),
            self.sources_list(),
        ]
        return "\n\n".join(part for part in parts if part) + "\n"

    # --- pieces -------------------------------------------------------------------------------

    def header(self) -> str:
        versions = sorted(
            {r["versions"].get("broker", "?") for r in self.src.chaos}
            | {r.broker_version or "?" for r in self.src.bench}
            | {r["broker_version"] for r in self.src.priority}
        )
        bench_clients = next((r.clients for r in self.src.bench), None)
        chaos_versions = next((r.get("versions") for r in self.src.chaos), None)
        clients: dict[str, Any] = bench_clients or chaos_versions or {}
        machine = next((r.machine.to_dict() for r in self.src.bench), None) or {}
        drivers = sorted(
            {r["driver"] for r in [*self.src.chaos, *self.src.priority]} | {r.driver or "?" for r in self.src.bench}
        )
        return "\n".join(
            [
                "# Redis or RabbitMQ for Celery: the ops comparison",
                "",
                "> Generated by `brokerstack report` from the measured runs in `results/`. Do not edit by",
                "> hand: every number is followed by the run it came from (`[C1]` chaos, `[B1]` benchmark,",
                "> `[P1]` priority; the list is at the end). To measure again on your machine:",
                "",
                "```sh",
                self._regenerate(),
                "```",
                "",
                f"Brokers measured: {', '.join(versions) or DASH} (driver: {', '.join(drivers) or DASH}). "
                f"Clients: {', '.join(f'{k} {v}' for k, v in sorted(clients.items()) if k in CLIENTS_SHOWN)}. "
                f"Machine: {machine.get('cpus', '?')} CPUs, "
                f"{machine.get('cpu_model') or machine.get('platform', '?')}.",
                "",
                "Same task code, same API, same settings object on both brokers; only `BROKER_PROFILE` and the",
                "setup's durability knobs differ. Tasks are no-ops unless said otherwise, so the numbers are",
                "the cost of the messaging itself.",
            ]
        )

    def _regenerate(self) -> str:
        extra = any(r["scenario"] in ROUTINE or r["mode"] == "soak" for r in self.all_chaos_rows)
        commands = list(REGENERATE_COMMANDS)
        return regenerate(commands[:1] + list(ROUTINE_COMMANDS) + commands[1:] if extra else commands)

    def answers(self) -> str:
        rows = [
            ("Setup / operations", "Redis simple, RabbitMQ complex", self._answer_ops()),
            ("Speed", "Redis fast, RabbitMQ relatively slow", self._answer_speed()),
            ("Message persistence", "Redis in memory, RabbitMQ on disk", self._answer_persistence()),
            ("Dead-letter queue", "Redis none, RabbitMQ native", self._answer_dlq()),
            ("Routing and priority", "Redis simple, RabbitMQ exchanges/bindings", self._answer_priority()),
            ("Use it for", "Redis: simple async work; RabbitMQ: when no message may be lost", self._answer_use()),
        ]
        return "## The walkthrough's table, answered with measurements\n\n" + table(
            ("", "common opinion", "measured here"), rows
        )

    def _chaos(self, scenario: str, setup: str) -> dict[str, Any] | None:
        return next((r for r in self.chaos_rows if r["scenario"] == scenario and r["setup"] == setup), None)

    def _bench(self, setup: str) -> BenchRecord | None:
        return next((r for r in self.src.bench if r.setup == setup), None)

    def _lost(self, scenario: str, setup: str) -> str:
        row = self._chaos(scenario, setup)
        if row is None:
            return f"{setup}: not measured"
        return f"{setup} lost {n(row['lost'])} of {n(row['acknowledged'])} {self.src.cite(row['_record'])}"

    def _answer_ops(self) -> str:
        """How long each broker takes to start again after ``kill -9``: every broker-kill run of
        every setup of that broker pooled, each run cited. Not the recovery column of the
        durability table, which counts from the broker being back to its clients being served."""
        restarts: dict[str, list[float]] = {}
        cites: dict[str, list[str]] = {}
        for row in self.chaos_rows:
            if row["scenario"] != "broker-kill":
                continue
            broker = SETUPS[row["setup"]].broker
            values = [f.get("restart_s") for f in row["_record"].get("faults") or [] if f.get("restart_s") is not None]
            if values:
                restarts.setdefault(broker, []).extend(values)
                cites.setdefault(broker, []).append(self.src.cite(row["_record"]))
        if not restarts:
            return "not measured"
        parts = [
            f"{broker} took {secs(statistics.median(v))} ({secs(min(v))}-{secs(max(v))}) to start again after "
            f"`kill -9` (median of {len(v)} restarts) {', '.join(cites[broker])}"
            for broker, v in sorted(restarts.items())
        ]
        return (
            "; ".join(parts) + " (how soon its clients were served again after that is the durability "
            "table's *recovery* column). Both run from one compose file with health checks; RabbitMQ needs a "
            "user, vhost and definitions, Redis a password and an AOF policy."
        )

    def _answer_speed(self) -> str:
        parts = []
        for broker in BENCH_VENDORS:
            best = self._fastest(broker)
            if best:
                record, pool, value = best
                parts.append(
                    f"{broker}: up to {rate(value)} end to end ({record.setup}, {pool}) {self.src.cite(record)}"
                )
        return "; ".join(parts) or "not measured"

    def _fastest(self, broker: str, *, defaults: bool = False) -> tuple[BenchRecord, str, float] | None:
        """The bench record, pool and rate of the fastest end-to-end run on ``broker`` (fire-and-forget,
        or with brokerstack's defaults)."""
        candidates: list[tuple[BenchRecord, str, float]] = []
        for r in self.src.bench:
            if r.broker == broker:
                pool, value = _best_e2e(r, defaults=defaults)
                if pool is not None and value:
                    candidates.append((r, pool, value))
        return max(candidates, key=lambda c: c[2]) if candidates else None

    def _answer_persistence(self) -> str:
        return (
            "; ".join(self._lost("broker-kill", s) for s in SETUPS if SETUPS[s].applies_to("broker-kill"))
            + (" (acknowledged tasks, `kill -9` of the broker under load). " + power_loss_answer(self)).rstrip()
        )

    def _answer_dlq(self) -> str:
        return (
            "both, in brokerstack: RabbitMQ natively (DLX, `x-death`), Redis through worker hooks into a store "
            "with the same record; same list/replay/purge (tested on both brokers, see Dead letters)"
        )

    def _answer_priority(self) -> str:
        parts = [
            f"{r['broker_version']} {r['queue_type']}: urgent tasks' mean rank {r['mean_rank_high']:.1f} "
            f"(ideal {r['ideal_mean_rank']:.1f}, FIFO {r['fifo_mean_rank']:.1f}) {self.src.cite(r)}"
            for r in self.src.priority
        ]
        return "; ".join(parts) or "not measured"

    def _answer_use(self) -> str:
        return (
            "pick by the durability you need and can pay for: see *Where the common opinion is wrong* and the "
            "decision guide in `docs/choosing-a-broker.md`. " + power_loss_use(self)
        ).strip()

    def opinions(self) -> str:
        bullets = []
        noconfirm = self._chaos("publish-kill", "rabbitmq-noconfirm") or self._chaos(
            "broker-kill", "rabbitmq-noconfirm"
        )
        confirms = self._chaos("publish-kill", "rabbitmq-confirms") or self._chaos("broker-kill", "rabbitmq-confirms")
        if noconfirm and confirms:
            bullets.append(
                f"*\"RabbitMQ doesn't lose messages.\"* Only with publisher confirms. Without them (Celery's default) "
                f"a broker kill in `{noconfirm['scenario']}` lost {n(noconfirm['lost'])} of "
                f"{n(noconfirm['acknowledged'])} "
                f"acknowledged tasks {self.src.cite(noconfirm['_record'])}; with confirms {n(confirms['lost'])} of "
                f"{n(confirms['acknowledged'])} {self.src.cite(confirms['_record'])}."
            )
        volatile = self._chaos("publish-kill", "redis-volatile") or self._chaos("broker-kill", "redis-volatile")
        always = self._chaos(volatile["scenario"], "redis-always") if volatile else None
        if always and volatile:
            bullets.append(
                f'*"Redis keeps messages in memory."* By default, and then a broker kill in `{volatile["scenario"]}` '
                f"lost {n(volatile['lost'])} of {n(volatile['acknowledged'])} {self.src.cite(volatile['_record'])}. "
                f"With an append-only file (`appendfsync always`) the same kill lost {n(always['lost'])} of "
                f"{n(always['acknowledged'])} {self.src.cite(always['_record'])}."
            )
        everysec = self._chaos("broker-kill", "redis-everysec")
        if everysec:
            bullets.append(
                f'*"`appendfsync everysec` loses up to a second of tasks when Redis dies."* Only when the machine '
                f"dies: Redis normally hands each write to the operating system before it replies, so `kill -9` of the "
                f"Redis "
                f"process three times under load lost {n(everysec['lost'])} of {n(everysec['acknowledged'])} "
                f"{self.src.cite(everysec['_record'])}. " + everysec_power_loss(self)
            )
        bullets.extend(power_loss_opinions(self))
        redis_best, rabbit_best = self._fastest("redis"), self._fastest("rabbitmq")
        redis_tracked, rabbit_tracked = self._fastest("redis", defaults=True), self._fastest("rabbitmq", defaults=True)
        if redis_best and rabbit_best and redis_tracked and rabbit_tracked:
            redis_drain, rabbit_drain = _drain(*redis_best), _drain(*rabbit_best)
            ahead = _ahead(("Redis", redis_drain), ("RabbitMQ", rabbit_drain))
            verdict = {
                "Redis ahead": "For fire-and-forget tasks, yes",
                "RabbitMQ ahead": "Not even for fire-and-forget tasks",
            }.get(ahead, "Not measurably, for fire-and-forget tasks")
            redis_defaults = _drain(*redis_tracked, defaults=True)
            rabbit_defaults = _drain(*rabbit_tracked, defaults=True)
            defaults_verdict = _ahead(("Redis", redis_defaults), ("RabbitMQ", rabbit_defaults))
            bullets.append(
                f'*"Redis is fast, RabbitMQ slow."* {verdict}: the best end-to-end rates were '
                f"{median_rate(redis_drain)} on Redis {self.src.cite(redis_best[0])} and {median_rate(rabbit_drain)} "
                f"on RabbitMQ {self.src.cite(rabbit_best[0])} ({ahead}). Once every task's state is stored "
                f"(brokerstack's defaults), the worker's own work per task bounds the rate on both brokers "
                f"(Celery's tracing and state handling, not the broker: see docs/task-cost.md): "
                f"{median_rate(redis_defaults)} on Redis {self.src.cite(redis_tracked[0])}, "
                f"{median_rate(rabbit_defaults)} on RabbitMQ {self.src.cite(rabbit_tracked[0])} "
                f"({defaults_verdict})."
                + (
                    ""
                    if self._same_sitting(redis_best[0], rabbit_best[0], redis_tracked[0], rabbit_tracked[0])
                    else " These rates come from different sittings (see *Throughput*), so the drift between "
                    "sittings is in the differences too."
                )
            )
        bullets.append(
            '*"Redis has no dead-letter queue."* The broker has none, but Celery can: brokerstack records the same '
            "outcomes (failed, rejected, expired, poison) on Redis and replays them, tested on both brokers."
        )
        worker = [w for w in (self._chaos("worker-kill", s) for s in SETUPS) if w is not None]
        if worker:
            delays = ", ".join(
                f"{w['setup']} {secs(w['redelivery_s'])} {self.src.cite(w['_record'])}"
                for w in worker
                if w["redelivery_s"] is not None
            )
            bullets.append(
                '*"Both brokers redeliver a crashed worker\'s task."* Yes, with `acks_late`, but not equally soon: the '
                f"longest wait from `kill -9` of a worker to its task running again was {delays}. Redis waits for "
                "the visibility timeout (set short for these runs; the default is two hours)."
            )
        return "## Where the common opinion is wrong\n\n" + "\n".join(f"- {b}" for b in bullets)

    def durability(self) -> str:
        if not self.chaos_rows:
            return "## Durability\n\nNo chaos records yet: run `brokerstack chaos matrix`."
        fixed = [r for r in self.all_chaos_rows if r["mode"] == "fixed"]
        # The transport column appears once kombu's transport was measured: then each Redis row of
        # brokerstack's transport has kombu's beside it.
        with_transport = any(r["transport"] not in (None, DEFAULT_TRANSPORT) for r in fixed)
        # Likewise duplicated effects (docs/idempotency.md), once a record counted them.
        with_effects = any(r.get("duplicated_effects") is not None for r in fixed)
        rows = []
        for setup in SETUPS:
            for scenario in SCENARIO_NAMES:
                for row in sorted(
                    (r for r in fixed if r["scenario"] == scenario and r["setup"] == setup),
                    key=lambda r: r["transport"] not in (None, DEFAULT_TRANSPORT),
                ):
                    held = {True: "yes", False: "**no**", None: "(none promised)"}[row["held"]]
                    transport = [row["transport"] or DASH] if with_transport else []
                    rows.append(
                        (
                            setup,
                            *transport,
                            scenario,
                            n(row["faults"]),
                            n(row["attempted"]),
                            n(row["acknowledged"]),
                            n(row["lost"]),
                            n(row["duplicated"]),
                            *([n(row.get("duplicated_effects"))] if with_effects else []),
                            n(row["recovered"]),
                            secs(row["redelivery_s"]),
                            secs(row["recovery_s"]),
                            held,
                            self.src.cite(row["_record"]),
                        )
                    )
        chart = self._chart(charts.durability_chart, self.chaos_rows, "durability.png")
        text = [
            "## Durability: what each setup kept when things were killed",
            "",
            "Counted as Jepsen's queue checker does, from a ledger outside the broker: *lost* = acknowledged to the "
            "producer but never executed; *duplicated* = executed more than once; "
            + (
                "*duplicated effects* = an effect seen more than once (tasks with `base=IdempotentTask` count "
                "committed effects, others every run: docs/idempotency.md); "
                if with_effects
                else ""
            )
            + "*recovered* = executed although "
            "the publish was not acknowledged. Redelivery delay is the longest wait from a worker's `kill -9` to its "
            "task running again; recovery is the longest wait from the broker being back to the producer (or API) "
            "being accepted again. *Promise held* is whether the setup's guarantee for that scenario held.",
            "",
            table(
                (
                    "setup",
                    *(["transport"] if with_transport else []),
                    "scenario",
                    "faults",
                    "attempted",
                    "acknowledged",
                    "lost",
                    "duplicated",
                    *(["duplicated effects"] if with_effects else []),
                    "recovered",
                    "redelivery delay",
                    "recovery",
                    "promise held",
                    "run",
                ),
                rows,
            ),
        ]
        if chart:
            text += ["", f"![acknowledged tasks lost per setup and scenario]({self._rel(chart)})"]
        return "\n".join(text)

    def soak(self) -> str:
        """Soak runs (faults at random intervals for a set time), per fault, both transports in one table."""
        soaks = [r for r in self.all_chaos_rows if r["mode"] == "soak"]
        if not soaks:
            return ""
        soaks.sort(key=lambda r: (r["scenario"], r["setup"], r["transport"] not in (None, DEFAULT_TRANSPORT)))
        rows = []
        for row in soaks:
            record = row["_record"]
            ran = ((record.get("details") or {}).get("soak") or {}).get("ran_s")
            rows.append(
                (
                    row["scenario"],
                    row["setup"],
                    row["transport"] or DASH,
                    secs(ran),
                    n(row["faults"]),
                    n(row["attempted"]),
                    n(row["acknowledged"]),
                    n(row["lost"]),
                    per(row["lost_per_fault"]),
                    n(row["duplicated"]),
                    per(row["duplicated_per_fault"]),
                    secs(row["redelivery_s"]),
                    self.src.cite(record),
                )
            )
        low, high = KOMBU_SOAK_ANCHOR
        return "\n".join(
            [
                "## Soak: faults at random intervals for a set time",
                "",
                "`brokerstack chaos run --scenario worker-kill --setup redis-everysec --duration 16m "
                "--fault-interval 5 --visibility-timeout 5 [--transport kombu]`: hard kills of a "
                "random worker at seeded random intervals under a steady load (mostly no-ops, one task in twenty a "
                "1 s sleep), "
                "then a drain and the same accounting, given per fault. For comparison, a public soak harness for a "
                f"Redis transport reported kombu's stock transport losing {low:.2f}-{high:.2f} acknowledged tasks per "
                "hard worker kill (about 300 kills, 3 million tasks).",
                "",
                table(
                    (
                        "scenario",
                        "setup",
                        "transport",
                        "ran",
                        "faults",
                        "attempted",
                        "acknowledged",
                        "lost",
                        "lost per fault",
                        "duplicated",
                        "duplicated per fault",
                        "redelivery delay",
                        "run",
                    ),
                    rows,
                ),
            ]
        )

    def speed(self) -> str:
        if not self.src.bench:
            return "## Speed\n\nNo benchmark records yet: run `brokerstack bench`."
        rows = []
        for r in self.src.bench:
            ratios = r.ratios or Ratios()
            pool, _ = _best_e2e(r)
            default_pool, default_best = _best_e2e(r, defaults=True)
            solo = r.pool("solo")
            rows.append(
                (
                    r.setup,
                    rate(ratios.raw_consume_per_s),
                    *(median_rate(r.drain(p)) for p in POOLS),
                    f"{ratio(ratios.e2e_vs_raw_consume_best)} ({pool or DASH})",
                    ratio(ratios.goal_e2e_vs_raw_consume),
                    f"{rate(default_best)} ({default_pool or DASH})",
                    ratio(ratios.e2e_defaults_vs_raw_consume.get(default_pool)) if default_pool else DASH,
                    f"{rate(ratios.raw_publish_per_s)} ({ratios.raw_publish_basis or '?'})",
                    rate(solo.enqueue.per_s if solo and solo.enqueue else None),
                    repeats_note(r),
                    self.src.cite(r),
                )
            )
        latency_rows = []
        for r in self.src.bench:
            for p in POOLS:
                result = r.pool(p)
                lat = (result.latency if result else None) or SteadyLatency()
                start, finish = lat.enqueue_to_start_ms or Latency(), lat.enqueue_to_finish_ms or Latency()
                if finish.n:
                    latency_rows.append(
                        (
                            r.setup,
                            p,
                            rate(lat.rate_achieved_per_s),
                            " / ".join(ms(v) for v in (start.p50, start.p95, start.p99)),
                            " / ".join(ms(v) for v in (finish.p50, finish.p95, finish.p99)),
                            self.src.cite(r),
                        )
                    )
        api_rows = []
        for r in self.src.bench:
            for run in r.api.runs if r.api else []:
                api_lat = run.latency_ms or Latency()
                confirm = {True: "on", False: "off", None: DASH}[run.confirm_publish]
                api_rows.append(
                    (
                        r.setup,
                        run.uvicorn_workers,
                        confirm,
                        run.concurrency,
                        ranged_rate(run.rps, run.rps_min, run.rps_max, run.repeats),
                        " / ".join(ms(v) for v in (api_lat.p50, api_lat.p95, api_lat.p99)),
                        n(run.errors),
                        self.src.cite(r),
                    )
                )
        confirm_rows = [
            (
                r.setup,
                judged_ratio(ratios.raw_confirm_cost, raw_judged.get("publish vs publish_confirm")),
                judged_ratio(ratios.raw_pipelined_confirm_cost, raw_judged.get("publish vs publish_confirm_pipelined")),
                judged_ratio(ratios.api_confirm_cost, ratios.api_confirm_verdict),
                self.src.cite(r),
            )
            for r in self.src.bench
            for ratios in [r.ratios or Ratios()]
            for raw_judged in [ratios.raw_verdicts or {}]
            if bench_vendor(r.broker).confirms
        ]
        throughput_png = self._chart(charts.throughput_chart, self.src.bench, "throughput.png")
        latency_png = self._chart(charts.latency_chart, self.src.bench, "latency.png")
        peers = peers_table(self.src)
        text = [
            "## Speed",
            "",
            *([peers, ""] if peers else []),
            "### Throughput against the raw client ceiling",
            "",
            self._ceiling_text() + " "
            "brokerstack's rate is no-op tasks drained from a backlog by one real `celery worker` per pool, "
            "fire-and-forget (`ignore_result`, as the raw client stores no results either) with prefetch "
            "multiplier 16. The *defaults* columns drain the same backlog with brokerstack's defaults "
            "(prefetch 1 so priority works, STARTED and SUCCESS written to the result backend): "
            "the price of tracking every task's state. The end-to-end rates are medians of the record's "
            "*drains* runs each, with their range in brackets; a record with one drain per pool has no range.",
            "",
            table(
                (
                    "setup",
                    "raw consume",
                    *(f"e2e {p}" for p in POOLS),
                    "best ratio",
                    "goal",
                    "defaults (best pool)",
                    "defaults ratio",
                    "raw publish (basis)",
                    "enqueue (1 thread)",
                    "drains",
                    "run",
                ),
                rows,
            ),
        ]
        text += ["", self._sittings_text()]
        if self.src.bench_unpublished:
            text += ["", "Not shown, for being below the published size:", ""]
            text += [f"- {line}" for line in self.src.bench_unpublished]
        if throughput_png:
            text += ["", f"![throughput per setup]({self._rel(throughput_png)})"]
        text += ["", self.transports()]
        text += [
            "",
            "### Latency under steady load (milliseconds, p50 / p95 / p99)",
            "",
            table(("setup", "pool", "rate", "enqueue → start", "enqueue → finish", "run"), latency_rows),
        ]
        if latency_png:
            text += ["", f"![latency per setup]({self._rel(latency_png)})"]
        text += [
            "",
            "### The API under load",
            "",
            "A separate load-generator process posts `POST /tasks/noop` with keep-alive connections; nothing "
            "consumes meanwhile. Requests/s is the median of the record's repetitions of each row, the rows "
            "alternated, with their range in brackets (none for a record with one run per row); latency in "
            "milliseconds (p50 / p95 / p99) of the run nearest the median.",
            "",
            table(
                ("setup", "uvicorn workers", "confirms", "clients", "requests/s", "latency", "errors", "run"), api_rows
            ),
        ]
        if confirm_rows:
            text += [
                "",
                "### What publisher confirms cost (unconfirmed rate ÷ confirmed rate)",
                "",
                "Each ratio is of the two medians; where the two rates' ranges overlap it is no difference, "
                "whichever side of 1 it falls. The API ratio is at the most clients, with one uvicorn worker.",
                "",
                table(
                    ("setup", "raw, a confirm per message", "raw, pipelined confirms", "through the API", "run"),
                    confirm_rows,
                ),
            ]
        return "\n".join(text)

    def _sittings_text(self) -> str:
        groups = sittings(self.src.bench)
        described = "; ".join(
            f"{', '.join(self.src.cite(r) for r in group)} from {str(group[0].started_at)[:16].replace('T', ' ')} UTC"
            for group in groups
        )
        alternated = (
            "Within a record the repetitions (and on Redis the two transports) are alternated, so its ranges and "
            "its transport comparison hold against the machine's drift; setups are measured one after another, "
            "not alternated, so a difference between two rows includes the drift between their runs"
        )
        if len(groups) < 2:
            return f"Every row was measured in one sitting: {described}. {alternated}."
        return (
            f"The rows were measured in {len(groups)} sittings (runs back to back): {described}. {alternated}, "
            "and more so between sittings (another day, other load on this shared machine): read a difference "
            "between rows as real only when it is well beyond their ranges."
        )

    def _same_sitting(self, *records: BenchRecord) -> bool:
        return any(all(any(r is g for g in group) for r in records) for group in sittings(self.src.bench))

    def _ceiling_text(self) -> str:
        """What the raw ceiling is, for the records the table holds: the best client each broker has
        (what the bench measures now), or the one-message client of records from before it."""
        one_message = [
            self.src.cite(r)
            for r in self.src.bench
            if r.ratios is not None and (r.ratios.raw_consume_basis or "consume") == "consume"
        ]
        text = (
            "The raw ceiling is the best client the broker has, on this machine at the same durability, as "
            "`brokerstack bench` measures it: redis-py LPUSH in pipelines and RPOP with a count; py-amqp "
            "persistent publishes with confirms pipelined in a window where the setup has confirms (none "
            "where it has not), and a consume with a large prefetch acked `multiple` at a time."
        )
        if one_message:
            text += (
                f" The records {', '.join(one_message)} are older: their ceiling is the one-message client "
                "(LPUSH/BRPOP; a confirm per message where the setup confirms; one ack per message), and their "
                "ratios are taken against it."
            )
        return text + (
            " The *goal* column is the issue's target, set when the ceiling was the one-message client: a ratio "
            "against the batched ceiling is lower by what batching gains and is not judged by it."
        )

    def transports(self) -> str:
        """brokerstack's Redis transport beside kombu's stock one, from the drains a bench alternated."""
        rows = []
        verdicts: dict[str, list[str]] = {}
        for r in self.src.bench:
            if not bench_vendor(r.broker).transports or r.end_to_end is None:
                continue
            e2e = r.end_to_end
            for pool, comparison in (e2e.comparison or {}).items():
                for key, label in CONFIGS:
                    pair = comparison.config(key) if comparison else None
                    if not pair:
                        continue
                    verdict = pair.verdict or "unknown"
                    verdicts.setdefault(verdict, []).append(f"{r.setup} {pool} {label} {self.src.cite(r)}")
                    rows.append(
                        (
                            r.setup,
                            pool,
                            label,
                            median_rate(pair.brokerstack),
                            median_rate(pair.kombu),
                            ratio(pair.ratio),
                            verdict,
                            n(e2e.repeats),
                            self.src.cite(r),
                        )
                    )
        text = ["### Redis transports side by side", ""]
        if not rows:
            one_run = [self.src.cite(r) for r in self.src.bench if bench_vendor(r.broker).transports]
            text.append(
                "No benchmark record compares brokerstack's Redis transport with kombu's yet"
                + (
                    f" (those here measured brokerstack's only, one run, no range: {', '.join(one_run)})"
                    if one_run
                    else ""
                )
                + ": `brokerstack bench --setup redis-everysec` runs both, alternated."
            )
            return "\n".join(text)
        text += [
            "The same backlog drained on brokerstack's transport and on kombu's stock one (`REDIS_TRANSPORT`), the "
            "two alternated in each repetition. Each rate is the median of *repeats* drains with their range in "
            "brackets; the ratio is brokerstack's median over kombu's. The verdict is the record's: a difference "
            "whose ranges overlap is *no difference*, whatever the ratio.",
            "",
            table(
                ("setup", "pool", "drain", "brokerstack", "kombu", "ratio", "verdict", "repeats", "run"),
                rows,
            ),
            "",
        ]
        order = ("no difference", "brokerstack faster", "kombu faster", "unknown")
        for verdict in sorted(verdicts, key=lambda v: order.index(v) if v in order else len(order)):
            cases = verdicts[verdict]
            label = "unknown (too few repeats to tell)" if verdict == "unknown" else verdict
            text.append(f"- {label}: {len(cases)} of {len(rows)} ({'; '.join(cases)})")
        return "\n".join(text)

    def priority(self) -> str:
        if not self.src.priority:
            return ""
        rows = [
            (
                r["broker_version"],
                r["queue_type"],
                r["driver"],
                f"{r['mean_rank_high']:.1f}",
                f"{r['ideal_mean_rank']:.1f}",
                f"{r['fifo_mean_rank']:.1f}",
                n(r["last_high_rank"]),
                self.src.cite(r),
            )
            for r in self.src.priority
        ]
        return "\n".join(
            [
                "## Priority",
                "",
                f"{self.src.priority[0]['backlog_low']:,} tasks at priority 0 are queued, then "
                f"{self.src.priority[0]['urgent_high']} at priority 9, then one worker starts (solo pool, prefetch 1). "
                "The mean rank of the urgent ones among all completions: the ideal is when they all finish first, "
                "FIFO is when priority does nothing. One user scale (0..9, 9 most urgent) on every broker; how each "
                "honours it is in `docs/configuration.md`.",
                "",
                table(
                    ("broker", "queue type", "driver", "mean rank of urgent", "ideal", "FIFO", "last urgent at", "run"),
                    rows,
                ),
            ]
        )

    def dead_letters(self) -> str:
        rows = [
            (
                "failed (retries used up, hard time limit)",
                "reject → DLX, `x-death: rejected`; the worker adds the exception; hard limit: the worker publishes "
                "to the DLX",
                "worker hook captures the record",
            ),
            ("rejected (`Reject(requeue=False)`)", "DLX, `x-death: rejected`", "worker hook"),
            (
                "expired",
                "per-message TTL → DLX, `x-death: expired`; found expired by a worker: worker publishes",
                "worker finds it expired on receipt and captures it",
            ),
            (
                "poison (unregistered task, undecodable, malformed)",
                "the consumer rejects it (Celery would ack an undecodable one) → DLX",
                "the consumer captures it before letting go",
            ),
            (
                "delivery-limit",
                "quorum queues: `x-delivery-limit` → DLX, `x-death: delivery_limit`",
                "not available: the Redis transport counts no deliveries, a task that kills its worker comes back "
                "after every visibility timeout",
            ),
        ]
        return "\n".join(
            [
                "## Dead letters",
                "",
                "One record shape on both brokers (task id, name, args/kwargs, original queue, reason, exception and "
                "traceback, retries, first and last death, replay link), one set of operations (`brokerstack dlq "
                "list|show|replay|purge`, `GET /dlq`, `POST /dlq/replay`, `DELETE /dlq`). Each row is exercised on "
                "both "
                "brokers by `tests/integration/test_dead_letters.py`.",
                "",
                table(("reason", "RabbitMQ", "Redis"), rows),
            ]
        )

    def resources(self) -> str:
        rows = []
        for r in self.src.bench:
            res = r.resources or ResourcesSection()
            backlog = res.backlog or Backlog()
            solo = res.per_10k_tasks.get("solo")
            cpu = solo.broker_cpu_s if solo else None
            rows.append(
                (
                    r.setup,
                    mib(res.broker_idle.rss_bytes if res.broker_idle else None),
                    DASH if cpu is None else f"{cpu:.1f} s",
                    n(backlog.tasks),
                    mib(backlog.rss_growth_bytes),
                    _size_per_task(backlog.bytes_per_task),
                    self.src.cite(r),
                )
            )
        if not rows:
            return ""
        return "\n".join(
            [
                "## Broker resources",
                "",
                table(
                    (
                        "setup",
                        "broker RSS idle",
                        "broker CPU per 10k tasks (solo)",
                        "backlog",
                        "RSS change",
                        "bytes per queued task",
                        "run",
                    ),
                    rows,
                ),
                "",
                "The whole broker process's RSS before and with the backlog, one reading each. RabbitMQ keeps a "
                "classic queue's messages on disk and its VM may return memory while the backlog fills, so a fall "
                "is no size per task: [sizing.md](sizing.md) measures the memory per queued task, per stored "
                "result and per dead letter with repetitions.",
            ]
        )

    def sources_list(self) -> str:
        lines = ["## Runs", ""]
        for source in self.src.cited.values():
            lines.append(f"- [{source.label}]: {source.summary} — `{self._rel(source.path)}`")
        lines.append("")
        lines += [f"[{s.label}]: {self._rel(s.path)}" for s in self.src.cited.values()]
        return "\n".join(lines)

    def _chart(self, draw: Any, data: list[Any], name: str) -> Path | None:
        path = self.charts_dir / name
        if not data:
            return None
        return draw(data, path) if self.draw_charts else path

    def _rel(self, path: Path) -> str:
        return os.path.relpath(Path(path).resolve(), self.output.parent.resolve())


def write_report(sources: Sources, output: Path, charts_dir: Path | None = None) -> Path:
    charts_dir = charts_dir or output.parent / "img"
    text = Report(sources, output, charts_dir).render()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    return output
