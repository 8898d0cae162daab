"""GET /agent/context: what the dashboard's chat tells the model about this project (README,
CLAUDE.md, a file tree, recent commits, open tasks), each part bounded (backend/chat/context.py)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...chat.context import base_ref, read_context
from ...web.errors import ERROR_RESPONSES
from ..deps import SettingsDep, StoreDep

router = APIRouter(prefix="/agent", tags=["chat"], responses=ERROR_RESPONSES)


class ContextCommit(BaseModel):
    sha: str
    subject: str
    author: str
    date: str


class ContextTask(BaseModel):
    id: str
    title: str
    status: str
    depends_on: list[str]


class ProjectContext(BaseModel):
    project_id: str
    readme: str | None  # README.md (or README, README.rst…), at most 16 KiB
    claude_md: str | None  # CLAUDE.md, at most 16 KiB
    tree: list[str]  # `git ls-files`, at most 400 paths
    tree_truncated: bool
    commits: list[ContextCommit]  # the base branch's last 20
    open_tasks: list[ContextTask]  # pending, blocked, plan_review, in_progress, review: at most 100
    open_tasks_total: int


@router.get("/context", response_model=ProjectContext)
async def context(settings: SettingsDep, store: StoreDep) -> dict:
    """The project as the chat model sees it. Text comes from the checkout (the person's view);
    commits from the base branch."""

    def gather() -> dict:
        ref = base_ref(settings.project_dir, settings.config.base_branch, settings.config.remote)
        return read_context(settings.project_id, settings.project_dir, ref, store.list_tasks())

    return await run_in_threadpool(gather)
