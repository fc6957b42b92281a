"""``brokerstack chaos``: failure injection with Jepsen-style accounting.

    brokerstack chaos list
    brokerstack chaos run --scenario broker-kill --setup rabbitmq-confirms [--tasks N] [--kills K] [--seed X] [--json]
    brokerstack chaos run --scenario worker-kill --setup redis-everysec --duration 20m [--transport kombu]
    brokerstack chaos matrix [--tasks N] [--kills K] [--scenario S ...] [--setup P ...] [--transport T ...]
    brokerstack chaos table [--results-dir DIR]

``--transport brokerstack|kombu`` picks the Redis transport (REDIS_TRANSPORT) of the Redis setups, so
each claim about brokerstack's is measured against kombu's own; it does not apply to RabbitMQ. Each
record names its transport, and the tables show both side by side. ``--duration`` makes a soak:
faults at random (seeded) intervals until the time is up; Ctrl-C ends it early, still drained and
counted.

Each run starts its own broker nodes (containers, or local broker processes with
``--driver process``), workers and producer, stops them afterwards (Ctrl-C included), writes a JSON
record under ``<results dir>/chaos/`` (``results/`` for a run of the published size, ``results/tmp/``
for a smaller one, unless ``--results-dir`` or ``$BROKERSTACK_RESULTS_DIR`` says otherwise) and prints
a table: where the terminal is too narrow for every column, a few lines per record, lost and
duplicated first. ``--json`` prints only the record, as one line, on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lab.harness.results import (
    ADHOC_RESULTS_DIR,
    PUBLISHED_MIN_CHAOS_TASKS,
    PUBLISHED_MIN_ROUTINE_FAULTS,
    PUBLISHED_MIN_SOAK_FAULTS,
    default_results_dir,
    is_published_size,
)

app = typer.Typer(
    help="Kill brokers and workers under load and count what each broker setup loses or runs twice.",
    no_args_is_help=True,
)

#: Exit code of run/matrix when a setup broke a guarantee it promises (lost > 0 where lost == 0
#: was promised); 2 is a run that failed or was interrupted.
EXIT_GUARANTEE_BROKEN = 1
EXIT_RUN_FAILED = 2


def _width() -> int | None:
    """$COLUMNS if set, else the terminal's; None (as wide as the table) piped into a file or CI log."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


stdout = Console(highlight=False, width=_width() or 240)
stderr = Console(stderr=True, highlight=False)

DRIVER_HELP = "docker | process (default: $BROKERSTACK_TEST_DRIVER, else docker when an engine answers)"
RESULTS_HELP = (
    "where records go (default: $BROKERSTACK_RESULTS_DIR, else results/ for a run of the published size: "
    f">= {PUBLISHED_MIN_CHAOS_TASKS} --tasks, routine operations >= {PUBLISHED_MIN_ROUTINE_FAULTS} faults, soaks "
    f">= {PUBLISHED_MIN_SOAK_FAULTS} kills (--duration / --fault-interval); smaller runs go to results/tmp/)"
)
TABLE_RESULTS_HELP = "records to read (default: $BROKERSTACK_RESULTS_DIR, else results/; ad-hoc runs: results/tmp)"
KEEP_HELP = "keep worker/API logs and the SQLite history of a completed run under <results>/tmp/chaos/<run id>/"
TRANSPORT_HELP = "Redis setups: brokerstack | kombu (REDIS_TRANSPORT); does not apply to RabbitMQ setups"
DURATION_HELP = (
    "soak: inject faults at random intervals until this much time has passed, e.g. 20m, 90s, 1h "
    "(--tasks and --kills then do not apply; worker-kill only)"
)


def _check_transport(value: str) -> str:
    from lab.experiments.chaos import TRANSPORTS

    if value not in TRANSPORTS:
        raise typer.BadParameter(f"unknown transport {value!r}; one of: {', '.join(TRANSPORTS)}")
    return value


def _parse_duration(value: str | None) -> float | None:
    from lab.experiments.chaos import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--duration") from None


