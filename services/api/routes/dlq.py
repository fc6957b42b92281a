"""/dlq: see why tasks died, replay them once the fault is fixed, purge them."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.security import APIKeyHeader
from pydantic import Field, StringConstraints

from services.api.dependencies import get_producer, get_settings
from services.api.producer import Producer
from services.api.routes.tasks import UNAVAILABLE
from services.api.schemas import TASK_ID_PATTERN, Strict
from worker.dead_letters import DeadLetter, DeadLetterStore, ReplayOutcome
from worker.settings import Settings

router = APIRouter(prefix="/dlq", tags=["dead letters"], responses=UNAVAILABLE)
_operator_key = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_store(request: Request) -> DeadLetterStore:
    return request.app.state.dead_letters


def require_operator(settings: Settings = Depends(get_settings), given: str | None = Depends(_operator_key)) -> None:
    """Replay and purge act on other people's failed work: they need API_KEY configured *and*
    sent, even where the rest of the API is open."""
    if settings.api_key is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="set API_KEY to enable dead-letter replay and purge")
    if given is None or not hmac.compare_digest(given.encode(), settings.api_key.get_secret_value().encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing or wrong X-API-Key header")


class ReplayRequest(Strict):
    ids: list[Annotated[str, StringConstraints(pattern=TASK_ID_PATTERN)]] | None = Field(default=None, max_length=1000)
    all: bool = False


class ReplayResponse(Strict):
    replayed: int
    failed: int
    outcomes: list[ReplayOutcome]


def _listed(letter: DeadLetter) -> dict[str, Any]:
    return letter.model_dump(exclude={"raw", "traceback"})


@router.get("", summary="Dead letters, oldest first")
async def list_dead_letters(
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    store: DeadLetterStore = Depends(get_store),
    producer: Producer = Depends(get_producer),
) -> list[dict[str, Any]]:
    letters = await producer.publish(lambda: store.list_letters(limit=limit))
    return [_listed(letter) for letter in letters]


@router.get("/{letter_id}", summary="One dead letter with its traceback", responses={404: {}})
async def show_dead_letter(
    letter_id: Annotated[str, Path(pattern=TASK_ID_PATTERN)],
    store: DeadLetterStore = Depends(get_store),
    producer: Producer = Depends(get_producer),
) -> dict[str, Any]:
    letter = await producer.publish(lambda: store.get(letter_id))
    if letter is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dead letter {letter_id!r}")
    return letter.model_dump(exclude={"raw"})


@router.post("/replay", dependencies=[Depends(require_operator)], responses={401: {}, 403: {}})
async def replay_dead_letters(
    body: ReplayRequest, store: DeadLetterStore = Depends(get_store), producer: Producer = Depends(get_producer)
) -> ReplayResponse:
    if body.all == bool(body.ids):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail='give either "ids" or "all": true')
    outcomes = await producer.publish(lambda: store.replay(None if body.all else body.ids))
    ok = sum(outcome.ok for outcome in outcomes)
    return ReplayResponse(replayed=ok, failed=len(outcomes) - ok, outcomes=outcomes)


@router.delete("", dependencies=[Depends(require_operator)], responses={401: {}, 403: {}})
async def purge_dead_letters(
    store: DeadLetterStore = Depends(get_store), producer: Producer = Depends(get_producer)
) -> dict[str, int]:
    return {"purged": await producer.publish(store.purge)}
