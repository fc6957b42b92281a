"""/tasks: enqueue a task by short name, read its state, revoke it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status

from services.api.catalog import TaskCatalog, publish_options
from services.api.dependencies import get_catalog, get_producer, require_api_key
from services.api.errors import InvalidArguments
from services.api.producer import Producer
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


@router.get("", summary="The tasks that can be enqueued, with their parameters")
def list_tasks(catalog: TaskCatalog = Depends(get_catalog)) -> dict[str, list[dict[str, Any]]]:
    return {"tasks": catalog.describe()}


@router.post(
    "/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_api_key)],
    responses={404: {"model": ErrorBody}, **UNAVAILABLE},
)
async def enqueue_task(
    name: Annotated[str, Path(max_length=100)],
    response: Response,
    call: TaskCall | None = None,
    catalog: TaskCatalog = Depends(get_catalog),
    producer: Producer = Depends(get_producer),
) -> TaskAccepted:
    if name not in catalog:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown task {name!r}; GET /tasks lists them")
    call = call or TaskCall()
    if problems := catalog.check_call(name, call):
        raise InvalidArguments(problems)
    task = catalog.task(name)
    result = await producer.publish(lambda: task.apply_async(call.args, call.kwargs, **publish_options(call)))
    response.headers["Location"] = f"/tasks/{result.id}"
    return TaskAccepted(task_id=result.id, status_url=f"/tasks/{result.id}")


@router.get("/{task_id}", responses=UNAVAILABLE)
async def task_status(task_id: TaskId, producer: Producer = Depends(get_producer)) -> TaskStatus:
    return await producer.read(lambda: read_status(producer, task_id))


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_api_key)],
    responses=UNAVAILABLE,
)
async def revoke_task(
    task_id: TaskId,
    terminate: Annotated[bool, Query(description="also kill it if it is already running")] = False,
    producer: Producer = Depends(get_producer),
) -> RevokeAccepted:
    # Revoking is a broadcast to the workers: a waiting (countdown/eta) or queued task is dropped
    # when a worker sees it; ``terminate`` also signals a running one.
    await producer.publish(lambda: producer.celery.control.revoke(task_id, terminate=terminate))
    return RevokeAccepted(task_id=task_id, terminate=terminate)


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
