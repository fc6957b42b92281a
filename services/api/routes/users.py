"""/users/signup: the walkthrough's example of fire-and-forget work after a synchronous step."""

from __future__ import annotations

import threading
import uuid

from fastapi import APIRouter, Depends, HTTPException, Request, status

from services.api.catalog import TaskCatalog
from services.api.dependencies import get_catalog, get_producer, require_api_key
from services.api.producer import Producer
from services.api.routes.tasks import UNAVAILABLE
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
    responses={409: {"description": "e-mail already registered"}, **UNAVAILABLE},
)
async def signup(
    body: SignupRequest,
    request: Request,
    catalog: TaskCatalog = Depends(get_catalog),
    producer: Producer = Depends(get_producer),
) -> SignupAccepted:
    users: UserRepository = request.app.state.users
    email = body.email.lower()
    user_id = users.create(email)  # 1. the synchronous part: the user exists now
    if user_id is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="this e-mail is already registered")

    def hand_off() -> dict[str, str]:
        # 2. fire and forget: the response does not wait for the e-mail or the notification
        welcome = catalog.task("send_welcome_email").delay(user_id, email)
        notify = catalog.task("notify_admin_new_signup").delay(user_id)
        return {"send_welcome_email": welcome.id, "notify_admin_new_signup": notify.id}

    try:
        tasks = await producer.publish(hand_off)
    except Exception:
        # Without its welcome e-mail the signup is incomplete: undo it so the client can retry.
        users.delete(email)
        raise
    return SignupAccepted(user_id=user_id, email=email, tasks=tasks)
