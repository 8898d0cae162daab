"""The one JSON error shape of every Baton HTTP API, and the handlers that produce it.

    {"error": {"status": 404, "code": "not_found", "message": "no task with id 'x'"}}

Validation errors add `details: [{"loc": "body.title", "message": "..."}]`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    502: "bad_gateway",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    loc: str
    message: str


class ErrorInfo(BaseModel):
    status: int
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    """Documented in OpenAPI; every error response has this shape."""

    error: ErrorInfo


class ApiError(HTTPException):
    """Raise from a route to answer with the error shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    info: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        info["details"] = details
    return JSONResponse({"error": info}, status_code=status, headers=headers)


def _loc(parts: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in parts)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.code, exc.message, headers=exc.headers)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    code = _CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            message = f"invalid JSON: {err.get('ctx', {}).get('error', 'cannot be parsed')}"
        elif err.get("type") == "extra_forbidden":
            message = "unknown field"
        details.append({"loc": _loc(err.get("loc", ())), "message": message})
    first = details[0] if details else {"loc": "", "message": "invalid request"}
    summary = f"{first['loc']}: {first['message']}" if first["loc"] else first["message"]
    return error_response(422, "validation_error", summary, details=details)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 405, 409, 413, 415, 422, 503, 507)
}
