"""``brokerstack bench``: brokerstack against the raw client ceiling, on each broker setup.

    brokerstack bench                                  # every setup, full sizes (long: --setup picks some)
    brokerstack bench --quick                          # every setup, small sizes: checks records, not speeds
    brokerstack bench --setup redis-always --setup rabbitmq-confirms --tasks 50000
    brokerstack bench --quick --json --results-dir /tmp/results
    brokerstack bench --setup redis-everysec --transport kombu --pool gevent --repeats 5
    brokerstack bench --section peers --tasks 3000 --setup redis-everysec   # brokerstack, stock Celery, Dramatiq

On Redis the end-to-end drains run on brokerstack's transport and on kombu's stock one in the same
run (``--transport both``, the default), alternated across repetitions, and are printed side by side:
the medians, their ranges, the ratio, and whether the difference is outside the noise.

The peers (``--peers``, the default; ``--no-peers`` leaves them out) drain the same backlog with
brokerstack's defaults, stock Celery with the same settings, Dramatiq with its own defaults and
brokerstack fire-and-forget, alternated, and judge the issue's goals against the noise.

Each setup gets its own broker node and auxiliary Redis (containers, or local broker processes
with BROKERSTACK_TEST_DRIVER=process), started and stopped by the run; one JSON record per setup is
written under ``<results dir>/bench/`` (schema: ``lab.experiments.bench``'s docstring).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from lab.harness.results import RESULTS_DIR_RULE, default_results_dir

console = Console(stderr=True)
#: The pool columns of the summary (records of older runs have no gevent: "-").
POOLS = ("solo", "threads", "prefork", "gevent")


def bench(
    setups: list[str] = typer.Option(
        None, "--setup", "-s", help="a setup to run (repeatable; default: the six single-node setups)"
    ),
    quick: bool = typer.Option(False, "--quick", help="small sizes: checks that every record is complete, not speeds"),
    tasks: int = typer.Option(None, "--tasks", "-n", min=10, help="tasks per pool backlog and raw-client messages"),
    as_json: bool = typer.Option(False, "--json", help="print the records as one JSON array on stdout"),
    results_dir: Path = typer.Option(
        None,
        "--results-dir",
        help=f"{RESULTS_DIR_RULE}: a full run with no --quick, --tasks, --pool, --repeats or --transport",
    ),
    driver: str = typer.Option(
        None, "--driver", help="docker | process | auto (default: $BROKERSTACK_TEST_DRIVER or auto)"
    ),
    transport: str = typer.Option(
        "both", "--transport", "-t", help="Redis setups: brokerstack | kombu | both (side by side, alternated)"
    ),
    pools: list[str] = typer.Option(
        None, "--pool", "-p", help="a worker pool to measure (repeatable; default: solo, threads, prefork, gevent)"
    ),
    repeats: int = typer.Option(
        None, "--repeats", "-r", min=1, help="drains per pool, configuration and transport (default: 3, --quick 2)"
    ),
    peers: bool = typer.Option(
        True, "--peers/--no-peers", help="measure stock Celery and Dramatiq beside brokerstack (the peers section)"
    ),
    sections: list[str] = typer.Option(
        None, "--section", help="a section to measure (repeatable): raw, end_to_end, api, resources, peers"
    ),
    peers_pool: str = typer.Option(
        None, "--peers-pool", help="the pool brokerstack and stock Celery drain with beside Dramatiq (default prefork)"
    ),
) -> None:
    """Measure every broker setup: raw client ceiling, end to end per worker pool, the API under load,
    broker resources. Exits 1 if a setup could not be measured completely."""
    from lab.experiments.bench import BenchParams, run_bench
    from lab.harness.setups import BENCHED_SETUPS, get_setup

    names = list(setups or BENCHED_SETUPS)
    try:
        chosen = [get_setup(name) for name in names]
    except ValueError as exc:
        raise SystemExit(f"brokerstack: {exc}") from None
    resolved = _check_can_run(driver, {s.broker for s in chosen})
    params = BenchParams.quick() if quick else BenchParams.full()
    if tasks is not None:
        params = params.with_tasks(tasks)
    try:
        chosen_sections = _sections(sections, peers=peers)
        params = params.with_options(
            transports=_transports(transport),
            pools=tuple(pools) if pools else None,
            repeats=repeats,
            sections=chosen_sections,
            peers_pool=peers_pool,
        )
    except ValueError as exc:
        raise SystemExit(f"brokerstack: {exc}") from None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    published = (
        not quick
        and tasks is None
        and not pools
        and repeats is None
        and transport == "both"
        and chosen_sections is None
        and peers_pool is None
    )
    results_dir = default_results_dir(results_dir, published=published)

    records: list[dict[str, Any]] = []
    failed: list[str] = []
    with Progress(
        TextColumn("[bold]{task.fields[setup]:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
        disable=not console.is_terminal and as_json,
    ) as bar:
        tasks_by_setup = {s.name: bar.add_task("waiting", setup=s.name, total=None) for s in chosen}
        for setup in chosen:
            task_id = tasks_by_setup[setup.name]
            lines = StepLines()

            def show(p: Any, task_id: TaskID = task_id, lines: StepLines = lines) -> None:
                bar.update(task_id, total=p.steps, completed=p.step, description=f"{p.phase}: {p.message}"[:70])
                line = lines(p)
                quiet = console.is_terminal or as_json
                if line is not None:
                    console.print(escape(line), highlight=False, soft_wrap=True)
                elif not quiet and p.phase in ("starting", "done") and p.step in (0, p.steps):
                    console.print(f"{p.setup}: {p.message}")

            try:
                record = run_bench(setup, params, driver=resolved, progress=show, results=results_dir)
            except KeyboardInterrupt:
                console.print("[red]interrupted: everything the bench started has been stopped")
                raise typer.Exit(130) from None
            except Exception as exc:  # noqa: BLE001 - one line per setup, the next one still runs
                failed.append(f"{setup.name}: {type(exc).__name__}: {exc}".splitlines()[0])
                bar.update(task_id, description=f"[red]failed: {exc}"[:70])
                continue
            records.append(record)
            if record["status"] != "completed":
                errors = "; ".join(f"{e['section']}: {e['error']}" for e in record["errors"])
                failed.append(f"{setup.name}: {errors}"[: 300 + len(setup.name) + 2])

    if as_json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=220)
        if any(r.get("raw") or r.get("end_to_end") for r in records):
            out.print(summary_table(records))
        if any((r.get("end_to_end") or {}).get("comparison") for r in records):
            out.print(transport_table(records))
        if any(r.get("peers") for r in records):
            out.print(peers_table(records))
        for line in raw_verdict_lines(records):
            out.print(line)
        for record in records:
            if record.get("path"):
                console.print(f"record: {record['path']}")
    if failed:
        for line in failed:
            console.print(f"[red]brokerstack bench: {line}")
        raise typer.Exit(1)


class StepLines:
    """One line per finished step of a setup's run (a drain, an API level, the raw ceiling, ...),
    for stderr: the bar draws only on a terminal, and a long run (the peers' drains take minutes)
    must show where it is in a log too. The bar's in-between ticks print nothing."""

    def __init__(self) -> None:
        self.step = 0

    def __call__(self, p: Any) -> str | None:
        if p.step <= self.step:
            return None
        self.step = p.step
        return f"{p.setup}: [{p.step}/{p.steps}, {p.elapsed:.0f} s] {p.phase}: {p.message}"


def _sections(chosen: list[str] | None, *, peers: bool) -> tuple[str, ...] | None:
    """The sections to run (None: every one), without the peers when ``--no-peers``."""
    from lab.experiments.bench import SECTIONS

    if not chosen and peers:
        return None
    picked = tuple(chosen) if chosen else SECTIONS
    unknown = sorted(set(picked) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"brokerstack: unknown --section {', '.join(unknown)}; one of {', '.join(SECTIONS)}")
    return tuple(s for s in SECTIONS if s in picked and (peers or s != "peers")) or None


def peers_table(records: list[dict[str, Any]]) -> Table:
    """Per setup: brokerstack's defaults and fire-and-forget beside stock Celery and Dramatiq, with
    the issue's goals and their verdicts (overlapping ranges = no difference)."""
    from lab.experiments.bench.peers import GOALS

    table = Table(title=escape("peers: drain of one worker (tasks/s, median [range]); goals judged against the noise"))
    for column in ("setup", "system", "drain", "enqueue", "goal", "ratio", "verdict"):
        table.add_column(column, justify="left" if column in ("setup", "system", "goal", "verdict") else "right")
    for r in records:
        section = r.get("peers") or {}
        systems = section.get("systems") or {}
        goals = section.get("goals") or {}
        for key, system in systems.items():
            judged = [(name, goals.get(name) or {}) for name, ours, _, _ in GOALS if ours == key]
            judged = judged or [("", {})]
            for name, goal in judged:
                table.add_row(
                    r["setup"],
                    key,
                    _spread_cell(system.get("consume") or {}),
                    _fmt((system.get("enqueue") or {}).get("per_s")),
                    f"{name} >= {goal.get('goal')}" if name else "",
                    _fmt(goal.get("ratio"), 2),
                    goal.get("verdict") or "",
                )
    return table


def _transports(choice: str) -> tuple[str, ...]:
    from lab.experiments.bench import REDIS_TRANSPORTS

    if choice == "both":
        return REDIS_TRANSPORTS
    if choice not in REDIS_TRANSPORTS:
        raise SystemExit(f"brokerstack: --transport is brokerstack, kombu or both, not {choice!r}")
    return (choice,)


def _check_can_run(driver: Any, brokers: set[Any]) -> Any:
    """The driver to use, or exit with one line saying why nothing can run."""
    from lab.harness.nodes import docker_available, process_available, resolve_driver
    from lab.harness.vendors import vendor_for

    try:
        resolved = resolve_driver(driver)
    except ValueError as exc:
        raise SystemExit(f"brokerstack: {exc}") from None
    if resolved == "docker":
        if not docker_available():
            raise SystemExit(
                "brokerstack: no Docker engine answers (start one, or use --driver process with "
                "redis-server/rabbitmq-server installed)"
            )
        return resolved
    missing = sorted(kind for kind in brokers if not process_available(kind))
    if missing:
        raise SystemExit(
            f"brokerstack: cannot run {', '.join(missing)}: no Docker engine and no local broker "
            f"binary ({', '.join(vendor_for(kind).server_binary for kind in missing)}) on PATH"
        )
    return resolved


def _fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:.{digits}f}{suffix}"
    if isinstance(value, (int, float)):
        return f"{value:,.0f}{suffix}"
    return str(value)


