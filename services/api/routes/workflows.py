"""/workflows: chain, group and chord of exposed tasks."""

from __future__ import annotations

from typing import Annotated, Any

from celery import chain, chord, group
from fastapi import APIRouter, Depends, HTTPException, Path, status

from services.api.catalog import TaskCatalog
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
from services.api.routes.tasks import GUARDED_READ, GUARDED_WRITE, IDEMPOTENT, UNAVAILABLE, read_status
from services.api.schemas import (
    TASK_ID_PATTERN,
    ChainRequest,
    ChordRequest,
    GroupAccepted,
    GroupRequest,
    GroupStatus,
    WorkflowAccepted,
    WorkflowOptions,
)

router = APIRouter(prefix="/workflows", tags=["workflows"], responses=UNAVAILABLE)
GUARDED = [Depends(require_api_key)]
STARTS: dict[int | str, dict[str, Any]] = {**GUARDED_WRITE, **IDEMPOTENT}


def _options(request: WorkflowOptions) -> dict[str, Any]:
    return {
        key: value for key, value in (("queue", request.queue), ("priority", request.priority)) if value is not None
    }


def _task_ids(result: Any) -> list[str]:
    """Every task id in a workflow result, first step first."""
    ids: list[str] = []
    node = result
    while node is not None:
        if getattr(node, "results", None) is not None:
            ids = [child.id for child in node.results] + ids
        else:
            ids.insert(0, node.id)
        node = node.parent
    return ids


@router.post("/chain", status_code=status.HTTP_202_ACCEPTED, dependencies=GUARDED, responses=STARTS)
async def start_chain(
    request: ChainRequest,
    catalog: TaskCatalog = Depends(get_catalog),
    producer: Producer = Depends(get_producer),
    published: PublishedTasks = Depends(get_published),
    idempotency: Idempotency = Depends(get_idempotency),
) -> WorkflowAccepted:
    if problems := catalog.check_steps(request.tasks, loc="tasks", receives_previous=True):
        raise InvalidArguments(problems)
    held = await idempotency.claim("POST /workflows/chain", request.model_dump(mode="json"))
    workflow = chain(
        *(
            catalog.signature(step, **_options(request)).set(task_id=held.task_id(index))
            for index, step in enumerate(request.tasks)
        )
    )
    # Freezing keeps every step's id (set above: derived from an Idempotency-Key, else random), so
    # all are recorded while it is published: later steps are sent by workers, under these ids.
    frozen = workflow.freeze()
    task_ids = _task_ids(frozen)

    async def start() -> WorkflowAccepted:
        await publish_recorded(producer, published, task_ids, workflow.apply_async)
        return WorkflowAccepted(task_id=frozen.id, status_url=f"/tasks/{frozen.id}", task_ids=task_ids)

    return await answer_once(held, WorkflowAccepted, start)


@router.post("/group", status_code=status.HTTP_202_ACCEPTED, dependencies=GUARDED, responses=STARTS)
async def start_group(
    request: GroupRequest,
    catalog: TaskCatalog = Depends(get_catalog),
    producer: Producer = Depends(get_producer),
    published: PublishedTasks = Depends(get_published),
    idempotency: Idempotency = Depends(get_idempotency),
) -> GroupAccepted:
    if problems := catalog.check_steps(request.tasks, loc="tasks", receives_previous=False):
        raise InvalidArguments(problems)
    held = await idempotency.claim("POST /workflows/group", request.model_dump(mode="json"))
    workflow = group(
        catalog.signature(step, **_options(request)).set(task_id=held.task_id(index))
        for index, step in enumerate(request.tasks)
    )
    workflow.set(task_id=held.task_id(len(request.tasks)))  # the group's own id
    frozen = workflow.freeze()
    task_ids = [child.id for child in frozen.results]

    def publish_and_save() -> Any:
        result = workflow.apply_async()
        result.save()  # so GET /workflows/<id> can find its members later
        return result

    async def start() -> GroupAccepted:
        await publish_recorded(producer, published, task_ids, publish_and_save)
        return GroupAccepted(group_id=frozen.id, status_url=f"/workflows/{frozen.id}", task_ids=task_ids)

    return await answer_once(held, GroupAccepted, start)


@router.post("/chord", status_code=status.HTTP_202_ACCEPTED, dependencies=GUARDED, responses=STARTS)
async def start_chord(
    request: ChordRequest,
    catalog: TaskCatalog = Depends(get_catalog),
    producer: Producer = Depends(get_producer),
    published: PublishedTasks = Depends(get_published),
    idempotency: Idempotency = Depends(get_idempotency),
) -> WorkflowAccepted:
    problems = catalog.check_steps(request.header, loc="header", receives_previous=False)
    problems += catalog.check_steps([request.callback], loc="callback", receives_previous=True)
    if problems:
        raise InvalidArguments(problems)
    held = await idempotency.claim("POST /workflows/chord", request.model_dump(mode="json"))
    options = _options(request)
    size = len(request.header)
    header = group(
        catalog.signature(step, **options).set(task_id=held.task_id(index)) for index, step in enumerate(request.header)
    )
    workflow = chord(header, catalog.signature(request.callback, **options).set(task_id=held.task_id(size)))
    # The header's group id too, so a retried publish counts toward the same chord. chord() unpacks a
    # group header into its tasks (dropping the group's options); freeze keeps a group it is given.
    header.set(task_id=held.task_id(size + 1))
    workflow.tasks = header
    frozen = workflow.freeze()
    task_ids = _task_ids(frozen)

    async def start() -> WorkflowAccepted:
        await publish_recorded(producer, published, task_ids, workflow.apply_async)
        return WorkflowAccepted(task_id=frozen.id, status_url=f"/tasks/{frozen.id}", task_ids=task_ids)

    return await answer_once(held, WorkflowAccepted, start)


@router.get("/{group_id}", dependencies=[Depends(require_read_key)], responses=GUARDED_READ)
async def group_status(
    group_id: Annotated[str, Path(pattern=TASK_ID_PATTERN)], producer: Producer = Depends(get_producer)
) -> GroupStatus:
    def read() -> GroupStatus:
        saved = producer.restore_group(group_id)
        if saved is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no group {group_id!r} (or its results expired)")
        tasks = [read_status(producer, child.id) for child in saved.results]
        completed = sum(task.state in ("SUCCESS", "FAILURE", "REVOKED") for task in tasks)
        return GroupStatus(group_id=group_id, completed=completed, total=len(tasks), tasks=tasks)

    return await producer.read(read)
