"""/agent/archive: finished tasks that left the live store (see backend/archive.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...models import Task
from ...web.errors import ERROR_RESPONSES
from ..deps import StoreDep

router = APIRouter(prefix="/agent", tags=["tasks"], responses=ERROR_RESPONSES)

PAGE_MAX = 500


class ArchivePage(BaseModel):
    total: int
    offset: int
    limit: int
    tasks: list[Task]


@router.get("/archive", response_model=ArchivePage)
async def archive_page(
    store: StoreDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
) -> ArchivePage:
    """Archived tasks, most recently archived first. `total` counts them all; a task that is
    live again (rerun) is listed with the live tasks, not here."""
    def page() -> ArchivePage:
        live = store.snapshot().tasks
        total, tasks = store.archive.page(offset, limit, exclude=live)
        return ArchivePage(total=total, offset=offset, limit=limit, tasks=tasks)

    return await run_in_threadpool(page)
