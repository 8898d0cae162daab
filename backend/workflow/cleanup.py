"""Removing the workspaces of a workflow's tasks that are done with them (SPEC 8.5, 8.6).

A workflow task keeps its worktree (`<workspace.root>/<workspace key>`) between runs. The
runner removes it once the task no longer needs it: the task completed or was cancelled, or its
issue left the active states (after each reconcile), and at start-up for issues already
terminal. Removing one: the work left in it is committed to the task's branch first (as crash
recovery does), the `before_remove` hook runs (its failure is logged and ignored), then the
worktree goes; the branch stays.

Only folders a governed task names are touched, and only when they are really inside the
workspace root and git knows them as that task's worktree: a link in their place, a worktree on
another task's branch, or a plain folder (Baton only ever makes worktrees there: a plain one is
someone else's, e.g. a Symphony workspace, or the root was edited to point at other files) is
left alone, its before_remove hook not run.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from ..dispatcher.events import TaskLogs
from ..dispatcher.process import StopRequest, task_marker
from ..dispatcher.recovery import _settle  # the one way Baton keeps a worktree's leftovers
from ..dispatcher.workspace import BRANCH_PREFIX, ProjectGit, Workspace
from ..gitrepo import GitError
from ..models import Task, TaskStatus
from .hooks import run_hook

log = logging.getLogger(__name__)


def workspace_folder(path: Path, root: Path) -> bool:
    """`path` is a real folder (not a link) directly inside the real `root`."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    try:
        return path.resolve(strict=True).parent == Path(root).resolve(strict=True)
    except OSError:
        return False


class WorkspaceCleaner:
    """Removes workflow tasks' workspaces. Blocking (git, the hook): call it in a thread."""

    def __init__(self, git: ProjectGit, policy, logs_dir: Path, hidden_env: Callable[[], Iterable[str]],
                 stop: StopRequest | None = None) -> None:
        self.git = git
        self.policy = policy
        self.logs_dir = logs_dir
        self.hidden_env = hidden_env  # names no process of a task may see (agent.yaml's and the tracker's)
        self.stop = stop or StopRequest()
        self._told: set[str] = set()  # "left alone" lines already logged (a sweep follows every reconcile)

    def _root(self) -> Path:
        return self.policy.live.current.config.workspace.root

    def existing(self, task: Task) -> Path | None:
        """The task's workspace when it is there (a real folder inside the root), else None."""
        try:
            path = self.policy.workspace_path(task)
        except ValueError:
            return None
        return path if workspace_folder(path, self._root()) else None

    def _owner(self, path: Path) -> str | None | bool:
        """The branch of the worktree git knows at `path`; False when git knows none there."""
        here = path.resolve()
        for wt in self.git.worktrees():
            if Path(wt.path).resolve() == here:
                return wt.branch
        return False

    def remove(self, task: Task) -> str | None:
        """Remove the task's workspace; what was done, for the log (None: nothing there)."""
        path = self.existing(task)
        if path is None:
            return None
        owner = self._owner(path)
        if owner is False:
            return self._once(f"left {path} alone: git knows no worktree there, so Baton did not make it")
        if owner != f"{BRANCH_PREFIX}{task.id}":
            return self._once(f"left {path} alone: it is a worktree of {owner or 'a detached HEAD'}, "
                              f"not task {task.id}'s")
        ws = Workspace(self.git, task.id, path)
        if task.status is not TaskStatus.completed:
            if not _settle(ws, f"wip({task.id}): {task.title} [workspace removed]"):
                return f"kept {path}: the work in it could not be committed to {ws.branch}"
        self._before_remove(task, path)
        try:
            ws.remove()
        except GitError as exc:
            return f"could not remove {path}: {exc}"
        return f"removed the workspace {path} of task {task.id} ({task.source.identifier})"

    def _once(self, line: str) -> str | None:
        if line in self._told:
            return None
        self._told.add(line)
        return line

    def _before_remove(self, task: Task, path: Path) -> None:
        spec = self.policy.hook("before_remove")
        if spec is None:
            return
        hidden = set(self.hidden_env())
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        env.update(self.policy.hook_env(task))
        result = run_hook(spec, cwd=path, env=env, log_file=TaskLogs(self.logs_dir, task.id).hooks,
                          stop=self.stop, marker=task_marker(task.id, self.git.project))
        if not result.ok:
            log.warning("task %s: hook before_remove %s (ignored): %s", task.id, result.summary(),
                        result.output_tail[-300:].strip())

    def sweep(self, tasks: Iterable[Task], done_with: Callable[[Task], bool],
              busy: Callable[[str], bool] = lambda task_id: False, *, pending_too: bool = False,
              current: Callable[[str], Task] | None = None) -> list[str]:
        """Remove the workspaces of the governed `tasks` that `done_with` picks, unless a run of
        the task is still winding down (`busy`) or another of `tasks` naming the same folder
        still needs it. Pending tasks only with `pending_too` (at start-up, before anything is
        claimed: otherwise a claim could be making the folder). `current(task_id)` reads a task
        again just before its folder goes (it may have been rerun meanwhile). Never raises."""
        keep = {TaskStatus.in_progress} if pending_too else {TaskStatus.pending, TaskStatus.in_progress}
        governed = [t for t in tasks if self.policy.governs(t)]
        wanted: dict[Path, list[Task]] = {}
        for task in governed:
            try:
                wanted.setdefault(self.policy.workspace_path(task), []).append(task)
            except ValueError:
                continue
        done: list[str] = []
        for path, named in wanted.items():
            if not workspace_folder(path, self._root()):
                continue
            removable = [t for t in named if t.status not in keep and not busy(t.id) and done_with(t)]
            if len(removable) != len(named):
                continue  # a task still needs this folder
            for task in removable:
                try:
                    if current is not None and current(task.id).status in keep:
                        break  # rerun since it was listed: its run needs the folder
                    line = self.remove(task)
                except Exception as exc:  # noqa: BLE001 - one workspace must not stop the others
                    log.exception("task %s: removing its workspace failed", task.id)
                    line = f"removing the workspace of task {task.id} failed: {exc}"
                if line:
                    done.append(line)
                if not path.exists():
                    break
        return done
