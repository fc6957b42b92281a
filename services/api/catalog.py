"""The tasks the API exposes, by short name, with their argument checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task

from services.api.schemas import TaskCall, WorkflowStep
from services.api.task_arguments import ArgumentProblem, TaskSignature
from worker.brokers import profile_for
from worker.settings import Settings
from worker.tasks import EXPOSED_TASKS


class TaskCatalog:
    def __init__(self, celery_app: Celery, settings: Settings) -> None:
        self.celery = celery_app
        self.settings = settings
        self._signatures = {short: TaskSignature(celery_app.tasks[name]) for short, name in EXPOSED_TASKS.items()}

    def __contains__(self, short_name: str) -> bool:
        return short_name in self._signatures

    def task(self, short_name: str) -> Task:
        return self._signatures[short_name].task

    def describe(self) -> list[dict[str, Any]]:
        routes = self.celery.conf.task_routes
        return [
            {
                "name": short,
                "task": sig.task.name,
                "queue": routes.get(sig.task.name, {}).get("queue", self.celery.conf.task_default_queue),
                "parameters": sig.describe(),
                "doc": (sig.task.__doc__ or "").strip().split("\n")[0] or None,
            }
            for short, sig in self._signatures.items()
        ]

    def check_call(self, short_name: str, call: TaskCall) -> list[ArgumentProblem]:
        problems = self._signatures[short_name].check(call.args, call.kwargs)
        delay = _delay_seconds(call)
        longest, reason = profile_for(self.settings).max_delay
        if delay is not None and delay > longest:
            field = "countdown" if call.countdown is not None else "eta"
            problems.append(
                ArgumentProblem(
                    ("body", field),
                    f"delay of {delay:.0f} s exceeds {longest} s ({reason}); "
                    "schedule long delays with beat or a database instead",
                )
            )
        if call.expires is not None and delay is not None and call.expires <= delay:
            # The worker would find it expired the moment it became due: straight to the dead letters.
            problems.append(
                ArgumentProblem(
                    ("body", "expires"),
                    f"expires ({call.expires:g} s from now) is not after the task is due ({max(delay, 0):.0f} s "
                    f"from now, by {'countdown' if call.countdown is not None else 'eta'}): it would expire "
                    "unrun and go to the dead letters; give expires a larger value",
                    "expires_before_due",
                )
            )
        return problems

    def check_steps(self, steps: list[WorkflowStep], *, loc: str, receives_previous: bool) -> list[ArgumentProblem]:
        """Problems in workflow steps: unknown names and bad arguments, with their position."""
        problems: list[ArgumentProblem] = []
        for index, step in enumerate(steps):
            here = ("body", loc, index) if loc != "callback" else ("body", loc)
            if step.name not in self:
                problems.append(ArgumentProblem((*here, "name"), f"unknown task {step.name!r}", "unknown_task"))
                continue
            problems += self._signatures[step.name].check(
                step.args,
                step.kwargs,
                receives_previous=receives_previous and (index > 0 or loc == "callback"),
                loc=here,
            )
        return problems

    def signature(self, step: WorkflowStep, **options: Any) -> Any:
        return self.task(step.name).signature(args=step.args, kwargs=step.kwargs, **options)


def eta_in_past(call: TaskCall) -> bool:
    """True if the call gave an ETA that has passed already: the task runs now, and the 202 says so
    (``TaskAccepted.eta_in_past``)."""
    delay = _delay_seconds(call)
    return call.eta is not None and delay is not None and delay <= 0


def publish_options(call: TaskCall) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if call.countdown is not None:
        options["countdown"] = call.countdown
    if call.eta is not None:
        options["eta"] = call.eta if call.eta.tzinfo else call.eta.replace(tzinfo=UTC)
    if call.expires is not None:
        options["expires"] = call.expires
    if call.queue is not None:
        options["queue"] = call.queue
    if call.priority is not None:
        options["priority"] = call.priority
    return options


def _delay_seconds(call: TaskCall) -> float | None:
    if call.countdown is not None:
        return call.countdown
    if call.eta is not None:
        eta = call.eta if call.eta.tzinfo else call.eta.replace(tzinfo=UTC)
        return (eta - datetime.now(UTC)).total_seconds()
    return None
