"""Worktree and branch administration of one repository from many threads at once (issue #7).

`git worktree add` writes .git/worktrees/<id>/ in several steps; a concurrent `worktree prune`,
`worktree remove` or `branch -D` reading that folder half-made failed with "could not open
.git/worktrees/<id>/locked" or "failed to read .git/worktrees/<other>/commondir", and a failed
`branch -D` leaked a landed task's branch. ProjectGit serialises that administration.
"""

from __future__ import annotations

import threading
from pathlib import Path

from backend.config import AgentConfig
from backend.dispatcher.workspace import ProjectGit, Workspace
from backend.gitrepo import GitError
from support import git, make_repo

THREADS = 8
CYCLES = 30


def test_concurrent_worktree_and_branch_administration_never_fails(tmp_path: Path):
    project = make_repo(tmp_path)
    pg = ProjectGit(project, AgentConfig(base_branch="main", symlink_files=[], copy_files=[]))
    pg.fetch_base()
    errors: list[str] = []
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        start.wait()
        for cycle in range(CYCLES):
            ws = Workspace(pg, f"race{n}x{cycle}")
            try:
                ws.create(earlier_branch=cycle % 3 == 2)  # also the careful path (remove, prune, add)
                ws.remove()
                pg.delete_branch(ws.branch, maybe_pushed=cycle % 2 == 1)
                if cycle % 4 == 0:
                    pg.prune_worktrees()
            except GitError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert git(project, "branch", "--list", "task/*").strip() == ""  # no leaked task branches
    assert git(project, "worktree", "list", "--porcelain").count("worktree ") == 1  # only the checkout
