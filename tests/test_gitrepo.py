"""git wrappers against real repositories, and the porcelain parser against git's own output."""

from __future__ import annotations

import pytest

from backend.gitrepo import GitError, parse_worktree_porcelain, recent_commits, toplevel, worktree_list
from support import git


def test_worktree_states_from_real_git(repo, tmp_path):
    git(repo, "worktree", "add", "-b", "task/one", str(tmp_path / "wt1"))
    git(repo, "worktree", "add", "--detach", str(tmp_path / "wt2"))
    git(repo, "worktree", "lock", str(tmp_path / "wt1"))
    (tmp_path / "wt3").mkdir()
    git(repo, "worktree", "add", "-b", "task/gone", str(tmp_path / "wt3" / "x"))
    (tmp_path / "wt3" / "x" / ".git").unlink()  # folder no longer a worktree: prunable
    by_path = {w.path: w for w in worktree_list(repo)}
    assert by_path[str(repo)].branch == "main"
    assert by_path[str(tmp_path / "wt1")].locked and by_path[str(tmp_path / "wt1")].branch == "task/one"
    assert by_path[str(tmp_path / "wt2")].detached and by_path[str(tmp_path / "wt2")].branch is None
    assert by_path[str(tmp_path / "wt3" / "x")].prunable


def test_bare_record_is_parsed():
    parsed = parse_worktree_porcelain("worktree /srv/repo.git\nbare\n\n")
    assert parsed[0].bare and parsed[0].head is None


def test_commit_messages_with_separators_and_unicode(repo):
    git(repo, "commit", "--allow-empty", "-m", "fix: handle | and ; and — ünïcode")
    newest = recent_commits(repo, 1)[0]
    assert newest.message == "fix: handle | and ; and — ünïcode"


def test_toplevel_errors_outside_a_repository(tmp_path):
    with pytest.raises(GitError):
        toplevel(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError):
        toplevel(tmp_path / "plain")
