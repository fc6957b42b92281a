"""Request and response bodies of the producer API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from worker.topology import PRIORITY_MAX, PRIORITY_MIN, WORK_QUEUES

QueueName = Literal[WORK_QUEUES]  # type: ignore[valid-type]
TaskState = Literal["PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"]

#: A task id as Celery makes them (UUIDs) or as a client may choose; nothing that could smuggle a
#: Redis key pattern or path.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
#: Bounds on workflow size: a request is one HTTP body, not a batch import.
MAX_WORKFLOW_TASKS = 100


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskCall(Strict):
    """How to run one task; every field is optional."""

    args: list[Any] = Field(default_factory=list, max_length=100)
    kwargs: dict[str, Any] = Field(default_factory=dict, max_length=100)
    countdown: float | None = Field(default=None, ge=0, description="seconds to wait before running")
    eta: datetime | None = Field(default=None, description="run at (ISO 8601; naive means UTC)")
    expires: float | None = Field(default=None, gt=0, description="seconds after which it is dropped unrun")
    queue: QueueName | None = None
    priority: int | None = Field(
        default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="0..9, 9 most urgent, on every broker"
    )

    @model_validator(mode="after")
    def _one_delay(self) -> TaskCall:
        if self.countdown is not None and self.eta is not None:
            raise ValueError("give either countdown or eta, not both")
        return self


class TaskAccepted(BaseModel):
    task_id: str
    status_url: str
    eta_in_past: bool = Field(
        default=False,
        description="the eta given had already passed: the task runs now (the field is left out otherwise)",
    )

    @model_serializer(mode="wrap")
    def _only_when_true(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body: dict[str, Any] = handler(self)
        if not self.eta_in_past:
            body.pop("eta_in_past", None)
        return body


class TaskError(BaseModel):
    type: str
    message: str


class TaskStatus(BaseModel):
    task_id: str
    state: TaskState
    result: Any = None
    error: TaskError | None = None


class RevokeAccepted(BaseModel):
    task_id: str
    revoked: bool = True
    terminate: bool = False


class WorkflowStep(Strict):
    name: str = Field(min_length=1, max_length=100)
    args: list[Any] = Field(default_factory=list, max_length=100)
    kwargs: dict[str, Any] = Field(default_factory=dict, max_length=100)


class WorkflowOptions(Strict):
    queue: QueueName | None = None
    priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX)


class ChainRequest(WorkflowOptions):
    """Each step gets the previous step's result as its first argument."""

    tasks: list[WorkflowStep] = Field(min_length=1, max_length=MAX_WORKFLOW_TASKS)


class GroupRequest(WorkflowOptions):
    tasks: list[WorkflowStep] = Field(min_length=1, max_length=MAX_WORKFLOW_TASKS)


class ChordRequest(WorkflowOptions):
    """The header runs in parallel; the callback gets the list of their results."""

    header: list[WorkflowStep] = Field(min_length=1, max_length=MAX_WORKFLOW_TASKS)
    callback: WorkflowStep


class WorkflowAccepted(BaseModel):
    task_id: str = Field(description="the task whose result is the workflow's result")
    status_url: str
    task_ids: list[str]


class GroupAccepted(BaseModel):
    group_id: str
    status_url: str
    task_ids: list[str]


class GroupStatus(BaseModel):
    group_id: str
    completed: int
    total: int
    tasks: list[TaskStatus]


class SignupRequest(Strict):
    email: str = Field(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}$", max_length=320)
    name: str = Field(min_length=1, max_length=100)


class SignupAccepted(BaseModel):
    user_id: str
    email: str
    tasks: dict[str, str]


class ErrorBody(BaseModel):
    error: str
    detail: Any = None
