"""/users/signup: the walkthrough's example of fire-and-forget work after a synchronous step."""

from __future__ import annotations

import threading
import uuid

from fastapi import APIRouter, Depends, HTTPException, Request, status

from services.api.catalog import TaskCatalog
from services.api.dependencies import get_catalog, get_idempotency, get_producer, get_published, require_api_key
from services.api.idempotency import Idempotency, answer_once
from services.api.producer import Producer
from services.api.published import PublishedTasks, publish_recorded
from services.api.routes.tasks import GUARDED_WRITE, IDEMPOTENT, UNAVAILABLE
from services.api.schemas import SignupAccepted, SignupRequest

router = APIRouter(prefix="/users", tags=["users"])


class UserRepository:
    """Stands in for the application's database (in memory, per API process)."""

    def __init__(self) -> None:
        self._by_email: dict[str, str] = {}
        self._lock = threading.Lock()

    def create(self, email: str) -> str | None:
        """The new user's id, or None if the e-mail is taken."""
        with self._lock:
            if email in self._by_email:
                return None
            self._by_email[email] = user_id = uuid.uuid4().hex
            return user_id

    def delete(self, email: str) -> None:
        with self._lock:
            self._by_email.pop(email, None)


@router.post(
    "/signup",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_api_key)],
    responses={
        **IDEMPOTENT,
        409: {"description": "e-mail already registered, or a request with this Idempotency-Key is still in flight"},
        **GUARDED_WRITE,
        **UNAVAILABLE,
    },
)
async def signup(
    body: SignupRequest,
    request: Request,
    catalog: TaskCatalog = Depends(get_catalog),
    producer: Producer = Depends(get_producer),
    published: PublishedTasks = Depends(get_published),
    idempotency: Idempotency = Depends(get_idempotency),
) -> SignupAccepted:
    users: UserRepository = request.app.state.users
    email = body.email.lower()
    # A retry with the key of a signup that went through gets its answer, not "already registered".
    held = await idempotency.claim("POST /users/signup", body.model_dump(mode="json"))
    tasks = {"send_welcome_email": held.task_id(0), "notify_admin_new_signup": held.task_id(1)}

    async def start() -> SignupAccepted:
        user_id = users.create(email)  # 1. the synchronous part: the user exists now
        if user_id is None:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="this e-mail is already registered")

        def hand_off() -> None:
            # 2. fire and forget: the response does not wait for the e-mail or the notification
            catalog.task("send_welcome_email").apply_async((user_id, email), task_id=tasks["send_welcome_email"])
            catalog.task("notify_admin_new_signup").apply_async((user_id,), task_id=tasks["notify_admin_new_signup"])

        try:
            await publish_recorded(producer, published, list(tasks.values()), hand_off)
        except Exception:
            # Without its welcome e-mail the signup is incomplete: undo it so the client can retry.
            users.delete(email)
            raise
        return SignupAccepted(user_id=user_id, email=email, tasks=tasks)

    return await answer_once(held, SignupAccepted, start)
