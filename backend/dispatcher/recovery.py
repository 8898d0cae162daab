"""Start-up reconciliation after a crash: no task stays in_progress without a live owner.

Runs before the dispatcher claims anything, while this agent holds the project's instance lock,
so a task in_progress under another owner instance has no live dispatcher behind it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config import AgentConfig
from ..gitrepo import GitError, run_git
from ..models import Owner, Task, TaskStatus, is_valid_task_id
from ..store import TaskStore
from .process import group_alive, kill_group
from .workspace import BRANCH_PREFIX, ProjectGit, Workspace

log = logging.getLogger(__name__)


def reconcile(store: TaskStore, git: ProjectGit, config: AgentConfig, owner: Owner) -> list[str]:
    """Bring store, worktrees and branches back in line. Returns what was done, for the log."""
    done: list[str] = []
    try:
        git.fetch_base()
    except GitError as exc:
        done.append(f"could not fetch {git.base_ref}: {exc}")
    for task in store.list_tasks():
        if task.status is TaskStatus.in_progress and (task.owner is None or task.owner.instance != owner.instance):
            done.append(_recover(store, git, config, task))
    done += _prune_worktrees(store, git)
    done += _prune_landed_branches(store, git)
    done += _remove_stale_index_locks(git.project)
    return [d for d in done if d]


def _recover(store: TaskStore, git: ProjectGit, config: AgentConfig, task: Task) -> str:
    if task.agent_pid and _is_our_agent(task.agent_pid, task.id):
        kill_group(task.agent_pid)
    ws = Workspace(git, task.id)
    if task.commit_sha and git.ref_exists(task.commit_sha) and git.is_ancestor(task.commit_sha, git.base_ref):
        # It was pushed before the crash; only the bookkeeping was lost.
        store.transition(task.id, TaskStatus.completed, commit_sha=task.commit_sha, agent_pid=None)
        _remove(ws)
        git.delete_branch(ws.branch)
        return f"task {task.id}: had landed before the crash; marked completed"
    if ws.path.exists():
        try:
            ws.save_work(f"wip({task.id}): {task.title} [interrupted]")
        except GitError as exc:
            log.warning("task %s: could not commit interrupted work: %s", task.id, exc)
    _remove(ws)
    if task.attempts >= config.max_attempts:
        store.transition(
            task.id, TaskStatus.failed, error_reason="internal", agent_pid=None, commit_sha=None,
            error_message=f"interrupted {task.attempts} times (agent restarts); giving up. Branch {ws.branch} kept.",
        )
        return f"task {task.id}: interrupted {task.attempts} times; failed"
    store.transition(task.id, TaskStatus.pending, agent_pid=None, commit_sha=None)
    return f"task {task.id}: owner gone; back to pending (attempt {task.attempts} of {config.max_attempts})"


def _is_our_agent(pid: int, task_id: str) -> bool:
    """Is `pid` still the agent process Baton started for this task (not a reused pid)?"""
    if not group_alive(pid):
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"TASK_ID={task_id}".encode() in environ


def _remove(ws: Workspace) -> None:
    try:
        ws.remove()
    except GitError as exc:
        log.warning("could not remove worktree %s: %s", ws.path, exc)


def _prune_worktrees(store: TaskStore, git: ProjectGit) -> list[str]:
    """Worktrees of tasks that are not running are leftovers: keep their work, then remove."""
    done = []
    if git.worktrees_dir.is_dir():
        tasks = store.snapshot().tasks
        for path in sorted(git.worktrees_dir.iterdir()):
            task = tasks.get(path.name)
            if not is_valid_task_id(path.name) or not path.is_dir():
                continue
            if task is not None and task.status is TaskStatus.in_progress:
                continue
            ws = Workspace(git, path.name)
            if task is not None and task.status is not TaskStatus.completed and (path / ".git").exists():
                try:
                    ws.save_work(f"wip({task.id}): {task.title} [left in a worktree]")
                except GitError as exc:
                    log.warning("could not commit leftovers in %s: %s", path, exc)
            _remove(ws)
            done.append(f"removed orphaned worktree {path.name}")
    git.prune_worktrees()
    return done


def _prune_landed_branches(store: TaskStore, git: ProjectGit) -> list[str]:
    tasks = store.snapshot().tasks
    done = []
    refs = run_git(["for-each-ref", "--format=%(refname:short)", f"refs/heads/{BRANCH_PREFIX}"], git.project)
    for branch in refs.split():
        task = tasks.get(branch.removeprefix(BRANCH_PREFIX))
        if task is not None and task.status is TaskStatus.completed:
            git.delete_branch(branch)
            done.append(f"deleted landed branch {branch}")
    return done


def _remove_stale_index_locks(project: Path) -> list[str]:
    """An index.lock git left behind can only be told from a live one by the absence of a git
    process; at start-up none of ours runs, so remove locks when no git process works here."""
    git_dir = Path(run_git(["rev-parse", "--absolute-git-dir"], project).strip())
    locks = [git_dir / "index.lock", *git_dir.glob("worktrees/*/index.lock")]
    locks = [lock for lock in locks if lock.exists()]
    if not locks or _git_running_in(project):
        return []
    for lock in locks:
        lock.unlink(missing_ok=True)
    return [f"removed stale {lock}" for lock in locks]


def _git_running_in(project: Path) -> bool:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if (entry / "comm").read_text().strip() != "git":
                continue
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if cwd == project or project in cwd.parents:
            return True
    return False

