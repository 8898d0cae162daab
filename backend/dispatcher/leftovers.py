"""What a test run leaves in a task's worktree, and telling it apart from the agent's work.

Landing starts only after every change the agent made is committed to `task/<id>`, and the
agent does not run while a task lands. So whatever is uncommitted in the worktree during
landing was made by the test command (caches, reports, build output): it is thrown away after
each test run, and by crash recovery when a crash hit a landing (a flag file in the worktree's
own git folder, `<git dir>/baton-landing`, says so; the agent cannot see it from its work tree),
instead of being committed as "work".
"""

from __future__ import annotations

from ..gitrepo import GitError, git_ok
from .workspace import Workspace

LANDING_FLAG = "baton-landing"


def mark_landing(ws: Workspace, safe_tip: str) -> None:
    """Mark the worktree as in the merge queue, naming the branch's last state on landed history."""
    (ws.git_dir() / LANDING_FLAG).write_text(f"landing\n{safe_tip}\n", encoding="utf-8")


def interrupted_while_landing(ws: Workspace) -> bool:
    try:
        return ws.path.exists() and (ws.git_dir() / LANDING_FLAG).exists()
    except (OSError, GitError):
        return False


def discard_test_leftovers(ws: Workspace, tested: str) -> None:
    """Put the worktree back to exactly the tested commit: tracked files the tests changed are
    restored, untracked files they made are removed (ignored ones stay, as `git clean` without
    -x leaves them), and Baton's own files are placed again."""
    ws.reset_branch(tested)


def discard_landing_leftovers(ws: Workspace) -> None:
    """After a crash during landing: abort a half-done rebase, go back to the tip of
    `task/<id>` and drop what the tests left. The agent's work is all in the branch."""
    git_dir = ws.git_dir()
    if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
        git_ok(["rebase", "--abort"], ws.path)
    try:
        head = ws.git.git(["symbolic-ref", "-q", "HEAD"], ws.path).strip()
    except GitError:
        head = ""  # detached
    if head != f"refs/heads/{ws.branch}":
        ws.git.git(["checkout", "-q", "-f", ws.branch], ws.path)
    ws.git.git(["reset", "-q", "--hard"], ws.path)
    ws.git.git(["clean", "-fdq"], ws.path)
    # In the merge queue the branch may sit on a candidate of another task that never landed:
    # back to the task's last rebase onto landed history (the flag's second line), losing nothing
    # of its own.
    lines = (git_dir / LANDING_FLAG).read_text(encoding="utf-8").split()
    safe = lines[1] if len(lines) > 1 else None
    tip = ws.head()
    if safe and safe != tip and ws.git.ref_exists(safe) and not ws.git.is_ancestor(tip, ws.git.base_ref):
        ws.git.git(["reset", "-q", "--hard", safe], ws.path)
    (git_dir / LANDING_FLAG).unlink(missing_ok=True)