def _check_name(kind: str, value: str, known: dict[str, Any]) -> str:
    if value not in known:
        raise typer.BadParameter(f"unknown {kind} {value!r}; one of: {', '.join(known)}")
    return value


@app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="print as one JSON object")) -> None:
    """Name the scenarios and the broker setups, with what each setup promises."""
    from lab.experiments.chaos import SCENARIO_NAMES, SCENARIOS, SETUPS

    if as_json:
        typer.echo(
            json.dumps(
                {
                    "scenarios": [SCENARIOS[name].describe() for name in SCENARIO_NAMES],
                    "setups": [setup.describe() for setup in SETUPS.values()],
                }
            )
        )
        return
    scenarios = Table(title="scenarios", title_justify="left")
    scenarios.add_column("scenario", style="bold")
    scenarios.add_column("what it does")
    for name in SCENARIO_NAMES:
        scenarios.add_row(name, SCENARIOS[name].description)
    stdout.print(scenarios)
    setups = Table(title="setups", title_justify="left")
    setups.add_column("setup", style="bold", no_wrap=True)
    setups.add_column("configuration")
    setups.add_column("lost == 0 promised in")
    setups.add_column("and duplicated == 0 in")
    for setup in SETUPS.values():
        promised = [s for s in SCENARIO_NAMES if setup.promises(s)]
        once = [s for s in SCENARIO_NAMES if setup.promises_exactly_once(s)]
        setups.add_row(setup.name, setup.description, ", ".join(promised) or "-", ", ".join(once) or "-")
    stdout.print(setups)
    stdout.print(
        "Every setup runs every scenario but node-loss, which only rabbitmq-quorum runs (on 3 nodes). "
        "Counts are recorded for every run; the tests assert only what a setup promises. The Redis promises are "
        "for brokerstack's transport: with --transport kombu (kombu's stock one) they are measured, not promised. "
        "worker-kill also soaks (--duration)."
    )


@app.command("run")
def run_command(
    scenario: str = typer.Option(..., "--scenario", "-s", help="see `brokerstack chaos list`"),
    setup: str = typer.Option(..., "--setup", "-p", help="see `brokerstack chaos list`"),
    tasks: int = typer.Option(1000, "--tasks", "-n", min=1, help="enqueue attempts in the run"),
    kills: int = typer.Option(3, "--kills", "-k", min=0, help="faults to inject"),
    seed: int | None = typer.Option(None, "--seed", help="places the faults in the stream (random if not given)"),
    as_json: bool = typer.Option(False, "--json", help="print only the record, as one line, on stdout"),
    rate: float | None = typer.Option(None, "--rate", help="enqueue attempts per second (default: spans the faults)"),
    workers: int = typer.Option(2, "--workers", min=1),
    visibility_timeout: int = typer.Option(
        10, "--visibility-timeout", min=1, help="Redis: REDIS_VISIBILITY_TIMEOUT for the run (seconds)"
    ),
    down_seconds: float | None = typer.Option(
        None, "--down-seconds", min=0, help="how long a killed broker stays down (scenario default)"
    ),
    kill_target: str = typer.Option("worker", "--kill-target", help="worker-kill: worker | child | both"),
    long_task_seconds: float = typer.Option(
        3.0,
        "--long-task-seconds",
        min=0.1,
        help="worker-kill: the killed tasks' length; broker-restart-mid-task: "
        "the shortest task running across the restart (+0-2 s)",
    ),
    transport: str = typer.Option("brokerstack", "--transport", help=TRANSPORT_HELP),
    duration: str | None = typer.Option(None, "--duration", help=DURATION_HELP),
    fault_interval: float = typer.Option(
        8.0, "--fault-interval", min=0.1, help="soak: mean seconds between faults (each gap 0.5x-1.5x, seeded)"
    ),
    drain_timeout: float = typer.Option(300.0, "--drain-timeout", min=1),
    driver: str | None = typer.Option(None, "--driver", help=DRIVER_HELP),
    results_dir: Path | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    keep_logs: bool = typer.Option(True, "--keep-logs/--no-keep-logs", help=KEEP_HELP),
) -> None:
    """Run one scenario on one setup, print the counts; exit 1 if the setup broke its promise."""
    from lab.experiments.chaos import SCENARIOS, SETUPS, RunOptions, get_setup

    _check_name("scenario", scenario, SCENARIOS)
    _check_name("setup", setup, SETUPS)
    _check_transport(transport)
    seconds = _parse_duration(duration)
    if not get_setup(setup).applies_to(scenario):
        runs = ", ".join(get_setup(setup).scenarios)
        raise typer.BadParameter(f"{scenario} does not apply to {setup} (it runs: {runs})")
    if seconds is not None and not SCENARIOS[scenario].soak:
        soaks = ", ".join(name for name, s in SCENARIOS.items() if s.soak)
        raise typer.BadParameter(f"{scenario} has no soak mode; --duration works with: {soaks}")
    if not get_setup(setup).vendor.transports and transport != "brokerstack":
        stderr.print(
            f"[yellow]note: --transport {transport} does not apply to {setup} (its broker has one client "
            "transport either way); ignored[/yellow]"
        )
    options = _options(
        RunOptions,
        tasks=tasks,
        kills=kills,
        seed=seed,
        rate=rate,
        workers=workers,
        visibility_timeout=visibility_timeout,
        down_seconds=down_seconds,
        kill_target=kill_target,
        long_task_seconds=long_task_seconds,
        transport=transport,
        duration=seconds,
        fault_interval=fault_interval,
        drain_timeout=drain_timeout,
        driver=driver,
        keep_workdir=keep_logs,
    )
    record = _run_one(scenario, setup, options, results_dir, as_json)
    if record is None:
        raise typer.Exit(EXIT_RUN_FAILED)
    if as_json:
        typer.echo(record.to_json())
    else:
        _print_table([record.to_dict()], title=f"{scenario} on {setup}")
        _print_details(record.to_dict())
    raise typer.Exit(_exit_code([record.to_dict()]))


