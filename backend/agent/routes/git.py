"""/agent/worktrees and /agent/commits: read-only views of the project's repository."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...gitrepo import recent_commits, ref_exists, worktree_list
from ...web.errors import ERROR_RESPONSES
from ..deps import SettingsDep
from ..schemas import CommitList, WorktreeList

router = APIRouter(prefix="/agent", tags=["git"], responses=ERROR_RESPONSES)


@router.get("/worktrees", response_model=WorktreeList)
def worktrees(settings: SettingsDep) -> WorktreeList:
    """`git worktree list --porcelain`, parsed."""
    return WorktreeList(worktrees=[w.to_dict() for w in worktree_list(settings.project_dir)])


@router.get("/commits", response_model=CommitList)
def commits(settings: SettingsDep, count: Annotated[int, Query(ge=1, le=500)] = 10) -> CommitList:
    """The newest commits of the base branch (or HEAD when the base branch does not exist)."""
    repo = settings.project_dir
    base = settings.config.base_branch
    ref = f"refs/heads/{base}" if ref_exists(repo, f"refs/heads/{base}") else "HEAD"
    return CommitList(commits=[c.to_dict() for c in recent_commits(repo, count, ref)])
