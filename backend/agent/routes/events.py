"""/agent/tasks/{id}/events (pages) and /agent/tasks/{id}/stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...dispatcher.events import EventFollower, TaskLogs, read_events
from ...models import TaskStatus
from ...web.errors import ERROR_RESPONSES
from ..deps import SettingsDep, StoreDep
from ..schemas import EventPage
from .tasks import check_id

router = APIRouter(prefix="/agent/tasks", tags=["events"], responses=ERROR_RESPONSES)

STREAM_POLL_SECONDS = 0.2
_OPEN = {TaskStatus.pending, TaskStatus.plan_review, TaskStatus.in_progress}


@router.get("/{task_id}/events", response_model=EventPage)
def events(
    task_id: str,
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
    task_id: str,
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
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after
    follower = EventFollower(TaskLogs(settings.logs_dir, task_id).events, after=start)

    async def feed():
        while True:
            # Look at the status before reading, so every line written before the task
            # ended is sent before the end event.
            task = await run_in_threadpool(store.get, task_id)
            for item in await run_in_threadpool(follower.poll):
                yield f"id: {item['seq']}\nevent: {item.get('kind', 'event')}\ndata: {json.dumps(item)}\n\n"
            if task.status not in _OPEN:
                yield f"event: end\ndata: {json.dumps({'status': task.status.value})}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(STREAM_POLL_SECONDS)

    return StreamingResponse(feed(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
