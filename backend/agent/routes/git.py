"""/agent/worktrees and /agent/commits: read-only views of the project's repository."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...gitrepo import recent_commits, ref_exists, worktree_list
from ...web.errors import ERROR_RESPONSES
from ..deps import SettingsDep
from ..schemas import CommitOut, WorktreeList

router = APIRouter(prefix="/agent", tags=["git"], responses=ERROR_RESPONSES)


@router.get("/worktrees", response_model=WorktreeList)
def worktrees(settings: SettingsDep) -> WorktreeList:
    """`git worktree list --porcelain`, parsed."""
    return WorktreeList(worktrees=[w.to_dict() for w in worktree_list(settings.project_dir)])


@router.get("/commits", response_model=list[CommitOut])
def commits(settings: SettingsDep, count: Annotated[int, Query(ge=1, le=500)] = 10) -> list[CommitOut]:
    """The newest commits of the base branch (local, else the remote's; HEAD when neither exists), newest
    first: a JSON list, as in the original design."""
    repo = settings.project_dir
    base, remote = settings.config.base_branch, settings.config.remote
    # A configured base may exist only as the remote's branch; HEAD is the last resort.
    candidates = (f"refs/heads/{base}", f"refs/remotes/{remote}/{base}")
    ref = next((r for r in candidates if ref_exists(repo, r)), "HEAD")
    return [CommitOut(**c.to_dict()) for c in recent_commits(repo, count, ref)]
