"""/api/health and /api/session: the endpoints a browser may call without credentials."""

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
    (and EventSource, which cannot send headers) never keeps the token itself. The cookie holds
    a random session id that expires; failed attempts are throttled."""
    settings = request.app.state.settings
    if not settings.token:
        return Response(status_code=204)
    throttle = request.app.state.login_throttle
    address = request.client.host if request.client else ""
    wait = throttle.retry_after(address)
    if wait:  # even a correct token waits: otherwise the lock-out would still confirm guesses
        raise ApiError(429, "too_many_attempts", f"too many failed sign-ins; try again in {wait} s",
                       headers={"Retry-After": str(wait)})
    # surrogatepass: JSON can carry a lone surrogate, which is just a wrong token.
    if not hmac.compare_digest(body.token.encode("utf-8", "surrogatepass"), settings.token.encode()):
        throttle.failed(address, body.token)
        raise ApiError(401, "unauthorized", "wrong token")
    throttle.succeeded(address)
    sessions = request.app.state.sessions
    response = Response(status_code=204)
    response.set_cookie(SESSION_COOKIE, sessions.create(), max_age=max(1, int(sessions.lifetime)),
                        httponly=True, samesite="strict", path="/")
    return response


@router.delete("/session", status_code=204)
def logout(request: Request) -> Response:
    """End this browser's session on the server and clear its cookie."""
    value = request.cookies.get(SESSION_COOKIE)
    if value:
        request.app.state.sessions.revoke(value)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict", path="/")
    return response