@app.command("matrix")
def matrix_command(
    tasks: int = typer.Option(1000, "--tasks", "-n", min=1),
    kills: int = typer.Option(3, "--kills", "-k", min=0),
    seed: int | None = typer.Option(None, "--seed"),
    scenario: list[str] = typer.Option(None, "--scenario", "-s", help="only these scenarios (repeatable)"),
    setup: list[str] = typer.Option(None, "--setup", "-p", help="only these setups (repeatable)"),
    transport: list[str] = typer.Option(
        None, "--transport", help=TRANSPORT_HELP + "; repeat for both (each Redis pair then runs once per transport)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one record per line on stdout, nothing else"),
    rate: float | None = typer.Option(None, "--rate"),
    visibility_timeout: int = typer.Option(10, "--visibility-timeout", min=1),
    drain_timeout: float = typer.Option(300.0, "--drain-timeout", min=1),
    driver: str | None = typer.Option(None, "--driver", help=DRIVER_HELP),
    results_dir: Path | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    keep_logs: bool = typer.Option(True, "--keep-logs/--no-keep-logs", help=KEEP_HELP),
) -> None:
    """Run every applicable scenario x setup pair, one after the other, and print one table."""
    from lab.experiments.chaos import SCENARIOS, SETUPS, RunOptions, applicable_pairs

    for name in scenario or []:
        _check_name("scenario", name, SCENARIOS)
    for name in setup or []:
        _check_name("setup", name, SETUPS)
    transports = list(dict.fromkeys(_check_transport(t) for t in transport or ["brokerstack"]))
    pairs = applicable_pairs(scenario or None, setup or None)
    if not pairs:
        raise typer.BadParameter("no scenario x setup pair matches")
    # The transport is Redis' choice: RabbitMQ pairs run once whatever is asked.
    runs = [
        (sc, st, t if SETUPS[st].vendor.transports else "brokerstack")
        for sc, st in pairs
        for t in (transports if SETUPS[st].vendor.transports else transports[:1])
    ]
    if transports != ["brokerstack"] and any(not SETUPS[st].vendor.transports for _, st in pairs):
        stderr.print(
            "[yellow]note: --transport applies to the setups of brokers with a transport choice (Redis) only; "
            "the others (RabbitMQ) run once, on their one client transport[/yellow]"
        )
    options = _options(
        RunOptions,
        tasks=tasks,
        kills=kills,
        seed=seed,
        rate=rate,
        visibility_timeout=visibility_timeout,
        drain_timeout=drain_timeout,
        driver=driver,
        keep_workdir=keep_logs,
    )
    records: list[dict[str, Any]] = []
    failed = 0
    for index, (scenario_name, setup_name, transport_name) in enumerate(runs, 1):
        label = f" ({transport_name} transport)" if SETUPS[setup_name].vendor.transports else ""
        stderr.print(f"[bold]({index}/{len(runs)}) {scenario_name} on {setup_name}{label}[/bold]")
        run_options = replace(options, transport=transport_name)
        record = _run_one(scenario_name, setup_name, run_options, results_dir, as_json)
        if record is None:
            failed += 1
            continue
        data = record.to_dict()
        records.append(data)
        if as_json:
            typer.echo(json.dumps(data, default=str))
    if not as_json:
        _print_table(records, title=f"chaos matrix: {len(records)} runs, {tasks} tasks, {kills} faults each")
    code = _exit_code(records)
    raise typer.Exit(EXIT_RUN_FAILED if failed else code)


