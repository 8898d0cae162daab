"""Start-up reconciliation after a crash: no task stays in_progress without a live owner.

Runs before the dispatcher claims anything, while this agent holds the project's instance lock,
so a task in_progress under another owner instance has no live dispatcher behind it.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from pathlib import Path

from ..config import AgentConfig
from ..gitrepo import DEFAULT_TIMEOUT, GitError, run_git
from ..models import Owner, Task, TaskStatus, is_valid_task_id
from ..store import TaskStore
from .basetests import remove_leftovers as remove_base_test_worktrees
from .leftovers import discard_landing_leftovers, interrupted_while_landing
from .process import find_processes, group_alive, stop_processes, task_marker
from .workspace import BRANCH_PREFIX, ProjectGit, Workspace

log = logging.getLogger(__name__)


def reconcile(store: TaskStore, git: ProjectGit, config: AgentConfig, owner: Owner) -> list[str]:
    """Bring store, worktrees and branches back in line. Returns what was done, for the log.
    Each step stands alone: one that fails is reported and the others still run."""
    done: list[str] = []

    def step(what: str, action) -> None:
        try:
            result = action()
        except Exception as exc:  # noqa: BLE001 - recovery must not stop the agent from starting
            log.exception("recovery: %s failed", what)
            done.append(f"{what} failed: {exc}")
            return
        if isinstance(result, list):
            done.extend(result)
        elif result:
            done.append(result)

    orphans = [t for t in store.list_tasks() if t.status is TaskStatus.in_progress
               and (t.owner is None or t.owner.instance != owner.instance)]
    # Before the base is fetched and judged: a push the dead instance started may still land.
    for task in orphans:
        step(f"stopping what task {task.id} left running", lambda task=task: _stop_leftovers(task, git))
    step(f"fetching {git.base_ref}", git.fetch_base)
    for task in orphans:
        step(f"recovering task {task.id}", lambda task=task: _recover(store, git, config, task))
    step("removing base-test worktrees", lambda: remove_base_test_worktrees(git))
    step("pruning worktrees", lambda: _prune_worktrees(store, git))
    step("pruning landed branches", lambda: _prune_landed_branches(store, git))
    step("removing stale index locks", lambda: _remove_stale_index_locks(git.project))
    return done


def _task_workspace(git: ProjectGit, task: Task) -> Workspace:
    """The task's worktree: a WORKFLOW.md task's lives under the workflow's workspace root (its
    recorded `worktree`), trusted only when git registers that folder as a worktree."""
    default = Workspace(git, task.id)
    if task.worktree and Path(task.worktree) != default.path and Path(task.worktree).is_absolute():
        recorded = Workspace(git, task.id, Path(task.worktree))
        if recorded.registered():
            return recorded
    return default


def _recover(store: TaskStore, git: ProjectGit, config: AgentConfig, task: Task) -> str:
    ws = _task_workspace(git, task)
    # A WORKFLOW.md task's workspace is kept between its runs, as a clean stop keeps it (the next
    # run reuses it without after_create; the workflow's cleanup removes it, before_remove first).
    kept_between_runs = ws.path != Workspace(git, task.id).path
    saved = _settle(ws, f"wip({task.id}): {task.title} [interrupted]")
    landed = (
        task.commit_sha is not None
        and git.ref_exists(task.commit_sha)
        and git.is_ancestor(task.commit_sha, git.base_ref)
    )
    if landed:
        # It was pushed before the crash; only the bookkeeping was lost.
        store.transition(task.id, TaskStatus.completed, commit_sha=task.commit_sha, agent_pid=None)
        branch = f"refs/heads/{ws.branch}"
        tip = git.rev(branch) if git.ref_exists(branch) else None
        if saved and (tip is None or git.is_ancestor(tip, git.base_ref)):
            _remove(ws)
            git.delete_branch(ws.branch)
        return f"task {task.id}: had landed before the crash; marked completed"
    if saved and not kept_between_runs:
        _remove(ws)
    if task.attempts >= config.max_attempts:
        store.transition(
            task.id, TaskStatus.failed, error_reason="internal", agent_pid=None, commit_sha=None,
            error_message=f"interrupted {task.attempts} times (agent restarts); giving up. Branch {ws.branch} kept.",
        )
        return f"task {task.id}: interrupted {task.attempts} times; failed"
    store.transition(task.id, TaskStatus.pending, agent_pid=None, commit_sha=None)
    return f"task {task.id}: owner gone; back to pending (attempt {task.attempts} of {config.max_attempts})"


def _settle(ws: Workspace, message: str) -> bool:
    """Keep the agent's work, drop the test run's. False (worktree kept) if that failed."""
    if interrupted_while_landing(ws):
        # Everything of the agent was committed before landing began: what is uncommitted now
        # is the test run's (caches, reports) and must not become a commit of the task.
        return _discard(ws)
    return _save(ws, message)


def _save(ws: Workspace, message: str) -> bool:
    """Commit a worktree's work to its branch. False (worktree kept) if that failed."""
    if not ws.path.exists():
        return True
    try:
        try:
            ws.save_work(message)
        except GitError:
            if not ws.remove_stale_index_lock():  # our processes are gone: a lock is stale
                raise
            ws.save_work(message)
    except (GitError, OSError) as exc:
        log.warning("task %s: work left in %s, could not commit it: %s", ws.task_id, ws.path, exc)
        return False
    return True