def summary_table(records: list[dict[str, Any]]) -> Table:
    """One row per setup: raw ceilings, end-to-end per pool and its ratio, latency, API, resources."""
    table = Table(title="brokerstack bench (tasks/s unless noted; ratio = e2e / raw consume)")
    columns = (
        "setup",
        "raw pub",
        "raw pub (durab.)",
        "raw cons",
        *POOLS,
        "best ratio / goal",
        "enqueue",
        "p50/p99 to finish ms",
        "API req/s (max c)",
        "API p99 ms",
        "API confirm cost",
        "broker CPU s/10k",
        "backlog MB",
    )
    for column in columns:
        table.add_column(column, justify="right" if column != "setup" else "left")
    for r in records:
        raw = r.get("raw") or {}
        ratios = r.get("ratios") or {}
        pools = (r.get("end_to_end") or {}).get("pools") or {}

        best = ratios.get("best_pool")
        best_result = pools.get(best) or {}
        finish = ((best_result.get("latency") or {}).get("enqueue_to_finish_ms")) or {}
        enqueue = (best_result.get("enqueue") or {}).get("per_s")
        api_runs = (r.get("api") or {}).get("runs") or []
        top = _top_api_runs(api_runs)
        api_rps = " / ".join(_fmt(run.get("rps")) for run in top) or "-"
        api_p99 = " / ".join(_fmt((run.get("latency_ms") or {}).get("p99"), 1) for run in top) or "-"
        backlog = ((r.get("resources") or {}).get("backlog")) or {}
        growth = backlog.get("rss_growth_bytes")
        broker_cpu = (((r.get("resources") or {}).get("per_10k_tasks") or {}).get(best) or {}).get("broker_cpu_s")
        best_ratio = ratios.get("e2e_vs_raw_consume_best")
        table.add_row(
            r["setup"]
            + (f" ({r['transport']})" if r.get("transport") else "")
            + ("" if r.get("status") == "completed" else f" [red]({r.get('status')})"),
            _spread_cell(raw.get("publish") or {}),
            _spread_cell(raw.get(ratios.get("raw_publish_basis") or "publish") or {}),
            _spread_cell(raw.get(ratios.get("raw_consume_basis") or "consume") or {}),
            *(_pool_cell(pools, ratios, pool) for pool in POOLS),
            f"{_fmt(best_ratio, 2)} / {_fmt(ratios.get('goal_e2e_vs_raw_consume'), 1)}",
            _fmt(enqueue),
            f"{_fmt(finish.get('p50'), 1)} / {_fmt(finish.get('p99'), 1)}",
            api_rps,
            api_p99,
            _fmt(ratios.get("api_confirm_cost"), 2),
            _fmt(broker_cpu, 2),
            "-" if growth is None else f"{_fmt(growth / 1e6, 1)} ({backlog.get('tasks'):,})",
        )
    return table


