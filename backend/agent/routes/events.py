"""/agent/tasks/{id}/events (pages) and /agent/tasks/{id}/stream (Server-Sent Events)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...dispatcher.events import TaskLogs, follow_task, read_events
from ...web.errors import ERROR_RESPONSES
from ...web.params import TaskIdPath
from ..deps import SettingsDep, StoreDep
from ..schemas import EventPage
from .tasks import check_id

router = APIRouter(prefix="/agent/tasks", tags=["events"], responses=ERROR_RESPONSES)


@router.get("/{task_id}/events", response_model=EventPage)
def events(
    task_id: TaskIdPath,
    store: StoreDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict:
    """Parsed events with `seq` greater than `after`, oldest first."""
    check_id(task_id)
    store.get(task_id)
    items = read_events(TaskLogs(settings.logs_dir, task_id).events, after, limit)
    return {"task_id": task_id, "events": items, "next_after": items[-1]["seq"] if items else after}


@router.get("/{task_id}/stream", response_class=StreamingResponse)
async def stream(
    task_id: TaskIdPath,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Follows the task live; resumes after `Last-Event-ID`; ends with an `end` event when the
    task is no longer pending or running."""
    check_id(task_id)
    await run_in_threadpool(store.get, task_id)
    start = int(last_event_id) if last_event_id and last_event_id.isascii() and last_event_id.isdigit() else after
    feed = follow_task(TaskLogs(settings.logs_dir, task_id).events, start,
                       lambda: store.get(task_id).status, request.is_disconnected)
    return StreamingResponse(feed, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
