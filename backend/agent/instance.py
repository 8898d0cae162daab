"""One baton-agent per repository: an exclusive lock held for the life of the process.

The lock lives in the repository's git common dir (`.git/baton-agent.lock`), which every linked
worktree of the repository shares: two agents on one `.git` would race each other's branches,
worktrees and landings even when they serve different folders.

The OS drops the lock when the process dies, so a crash never leaves a stale lock behind;
the JSON beside it only says who holds it, for the refusal message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from filelock import FileLock, Timeout

from ..fsutil import atomic_write
from ..gitrepo import run_git
from ..models import utcnow


class AlreadyRunningError(Exception):
    pass


def git_common_dir(project_dir: Path) -> Path:
    """The `.git` folder shared by the repository's main checkout and all its linked worktrees."""
    out = run_git(["rev-parse", "--git-common-dir"], project_dir).strip()
    return (project_dir / out).resolve()  # relative to project_dir unless git printed it absolute


class InstanceLock:
    def __init__(self, lock_dir: Path, project_dir: Path) -> None:
        self.lock_dir = lock_dir
        self.project_dir = project_dir
        self.info_path = lock_dir / "baton-agent.json"
        self._lock = FileLock(str(lock_dir / "baton-agent.lock"), timeout=0, thread_local=False)

    @classmethod
    def for_repository(cls, project_dir: Path) -> InstanceLock:
        return cls(git_common_dir(project_dir), project_dir)

    @property
    def repository(self) -> Path:
        return self.lock_dir.parent if self.lock_dir.name == ".git" else self.lock_dir

    def acquire(self, host: str, port: int) -> None:
        """Raises AlreadyRunningError naming the holder; OSError if the lock cannot be created."""
        try:
            self._lock.acquire()
        except Timeout:
            raise AlreadyRunningError(self._describe_holder()) from None
        info = {"pid": os.getpid(), "host": host, "port": port, "project_dir": str(self.project_dir),
                "started_at": utcnow().isoformat()}
        try:
            atomic_write(self.info_path, json.dumps(info).encode(), durable=False)
        except BaseException:
            self._lock.release()
            raise

    def _describe_holder(self) -> str:
        where = f"repository {self.repository}"
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
            return (
                f"another baton-agent is already running for {where} "
                f"(pid {info.get('pid')}, port {info.get('port')}, host {info.get('host')}, "
                f"project folder {info.get('project_dir')}); one agent per repository, linked worktrees included"
            )
        except (OSError, ValueError, AttributeError):
            return f"another baton-agent is already running for {where} (pid unknown)"

    def release(self) -> None:
        if self._lock.is_locked:
            self.info_path.unlink(missing_ok=True)
            self._lock.release()