def _pool_cell(pools: dict[str, Any], ratios: dict[str, Any], pool: str) -> str:
    rate = ((pools.get(pool) or {}).get("consume") or {}).get("per_s")
    share = (ratios.get("e2e_vs_raw_consume") or {}).get(pool)
    return f"{_fmt(rate)} ({_fmt(share, 2)})" if rate else "-"


def _top_api_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs at the highest concurrency with the fewest uvicorn workers (confirms on, then off)."""
    if not runs:
        return []
    workers = min(run["uvicorn_workers"] for run in runs)
    level = max(run["concurrency"] for run in runs)
    chosen = [run for run in runs if run["uvicorn_workers"] == workers and run["concurrency"] == level]
    return sorted(chosen, key=lambda run: run.get("confirm_publish") is False)


def raw_verdict_lines(records: list[dict[str, Any]]) -> list[str]:
    """Per setup, the raw comparisons (confirms, pipelining, batching) with their verdict: a pair
    whose ranges overlap reads "no difference", whatever its ratio."""
    lines = []
    for r in records:
        verdicts = (r.get("ratios") or {}).get("raw_verdicts") or {}
        if verdicts:
            pairs = "; ".join(f"{pair} {_fmt(v.get('ratio'), 2)}x: {v.get('verdict')}" for pair, v in verdicts.items())
            lines.append(escape(f"raw {r['setup']}: {pairs}"))
    return lines


def _spread_cell(side: dict[str, Any]) -> str:
    """median [min-max] of the repetitions."""
    if not side or side.get("per_s") is None:
        return "-"
    if (side.get("repeats") or 0) < 2:
        return _fmt(side["per_s"])
    return escape(f"{_fmt(side['per_s'])} [{_fmt(side.get('per_s_min'))}-{_fmt(side.get('per_s_max'))}]")


def transport_table(records: list[dict[str, Any]]) -> Table:
    """Redis: brokerstack's transport next to kombu's, per setup and pool, for the fire-and-forget
    drain and the one with brokerstack's defaults."""
    from lab.experiments.bench import REDIS_TRANSPORTS

    a, b = REDIS_TRANSPORTS
    table = Table(
        title=escape(
            f"Redis transports end to end (tasks/s: median [range] of the repetitions; "
            f"ratio = {a} / {b}; overlapping ranges = no difference)"
        )
    )
    for column in (
        "setup",
        "pool",
        "reps",
        f"fire-and-forget {a}",
        b,
        "ratio",
        "difference",
        f"defaults {a}",
        b,
        "ratio",
        "difference",
        f"p50/p99 to finish ms {a}",
        b,
    ):
        table.add_column(column, justify="left" if column in ("setup", "pool", "difference") else "right")
    for r in records:
        e2e = r.get("end_to_end") or {}
        for pool, entry in (e2e.get("comparison") or {}).items():
            cells: list[str] = []
            for config in ("fire_and_forget", "defaults"):
                side = entry.get(config) or {}
                verdict = side.get("verdict") or "-"
                colour = "green" if verdict == f"{a} faster" else "red" if verdict == f"{b} faster" else None
                cells += [
                    _spread_cell(side.get(a) or {}),
                    _spread_cell(side.get(b) or {}),
                    _fmt(side.get("ratio"), 2),
                    f"[{colour}]{verdict}[/{colour}]" if colour else verdict,
                ]
            latency = entry.get("latency_to_finish_ms") or {}
            finish = [latency.get(t) or {} for t in (a, b)]
            table.add_row(
                r["setup"],
                pool,
                str(e2e.get("repeats", "-")),
                *cells,
                *(f"{_fmt(f.get('p50'), 1)} / {_fmt(f.get('p99'), 1)}" for f in finish),
            )
    return table
