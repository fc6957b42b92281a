"""/dlq: see why tasks died, replay them once the fault is fixed, purge them."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import Field, StringConstraints

from services.api.dependencies import get_producer, get_published, require_operator, require_read_key
from services.api.producer import Producer, ResultBackendUnavailable
from services.api.published import PublishedTasks
from services.api.routes.tasks import GUARDED_READ, GUARDED_WRITE, UNAVAILABLE
from services.api.schemas import TASK_ID_PATTERN, ErrorBody, Strict
from worker.dead_letters import DeadLetter, DeadLetterStore, ReplayOutcome

router = APIRouter(prefix="/dlq", tags=["dead letters"], responses=UNAVAILABLE)
logger = logging.getLogger("brokerstack.api")
#: What both stores (worker/dead_letters) put in the outcome of an id they do not hold.
NO_SUCH_LETTER = "no such dead letter"


def get_store(request: Request) -> DeadLetterStore:
    return request.app.state.dead_letters


class ReplayRequest(Strict):
    ids: list[Annotated[str, StringConstraints(pattern=TASK_ID_PATTERN)]] | None = Field(default=None, max_length=1000)
    all: bool = False


class ReplayResponse(Strict):
    replayed: int
    failed: int
    outcomes: list[ReplayOutcome]


def _listed(letter: DeadLetter) -> dict[str, Any]:
    return letter.model_dump(exclude={"raw", "traceback"})


@router.get("", summary="Dead letters, oldest first", dependencies=[Depends(require_read_key)], responses=GUARDED_READ)
async def list_dead_letters(
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    store: DeadLetterStore = Depends(get_store),
    producer: Producer = Depends(get_producer),
) -> list[dict[str, Any]]:
    letters = await producer.publish(lambda: store.list_letters(limit=limit))
    return [_listed(letter) for letter in letters]


@router.get(
    "/{letter_id}",
    summary="One dead letter with its traceback",
    dependencies=[Depends(require_read_key)],
    responses={404: {"model": ErrorBody}, **GUARDED_READ},
)
async def show_dead_letter(
    letter_id: Annotated[str, Path(pattern=TASK_ID_PATTERN)],
    store: DeadLetterStore = Depends(get_store),
    producer: Producer = Depends(get_producer),
) -> dict[str, Any]:
    letter = await producer.publish(lambda: store.get(letter_id))
    if letter is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dead letter {letter_id!r}")
    return letter.model_dump(exclude={"raw"})


@router.post(
    "/replay",
    summary="Replay dead letters as new tasks",
    description=(
        "200: every letter was replayed. 207: some were not (see `outcomes`: an unknown id, or one the "
        "broker did not take, which stays in the store). 404: none of the ids is a dead letter; nothing was replayed."
    ),
    dependencies=[Depends(require_operator)],
    responses={
        207: {"model": ReplayResponse, "description": "some replayed, some not: see outcomes"},
        404: {"model": ErrorBody, "description": "none of the ids is a dead letter"},
        **GUARDED_WRITE,
    },
)
async def replay_dead_letters(
    body: ReplayRequest,
    response: Response,
    store: DeadLetterStore = Depends(get_store),
    producer: Producer = Depends(get_producer),
    published: PublishedTasks = Depends(get_published),
) -> ReplayResponse:
    if body.all == bool(body.ids):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail='give either "ids" or "all": true')
    outcomes = await producer.publish(lambda: store.replay(None if body.all else body.ids))
    new_ids = [outcome.task_id for outcome in outcomes if outcome.ok and outcome.task_id]
    if new_ids:
        try:
            # After the fact (the store chooses the ids as it publishes): a failure here only
            # means the new tasks poll as 404 until a worker starts them.
            await producer.read(lambda: published.record(new_ids))
        except ResultBackendUnavailable as exc:
            logger.warning("replayed %s but could not record it (%s)", ", ".join(new_ids), exc.detail)
    ok = sum(outcome.ok for outcome in outcomes)
    unknown = [outcome.id for outcome in outcomes if not outcome.ok and outcome.error == NO_SUCH_LETTER]
    if outcomes and len(unknown) == len(outcomes):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no dead letter {', '.join(map(repr, unknown))}: nothing replayed"
        )
    if ok < len(outcomes):
        response.status_code = status.HTTP_207_MULTI_STATUS
    return ReplayResponse(replayed=ok, failed=len(outcomes) - ok, outcomes=outcomes)


@router.delete("", dependencies=[Depends(require_operator)], responses=GUARDED_WRITE)
async def purge_dead_letters(
    store: DeadLetterStore = Depends(get_store), producer: Producer = Depends(get_producer)
) -> dict[str, int]:
    return {"purged": await producer.publish(store.purge)}
