"""Does the test command pass on the base commit itself?

Asked when the tests fail on a rebased task branch: if they fail on the base too (no tests at
all, a broken suite on main), feedback turns cannot fix that and only cost money, so the task
fails `tests_broken_on_base` at once. The answer is cached per (command, base sha) in the
process (a failure for FAILURE_TTL only) and computed at most once even when asked concurrently.

The base runs in a detached worktree of Baton's own, `worktrees/.base-<sha>`, removed
afterwards; crash recovery removes a leftover one (`remove_leftovers`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..gitrepo import GitError
from .process import ProcessOutcome
from .workspace import ProjectGit, Workspace

log = logging.getLogger(__name__)

BASE_PREFIX = ".base-"  # never a task id (those are [a-z0-9]+), so no task worktree clashes

# (argv, cwd) -> (outcome, tail of the output)
BaseRunner = Callable[[list[str], Path], tuple[ProcessOutcome, str]]


@dataclass(frozen=True)
class BaseVerdict:
    passed: bool
    summary: str  # "exit status 5", "timed out after 900s"
    output: str  # the end of what the command printed


FAILURE_TTL = 600.0  # seconds a "fails on the base" verdict is trusted (a flaky run must not stick)


class BaseTests:
    """One per dispatcher (shared by its task runs)."""

    def __init__(self, failure_ttl: float = FAILURE_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._results: dict[tuple[str, str], tuple[BaseVerdict, float]] = {}
        self._running: dict[tuple[str, str], threading.Lock] = {}
        self._failure_ttl = failure_ttl
        self._clock = clock

    def _cached(self, key: tuple[str, str]) -> BaseVerdict | None:
        found = self._results.get(key)
        if found is None:
            return None
        verdict, at = found
        # A pass is final for that sha. A failure is re-checked after a while: nothing lands
        # while it stands, so the base would never move and one flaky run would block forever.
        if not verdict.passed and self._clock() - at > self._failure_ttl:
            del self._results[key]
            return None
        return verdict

    def verdict(self, git: ProjectGit, command: str, argv: list[str], sha: str, timeout: float,
                run: BaseRunner) -> tuple[BaseVerdict | None, bool]:
        """(verdict, came from the cache). None when the run was stopped (nothing is cached)."""
        key = (command, sha)
        with self._lock:
            if (cached := self._cached(key)) is not None:
                return cached, True
            key_lock = self._running.setdefault(key, threading.Lock())
        with key_lock:  # a second asker waits for the first one's answer
            with self._lock:
                if (cached := self._cached(key)) is not None:
                    return cached, True
            verdict = _run_on_base(git, argv, sha, timeout, run)
            if verdict is not None:
                with self._lock:
                    self._results[key] = (verdict, self._clock())
                    self._running.pop(key, None)
            return verdict, False


def base_workspace(git: ProjectGit, sha: str) -> Workspace:
    return Workspace(git, BASE_PREFIX + sha[:12])


def _run_on_base(git: ProjectGit, argv: list[str], sha: str, timeout: float, run: BaseRunner) -> BaseVerdict | None:
    ws = base_workspace(git, sha)
    if ws.path.exists() or ws.registered():
        ws.remove()
    git.worktrees_dir.mkdir(exist_ok=True)
    with git.admin_lock:
        git.git(["worktree", "add", "--quiet", "--detach", str(ws.path), sha])
    try:
        ws.place_files()  # the same linked and copied files the task's tests saw
        outcome, output = run(argv, ws.path)
    finally:
        try:
            ws.remove()
        except GitError as exc:
            log.warning("could not remove %s: %s", ws.path, exc)
    if outcome.stopped == "timeout":
        return BaseVerdict(False, f"timed out after {timeout:g}s", output)
    if outcome.stopped:
        return None
    return BaseVerdict(outcome.exit_code == 0, f"exit status {outcome.exit_code}", output)


def remove_leftovers(git: ProjectGit) -> list[str]:
    """Crash recovery: base worktrees a crashed process left behind."""
    done = []
    registered = {Path(w.path) for w in git.worktrees()}
    found = set(git.worktrees_dir.glob(BASE_PREFIX + "*")) if git.worktrees_dir.is_dir() else set()
    found |= {p for p in registered if p.parent == git.worktrees_dir and p.name.startswith(BASE_PREFIX)}
    for path in sorted(found):
        Workspace(git, path.name).remove()
        done.append(f"removed leftover base-test worktree {path.name}")
    return done