@app.command("table")
def table_command(
    results_dir: Path | None = typer.Option(None, "--results-dir", help=TABLE_RESULTS_HELP),
    every: bool = typer.Option(False, "--all", help="every stored run, not only the newest per pair"),
    min_tasks: int = typer.Option(0, "--min-tasks", help="only runs with at least this many tasks"),
    driver: str | None = typer.Option(None, "--driver", help="only runs on this driver (docker | process)"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as one JSON array"),
) -> None:
    """Print the table of stored records (the newest per scenario x setup)."""
    from lab.experiments.chaos import load_records, summary_row
    from lab.experiments.chaos import results_dir as resolve

    records = load_records(resolve(results_dir), latest_only=not every, min_tasks=min_tasks, driver=driver)
    if as_json:
        typer.echo(json.dumps([summary_row(r) for r in records], default=str))
        return
    if not records:
        stderr.print(f"no completed chaos records under {resolve(results_dir) / 'chaos'}")
        raise typer.Exit(1)
    _print_table(records, title=f"stored chaos runs ({resolve(results_dir) / 'chaos'})")


# --- helpers -----------------------------------------------------------------------------------------


def _options(cls: Any, **values: Any) -> Any:
    try:
        return cls(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _run_one(scenario: str, setup: str, options: Any, results_dir: Path | None, quiet: bool) -> Any:
    """Run with a progress bar on stderr; returns the record, or None if the run failed."""
    from lab.experiments.chaos import ChaosRun

    results_dir = _results_for(scenario, options, results_dir)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    show = not quiet or stderr.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.fields[phase]:>8}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ack {task.fields[acked]}  exe {task.fields[executed]}  faults {task.fields[faults]}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=stderr,
        disable=not show,
        transient=quiet,
    )
    soak = options.duration is not None
    if soak:
        # A soak has no task total: the bar is the clock, and the line what has been counted so far.
        progress.columns = (
            TextColumn("[bold]{task.fields[phase]:>8}[/bold]"),
            BarColumn(),
            TextColumn("{task.fields[clock]}"),
            TextColumn(
                "faults {task.fields[faults]}  tasks {task.fields[tasks]}  ack {task.fields[acked]}  "
                "exe {task.fields[executed]}  lost so far {task.fields[lost]}  dup {task.fields[dup]}"
            ),
            TextColumn("{task.description}"),
        )
    total = options.duration if soak else options.tasks
    bar = progress.add_task(
        "", total=total, phase="starting", acked=0, executed=0, faults="0", tasks=0, lost=0, dup=0, clock=""
    )

    def on_progress(p: Any) -> None:
        if soak:
            elapsed = min(p.elapsed_s, p.duration_s or p.elapsed_s)
            clock = f"{_clock(p.elapsed_s)} / {_clock(p.duration_s or 0)}"
            progress.update(
                bar,
                completed=elapsed,
                description=p.message[:50],
                phase=p.phase,
                acked=p.acknowledged,
                executed=p.executed,
                faults=str(p.faults_done),
                tasks=p.attempted,
                lost=p.lost_so_far if p.lost_so_far is not None else "-",
                dup=p.duplicated_so_far if p.duplicated_so_far is not None else "-",
                clock=clock,
            )
            return
        progress.update(
            bar,
            completed=p.attempted,
            total=p.total,
            description=p.message[:60],
            phase=p.phase,
            acked=p.acknowledged,
            executed=p.executed,
            faults=f"{p.faults_done}/{p.faults_total}",
        )

    try:
        run = ChaosRun(scenario, setup, options, progress=on_progress, results=results_dir)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        with progress:
            return run.run()
    except KeyboardInterrupt:
        stderr.print(f"[yellow]interrupted: everything the run started is stopped; record: {run.record.path}[/yellow]")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - report, keep the record, go on (matrix)
        stderr.print(f"[red]{scenario} on {setup} failed: {type(exc).__name__}: {exc}[/red]")
        return None
    finally:
        if run.record.path:
            stderr.print(f"record: {run.record.path}", soft_wrap=True)


