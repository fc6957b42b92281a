"""Error bodies: every error is JSON ``{"error": ..., "detail": ...}``; 422s keep FastAPI's
``detail`` list with the ``loc`` of each bad field."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.producer import ServiceUnavailable
from services.api.task_arguments import ArgumentProblem

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 2


class InvalidArguments(Exception):
    def __init__(self, problems: list[ArgumentProblem]) -> None:
        super().__init__("; ".join(p.msg for p in problems))
        self.problems = problems


def _http_error_name(code: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
    }.get(code, "http_error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return JSONResponse(
            {"error": exc.error, "detail": exc.detail},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(InvalidArguments)
    async def invalid_arguments(request: Request, exc: InvalidArguments) -> JSONResponse:
        return JSONResponse(
            {"error": "validation_error", "detail": [p.as_error() for p in exc.problems]},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"error": "validation_error", "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": _http_error_name(exc.status_code), "detail": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
