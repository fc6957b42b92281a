"""/tasks: enqueue a task by short name, read its state, revoke it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status

from services.api.catalog import TaskCatalog, eta_in_past, publish_options
from services.api.dependencies import (
    get_catalog,
    get_idempotency,
    get_producer,
    get_published,
    require_api_key,
    require_read_key,
)
from services.api.errors import InvalidArguments
from services.api.idempotency import Idempotency, answer_once
from services.api.producer import Producer
from services.api.published import PublishedTasks, publish_recorded
from services.api.schemas import (
    TASK_ID_PATTERN,
    ErrorBody,
    RevokeAccepted,
    TaskAccepted,
    TaskCall,
    TaskError,
    TaskStatus,
)

router = APIRouter(prefix="/tasks", tags=["tasks"])
TaskId = Annotated[str, Path(pattern=TASK_ID_PATTERN)]
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "broker or result backend unreachable"}
}
UNKNOWN_TASK: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such task: never published by this API and no result (or expired)"}
}
#: Reads of task data: the key (API_KEY or API_READ_KEY) once one is set.
GUARDED_READ: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody, "description": "missing or wrong X-API-Key"}}
GUARDED_WRITE: dict[int | str, dict[str, Any]] = {
    **GUARDED_READ,
    403: {"model": ErrorBody, "description": "API_READ_KEY sent: this endpoint needs API_KEY"},
}
#: The answers an Idempotency-Key adds (docs/idempotency.md).
IDEMPOTENT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "a request with this Idempotency-Key is still being processed"},
}


@router.get("", summary="The tasks that can be enqueued, with their parameters")
def list_tasks(catalog: TaskCatalog = Depends(get_catalog)) -> dict[str, list[dict[str, Any]]]:
    return {"tasks": catalog.describe()}


@router.post(
    "/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_api_key)],
    responses={404: {"model": ErrorBody}, **GUARDED_WRITE, **IDEMPOTENT, **UNAVAILABLE},
)
async def enqueue_task(
    name: Annotated[str, Path(max_length=100)],
    response: Response,
    call: TaskCall | None = None,
    catalog: TaskCatalog = Depends(get_catalog),
    producer: Producer = Depends(get_producer),
    published: PublishedTasks = Depends(get_published),
    idempotency: Idempotency = Depends(get_idempotency),
) -> TaskAccepted:
    if name not in catalog:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown task {name!r}; GET /tasks lists them")
    call = call or TaskCall()
    if problems := catalog.check_call(name, call):
        raise InvalidArguments(problems)
    held = await idempotency.claim(f"POST /tasks/{name}", call.model_dump(mode="json"))
    task = catalog.task(name)
    task_id = held.task_id()  # chosen here so it is recorded while the message is published

    async def start() -> TaskAccepted:
        await publish_recorded(
            producer,
            published,
            [task_id],
            lambda: task.apply_async(call.args, call.kwargs, task_id=task_id, **publish_options(call)),
        )
        return TaskAccepted(task_id=task_id, status_url=f"/tasks/{task_id}", eta_in_past=eta_in_past(call))

    accepted = await answer_once(held, TaskAccepted, start)
    response.headers["Location"] = accepted.status_url
    return accepted


@router.get(
    "/{task_id}",
    dependencies=[Depends(require_read_key)],
    responses={**UNKNOWN_TASK, **GUARDED_READ, **UNAVAILABLE},
)
async def task_status(
    task_id: TaskId, producer: Producer = Depends(get_producer), published: PublishedTasks = Depends(get_published)
) -> TaskStatus:
    return await producer.read(lambda: read_known_status(producer, published, task_id))


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_api_key)],
    responses={**UNKNOWN_TASK, **GUARDED_WRITE, **UNAVAILABLE},
)
async def revoke_task(
    task_id: TaskId,
    terminate: Annotated[bool, Query(description="also kill it if it is already running")] = False,
    producer: Producer = Depends(get_producer),
    published: PublishedTasks = Depends(get_published),
) -> RevokeAccepted:
    # An unknown id would be "revoked" all the same (workers keep a list of revoked ids): say so.
    await producer.read(lambda: read_known_status(producer, published, task_id))
    # Revoking is a broadcast to the workers: a waiting (countdown/eta) or queued task is dropped
    # when a worker sees it; ``terminate`` also signals a running one.
    await producer.publish(lambda: producer.celery.control.revoke(task_id, terminate=terminate))
    return RevokeAccepted(task_id=task_id, terminate=terminate)


def read_known_status(producer: Producer, published: PublishedTasks, task_id: str) -> TaskStatus:
    """``read_status``, or 404 for an id nobody published through this API and that has no result
    (blocking: run it via producer.read)."""
    status_ = read_status(producer, task_id)
    if status_.state == "PENDING" and not published.is_recorded(task_id):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"no task {task_id!r}: not published through this API (or its record expired) and no result",
        )
    return status_


def read_status(producer: Producer, task_id: str) -> TaskStatus:
    """One task's state from the result backend (a blocking call: run it via producer.read)."""
    meta = producer.celery.backend.get_task_meta(task_id)  # one GET: state, result, error together
    state = meta["status"]
    value = meta.get("result")
    if state in ("FAILURE", "RETRY", "REVOKED"):
        return TaskStatus(task_id=task_id, state=state, error=_error_from(value, state))
    if state not in ("PENDING", "STARTED", "SUCCESS"):
        # A custom state a task set for itself (progress and the like) means it is running.
        state = "STARTED"
    return TaskStatus(task_id=task_id, state=state, result=value if state == "SUCCESS" else None)


def _error_from(value: Any, state: str) -> TaskError:
    """The backend hands failures back as exception objects (rebuilt from the JSON it stored)."""
    if isinstance(value, BaseException):
        return TaskError(type=type(value).__name__, message=str(value))
    if isinstance(value, dict) and "exc_type" in value:
        message = value.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(part) for part in message)
        return TaskError(type=str(value["exc_type"]), message=str(message or ""))
    return TaskError(type=state, message="" if value is None else str(value))