def _results_for(scenario: str, options: Any, explicit: Path | None) -> Path:
    """Where this run's record goes: a run smaller than the published ones must not replace one."""
    from lab.experiments.chaos import SCENARIOS

    soak = options.duration is not None
    faults = int(options.duration / options.fault_interval) if soak else SCENARIOS[scenario].faults_planned(options)
    published = is_published_size(scenario, tasks=options.tasks, faults=faults, soak=soak)
    directory = default_results_dir(explicit, published=published)
    if directory == ADHOC_RESULTS_DIR:
        stderr.print(
            f"below the published size ({options.tasks} tasks, {faults} faults planned): the record goes to "
            f"{directory}/, not results/ (--results-dir results to keep it there)"
        )
    return directory


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_table(records: list[dict[str, Any]], title: str) -> None:
    """The wide table where every number fits, else a few lines per record (a narrow terminal)."""
    table = _wide_table(records, title)
    # Measured unbounded: the widest the table gets with no cell cut or wrapped.
    needed = Measurement.get(Console(width=10_000), Console(width=10_000).options, table).maximum
    width = _width() or needed
    if width >= needed:
        Console(highlight=False, width=width).print(table)
    else:
        _print_blocks(records, title, width)


def _guarantee(row: dict[str, Any]) -> str:
    if row["guarantee"] is None:
        return "none promised"
    if row["held"]:
        return f"[green]{row['guarantee']} held[/green]"
    return f"[red]{row['guarantee']} BROKEN[/red]"


def _lost_cell(lost: Any) -> str:
    return "-" if lost is None else (f"[red]{lost}[/red]" if lost else "0")


