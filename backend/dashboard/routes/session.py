"""/api/health and /api/session: the two endpoints a browser may call without credentials."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from ... import __version__
from ...web.errors import ApiError
from ..settings import SESSION_COOKIE

router = APIRouter(prefix="/api", tags=["session"])


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str


@router.get("/health")
def health(request: Request) -> dict:
    settings = request.app.state.settings
    return {"status": "ok", "version": __version__, "auth": bool(settings.token)}


@router.post("/session", status_code=204)
def login(body: Login, request: Request) -> Response:
    """Trade the dashboard token for an HttpOnly, SameSite=Strict session cookie, so the page
    (and EventSource, which cannot send headers) never keeps the token itself."""
    settings = request.app.state.settings
    if not settings.token:
        return Response(status_code=204)
    if not hmac.compare_digest(body.token.encode(), settings.token.encode()):
        raise ApiError(401, "unauthorized", "wrong token")
    response = Response(status_code=204)
    response.set_cookie(SESSION_COOKIE, settings.session_value, httponly=True, samesite="strict", path="/")
    return response
