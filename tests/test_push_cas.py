"""Landing's push is an exact compare-and-swap on the base sha Baton fetched itself, so a
remote-tracking ref moved behind Baton's back (by a process that escaped the ref guard) cannot
smuggle a commit onto the remote base."""

from __future__ import annotations

from backend.config import AgentConfig
from backend.dispatcher.workspace import ProjectGit
from support import git, origin_of


def test_a_push_based_on_a_forged_tracking_ref_is_rejected(repo):
    real = git(repo, "rev-parse", "origin/main").strip()
    # A commit that never reached the remote, made to look like the remote base.
    git(repo, "commit", "-q", "--allow-empty", "-m", "forged base")
    forged = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "update-ref", "refs/remotes/origin/main", forged)
    git(repo, "commit", "-q", "--allow-empty", "-m", "task work on the forged base")
    tip = git(repo, "rev-parse", "HEAD").strip()

    project_git = ProjectGit(repo, AgentConfig(base_branch="main"))
    result = project_git.push_base(repo, tip, expected=forged)
    assert not result.ok and result.rejected  # -> fetch, rebase onto the real base, test again
    assert git(origin_of(repo), "rev-parse", "main").strip() == real

    # Against the real base sha the same kind of push goes through.
    git(repo, "update-ref", "refs/remotes/origin/main", real)
    assert project_git.push_base(repo, real, expected=real).ok