def _print_blocks(records: list[dict[str, Any]], title: str, width: int) -> None:
    """The narrow layout: a few short lines per record, the counts the runs exist for first."""
    from lab.experiments.chaos import summary_row

    console = Console(highlight=False, width=width)
    console.print(title, soft_wrap=False)
    for data in records:
        row = summary_row(data)
        scenario = row["scenario"] + (" (soak)" if row["mode"] == "soak" else "")
        lines = [
            f"[bold]{scenario}[/bold] on {row['setup']}, transport {row['transport'] or '-'}",
            f"  lost {_lost_cell(row['lost'])}  duplicated {_fmt(row['duplicated'])}  faults {_fmt(row['faults'])}  "
            f"acked {_fmt(row['acknowledged'])} of {_fmt(row['attempted'])}  executed {_fmt(row['executed'])}",
        ]
        if row["mode"] == "soak":
            lines.append(
                f"  lost/fault {_fmt(row['lost_per_fault'], 3)}  dup/fault {_fmt(row['duplicated_per_fault'], 3)}"
            )
        lines += [
            f"  {_guarantee(row)}  recovered {_fmt(row['recovered'])}  unexpected {_fmt(row['unexpected'])}  "
            f"drained {'yes' if row['drained'] else '[yellow]no[/yellow]'}",
            f"  redelivery {_seconds(row['redelivery_s'])}  producer back {_seconds(row['recovery_s'])}  "
            f"workers back {_seconds(row['consumer_recovery_s'])}  run {_seconds(row['duration_s'])}",
        ]
        for line in lines:
            console.print(line)


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _wide_table(records: list[dict[str, Any]], title: str) -> Table:
    from lab.experiments.chaos import summary_row

    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("scenario", "left"),
        ("setup", "left"),
        ("transport", "left"),
        ("faults", "right"),
        ("attempted", "right"),
        ("acked", "right"),
        ("executed", "right"),
        ("lost", "right"),
        ("duplicated", "right"),
        ("lost/fault", "right"),
        ("dup/fault", "right"),
        ("recovered", "right"),
        ("unexpected", "right"),
        ("redelivery s", "right"),
        ("producer back s", "right"),
        ("workers back s", "right"),
        ("drained", "center"),
        ("guarantee", "left"),
        ("run s", "right"),
    ):
        # Numbers never wrap (a count cut to "5…" is no count); headers and the guarantee may.
        no_wrap = column not in ("guarantee",)
        max_width = None if no_wrap else 18
        table.add_column(column, justify=justify, no_wrap=no_wrap, max_width=max_width)  # type: ignore[arg-type]
    for data in records:
        row = summary_row(data)
        lost_cell = _lost_cell(row["lost"])
        guarantee = _guarantee(row)
        scenario = row["scenario"] + (" (soak)" if row["mode"] == "soak" else "")
        table.add_row(
            scenario,
            row["setup"],
            row["transport"] or "-",
            _fmt(row["faults"]),
            _fmt(row["attempted"]),
            _fmt(row["acknowledged"]),
            _fmt(row["executed"]),
            lost_cell,
            _fmt(row["duplicated"]),
            _fmt(row["lost_per_fault"], 3),
            _fmt(row["duplicated_per_fault"], 3),
            _fmt(row["recovered"]),
            _fmt(row["unexpected"]),
            _fmt(row["redelivery_s"]),
            _fmt(row["recovery_s"]),
            _fmt(row["consumer_recovery_s"]),
            "yes" if row["drained"] else "[yellow]no[/yellow]",
            guarantee,
            _fmt(row["duration_s"], 0),
        )
    return table


def _print_details(data: dict[str, Any]) -> None:
    timings = data.get("timings") or {}
    parts = []
    for key, label in (
        ("recovery_s", "producer recovery"),
        ("consumer_recovery_s", "consumer recovery"),
        ("ack_gap_s", "longest pause between acks"),
        ("redelivery_delay_s", "redelivery"),
        ("restart_s", "broker restart"),
        ("shutdown_s", "warm shutdown"),
        ("replacement_s", "replacement ready"),
        ("after_success_s", "kill after the last success"),
    ):
        stats = timings.get(key)
        if stats:
            parts.append(f"{label} {stats['min']:.2f}-{stats['max']:.2f} s")
    params = data.get("parameters") or {}
    line = f"seed {params.get('seed')}, rate {params.get('rate')}/s, driver {data.get('driver')}"
    if "visibility_timeout" in params:
        line += f", visibility timeout {params['visibility_timeout']} s"
    stdout.print(line + (" | " + ", ".join(parts) if parts else ""))
    for note in data.get("notes") or []:
        stdout.print(f"[yellow]note:[/yellow] {note}")


def _exit_code(records: list[dict[str, Any]]) -> int:
    if any(r.get("guarantee_held") is False for r in records):
        return EXIT_GUARANTEE_BROKEN
    return 0