def _discard(ws: Workspace) -> bool:
    """Drop a landing's leftovers. False (worktree kept) if that failed."""
    try:
        try:
            discard_landing_leftovers(ws)
        except GitError:
            if not ws.remove_stale_index_lock():  # our processes are gone: a lock is stale
                raise
            discard_landing_leftovers(ws)
    except (GitError, OSError) as exc:
        log.warning("task %s: could not clean up %s after an interrupted landing: %s", ws.task_id, ws.path, exc)
        return False
    return True


def _stop_leftovers(task: Task, git: ProjectGit) -> str | None:
    """Stop every process the crashed agent left running for this task: all that carry the
    task's marker (however they detached), plus its recorded process group when that is
    still the task's. Then let Baton's own git commands in the task's worktree finish."""
    marker = task_marker(task.id, git.project)
    members = _leftover_group_members(task)
    pgid = task.agent_pid if members else None
    if pgid is not None or find_processes(None, marker):
        stop_processes(pgid, marker, known=members)
    return _finish_orphaned_git(_task_workspace(git, task).path)


def _finish_orphaned_git(path: Path) -> str | None:
    """A git command of the dead instance (a push of the merge queue's prefix, a rebase) goes on
    without it: a push may still move the base, and a rebase still writes the worktree. The
    task's own processes are stopped by now, so what runs git here is Baton's. Wait for it as
    long as the live agent would have (its git timeout), then kill it as that timeout would."""
    procs = _git_processes_in(path)
    if not procs:
        return None
    log.info("recovery: waiting up to %gs for git %s left running in %s", DEFAULT_TIMEOUT, sorted(procs), path)
    killed = _wait_exit(procs, DEFAULT_TIMEOUT)
    if killed:
        return f"killed git {killed} left running in {path} for {DEFAULT_TIMEOUT:g}s"
    return f"waited for git left running in {path}"


def _wait_exit(procs: dict[int, int], timeout: float) -> list[int]:
    """Wait for processes {pid: start time} to exit (a pidfd turns readable); SIGKILL those
    still there after `timeout`. Returns the pids killed."""
    deadline = time.monotonic() + timeout
    fds: dict[int, int] = {}
    try:
        for pid, start in procs.items():
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            fds[fd] = pid
            if _start_time(pid) != start:  # checked after pinning it: not a reused pid
                fds.pop(fd)
                os.close(fd)
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        waiting = set(fds)
        while waiting and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                waiting.discard(fd)
        for fd in waiting:
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return sorted(fds[fd] for fd in waiting)
    finally:
        for fd in fds:
            os.close(fd)


def _leftover_group_members(task: Task) -> set[tuple[int, int]]:
    """(pid, start time) of the members of the task's recorded process group that carry
    TASK_ID=<id> in their environment (the leader may be gone; a reused pid is never hit).
    Only TASK_ID: an agent from before BATON_PROJECT existed set nothing else."""
    if not task.agent_pid or not group_alive(task.agent_pid):
        return set()
    marker = f"TASK_ID={task.id}".encode()
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == task.agent_pid and marker in (entry / "environ").read_bytes().split(b"\0"):
                members.add((int(entry.name), int(fields[19])))
        except (OSError, ValueError, IndexError):
            continue
    return members


def _remove(ws: Workspace) -> None:
    try:
        ws.remove()
    except GitError as exc:
        log.warning("could not remove worktree %s: %s", ws.path, exc)


def _prune_worktrees(store: TaskStore, git: ProjectGit) -> list[str]:
    """Task worktrees of tasks that are not running are leftovers: keep their work, then
    remove them. Only worktrees git knows, on their task's branch: anything else is left."""
    done = []
    tasks = store.snapshot().tasks
    for wt in git.worktrees():  # under the repository's worktree administration lock
        path = Path(wt.path)
        if path.parent != git.worktrees_dir or not is_valid_task_id(path.name):
            continue
        task = tasks.get(path.name)
        if task is not None and task.status is TaskStatus.in_progress:
            continue
        if wt.branch != f"{BRANCH_PREFIX}{path.name}" and not wt.detached:
            done.append(f"left {path} alone: it is on {wt.branch}, not its Baton task branch")
            continue
        ws = Workspace(git, path.name)
        if (task is None or task.status is not TaskStatus.completed) and not _settle(ws, f"wip({path.name}): left in a worktree"):
            done.append(f"kept worktree {path.name}: its work could not be committed")
            continue
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
    return bool(_git_processes_in(project))


def _git_processes_in(folder: Path) -> dict[int, int]:
    """git processes working in `folder` or below it, as {pid: start time}."""
    me, found = os.getpid(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if (entry / "comm").read_text().strip() != "git":
                continue
            cwd = Path(os.readlink(entry / "cwd"))
            start = _start_time(int(entry.name))
        except OSError:
            continue
        if start is not None and (cwd == folder or folder in cwd.parents):
            found[int(entry.name)] = start
    return found


def _start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None

