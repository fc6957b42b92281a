"""The report's exactly-once section (lab.report.idempotency): duplicated executions vs duplicated
effects of the guarded and unguarded parts per setup, and the cost records, rendered from files."""

from __future__ import annotations

import json
from pathlib import Path

from lab.experiments.idempotency_cost import Repetition, guarantee_commands, summarize
from lab.harness.setups import SETUPS
from lab.report import Report, load_sources
from lab.report.idempotency import cost_rows, idempotency_section

GUARDED = "worker.tasks.tools.guarded_noop"
PLAIN = "worker.tasks.tools.noop"


def _chaos_record(root: Path, setup: str, run_id: str, *, mixed: bool) -> None:
    from lab.experiments.chaos import Attempt, Execution, RunRecord, account
    from lab.experiments.chaos.record import write_record

    record = RunRecord(
        scenario="broker-kill",
        setup=setup,
        run_id=run_id,
        started_at=f"2026-01-02T03:04:{run_id[-2:]}.0Z",
        driver="docker",
        parameters={"tasks": 10, "kills": 3},
        versions={"broker": "x 1"},
    )
    kinds = ["guarded" if mixed and i % 2 else "noop" for i in range(10)]
    attempts = [Attempt(index=i, task_id=f"t{i}", invoked_at=i, outcome="ok", kind=k) for i, k in enumerate(kinds)]
    executions = []
    for i, kind in enumerate(kinds):
        name = GUARDED if kind == "guarded" else PLAIN
        runs = 2 if i < 4 else 1  # t0-t3 ran twice: t1 and t3 are guarded
        for run in range(runs):
            executions.append(Execution("finish", f"t{i}", name=name, state="SUCCESS"))
            if kind == "guarded" and run == 0:
                executions.append(Execution("effect", f"t{i}", name=name))
    record.counts = account(attempts, executions)
    record.faults = [{"n": i} for i in range(3)]
    record.status = "completed"
    write_record(record, root)


def _cost_record(root: Path, broker: str) -> None:
    runs = []
    for config, drain, extra in (("unguarded", 400.0, {}), ("guarded", 250.0, {"set": 2.0, "watch": 1.0})):
        for n in range(3):
            ops = {"get": 1.0, "setex": 1.0, **({"get": 2.0, "multi": 1.0, "rpush": 1.0, "exec": 1.0} if extra else {})}
            runs.append(Repetition(config, drain + n, 1.0, {**ops, **extra}, {}))
    configs = {c: summarize([r for r in runs if r.config == c]) for c in ("unguarded", "guarded")}
    record = {
        "schema": "brokerstack.idempotency-cost/1",
        "broker": broker,
        "broker_version": f"{broker} 1.0",
        "tasks": 1000,
        "repetitions": 3,
        "load_average_1m": [3.0, 5.0],
        "machine": {"cpus": 2},
        "configs": configs,
        "guarantee_commands": guarantee_commands(configs),
    }
    (root / "idempotency-cost").mkdir(parents=True, exist_ok=True)
    (root / "idempotency-cost" / f"{broker}-docker.json").write_text(json.dumps(record))


def test_the_guarantee_adds_the_claims_commands_apart_from_the_effects(tmp_path: Path) -> None:
    _cost_record(tmp_path, "redis")
    record = json.loads((tmp_path / "idempotency-cost" / "redis-docker.json").read_text())
    # GET +1, SET +2, WATCH +1 are the claim's; MULTI, RPUSH, EXEC the effect's own write.
    assert record["guarantee_commands"]["claim"] == 4.0 and record["guarantee_commands"]["effect"] == 3.0
    [row] = cost_rows([record])
    assert row[1] == "401 (400-402)" and row[2] == "251 (250-252)"
    assert row[3] == "2.00" and row[4] == "9.00"


def test_the_section_splits_guarded_from_unguarded_per_setup(tmp_path: Path) -> None:
    _chaos_record(tmp_path, "redis-everysec", "00000001", mixed=True)
    _chaos_record(tmp_path, "rabbitmq-confirms", "00000002", mixed=False)  # before the mix: left out
    _cost_record(tmp_path, "redis")
    _cost_record(tmp_path, "rabbitmq")
    report = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False)
    section = idempotency_section(report)
    # 5 guarded of 10; guarded t1, t3 ran twice with one effect each; plain t0, t2 twice, each an effect.
    assert "| redis-everysec | broker-kill | 10 tasks, 3 faults | 5 of 10 | 2 | **0** | 0 | 2 | 2 | [C" in section
    listed = section.split("### Every record with guarded tasks", 1)[1].split("### What the guarantee costs", 1)[0]
    assert "rabbitmq-confirms" not in listed
    assert "0 in 1 of 1 runs" in section
    assert "redis 1.0" in section and "rabbitmq 1.0" in section and "load average 3.0-5.0 on 2 CPUs" in section
    assert section.index("| redis 1.0 |") < section.index("| rabbitmq 1.0 |")
    # 400-402 against 250-252 per second: apart, so no "no difference" note.
    assert "ranges overlap" not in section
    assert "## Exactly-once effects" in report.render()


def test_every_record_with_guarded_tasks_is_listed_whatever_its_size(tmp_path: Path) -> None:
    """Not only the newest published one per pair: an older run and a small one are listed too, and
    the matrix says which scenario x setup pairs have none yet."""
    _chaos_record(tmp_path, "redis-everysec", "00000001", mixed=True)
    _chaos_record(tmp_path, "redis-everysec", "00000002", mixed=True)
    _chaos_record(tmp_path, "rabbitmq-confirms", "00000003", mixed=False)
    report = Report(
        load_sources(tmp_path, min_chaos_tasks=1000), tmp_path / "doc.md", tmp_path / "img", draw_charts=False
    )
    section = idempotency_section(report)
    listed = section.split("### Every record with guarded tasks", 1)[1]
    assert listed.count("| redis-everysec | broker-kill | 10 tasks, 3 faults |") == 2
    assert "0 in 2 of 2 runs" in section
    matrix = section.split("### Every scenario on every setup", 1)[1].split("### Every record", 1)[0]
    broker_kill = next(line for line in matrix.splitlines() if line.startswith("| broker-kill |"))
    cells = dict(zip(SETUPS, broker_kill.strip("|").split("|")[1:], strict=True))
    assert cells["redis-everysec"].strip() == "**0** (2 runs)"
    assert cells["rabbitmq-confirms"].strip() == "none run yet"  # its record has no guarded tasks
    assert cells["redis-sentinel"].strip() == "—"  # the setup does not run it
    assert "| publish-kill | n/a |" in matrix


def test_without_records_the_section_says_what_to_run(tmp_path: Path) -> None:
    report = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False)
    section = idempotency_section(report)
    assert "No chaos records with guarded tasks yet" in section and "No idempotency-cost records yet" in section
