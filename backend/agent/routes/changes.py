"""/agent/changes (a delta since a cursor), /agent/changes/stream (the same, live, over SSE) and
/agent/summaries (a page of one status column). The board follows a project through these
instead of re-reading every task; see backend/changefeed.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...changefeed import STATUSES, WINDOW_MAX, ChangeFeed, change_events, parse_cursor
from ...store import StoreError
from ...web.errors import ERROR_RESPONSES, ApiError
from ...web.sse import sse_event
from ..schemas import Changes, SummaryPage
from .health import compute_health

router = APIRouter(prefix="/agent", tags=["changes"], responses=ERROR_RESPONSES)

CURSOR_PATTERN = r"^[A-Za-z0-9]{1,64}\.[0-9]{1,19}$"
SinceQuery = Annotated[str | None, Query(
    description="A cursor from an earlier answer (`<epoch>.<revision>`); absent: the window.",
    pattern=CURSOR_PATTERN)]
WindowQuery = Annotated[int, Query(ge=1, le=WINDOW_MAX, description="Summaries per status in a window.")]


def feed_of(request: Request) -> ChangeFeed:
    return request.app.state.change_feed


def _checked(cursor: str | None) -> str | None:
    if cursor is not None:
        try:
            parse_cursor(cursor)
        except ValueError as exc:
            raise ApiError(400, "invalid_cursor", str(exc)) from None
    return cursor


def board_state(app_state) -> dict:
    """The `state` event's data: health (without the ever-changing uptime), dispatcher, usage.
    While the store cannot be read, the dispatcher and usage are the last ones known (null if
    none yet) and the health says why."""
    health = compute_health(app_state).model_dump(exclude={"uptime_seconds"})
    known = getattr(app_state, "last_board_state", None) or {"dispatcher": None, "usage": None}
    try:
        known = {"dispatcher": app_state.dispatcher.status(), "usage": app_state.change_feed.usage()}
    except StoreError:
        pass
    app_state.last_board_state = known
    return {"health": health, **known}


# Answered as built (JSONResponse): re-validating thousands of summaries per call would cost
# more than computing them; the models document the shape.
@router.get("/changes", response_model=None, responses={200: {"model": Changes}})
async def changes(request: Request, since: SinceQuery = None, window: WindowQuery = 100,
                  state: Annotated[bool, Query(description="Add `state` as the stream's state event has it.")] = False
                  ) -> JSONResponse:
    """Without `since` (or when the cursor is from another agent process, too old or too new):
    `reset` and, per status, the first `window` summaries in `sort` order. Otherwise every
    summary that changed after the cursor and the ids that left the live store (archived).
    With `state=true`, also `state` ({health, dispatcher, usage}): a board's first read in one request."""
    result = await run_in_threadpool(feed_of(request).changes, _checked(since), window)
    if state:
        result["state"] = await run_in_threadpool(board_state, request.app.state)
    return JSONResponse(result)


@router.get("/changes/stream", response_class=StreamingResponse)
async def stream(
    request: Request,
    since: SinceQuery = None,
    window: WindowQuery = 100,
    last_event_id: Annotated[str | None, Header(description="Wins over `since` (an EventSource reconnecting).")] = None,
) -> StreamingResponse:
    """Server-Sent Events: `state` ({health, dispatcher, usage}) first and whenever it changes;
    `changes` (as GET /agent/changes, SSE `id` = its cursor) when there is something or on a
    reset, then each time the store changes; a `: ka` comment every 15 s while nothing happens."""
    since = _checked(last_event_id if last_event_id else since)
    app_state = request.app.state

    async def frames():
        async for name, data, event_id in change_events(
                app_state.change_feed, lambda: board_state(app_state), since, window, request.is_disconnected,
                poll_seconds=app_state.change_poll_seconds):
            yield ": ka\n\n" if not name else sse_event(name, data, event_id)

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/summaries", response_model=None, responses={200: {"model": SummaryPage}})
async def summaries(
    request: Request,
    status: Annotated[str, Query(json_schema_extra={"enum": list(STATUSES)})],
    after: Annotated[str | None, Query(max_length=200, description="The `sort` of the last card held.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    q: Annotated[str | None, Query(max_length=200, description="Case-insensitive substring of title or id.")] = None,
) -> JSONResponse:
    """The summaries of one status with `sort` greater than `after`, ascending; `more`: there are further ones."""
    if status not in STATUSES:
        raise ApiError(400, "invalid_status", f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    result = await run_in_threadpool(feed_of(request).summaries, status, after, limit, q)
    return JSONResponse(result)
