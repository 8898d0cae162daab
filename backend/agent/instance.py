"""One baton-agent per project: an exclusive lock held for the life of the process.

The OS drops the lock when the process dies, so a crash never leaves a stale lock behind;
the JSON beside it only says who holds it, for the refusal message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from filelock import FileLock, Timeout

from ..fsutil import atomic_write
from ..models import utcnow


class AlreadyRunningError(Exception):
    pass


class InstanceLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.info_path = data_dir / "baton-agent.json"
        self._lock = FileLock(str(data_dir / "baton-agent.lock"), timeout=0, thread_local=False)

    def acquire(self, host: str, port: int) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise AlreadyRunningError(self._describe_holder()) from None
        info = {"pid": os.getpid(), "host": host, "port": port, "started_at": utcnow().isoformat()}
        atomic_write(self.info_path, json.dumps(info).encode(), durable=False)

    def _describe_holder(self) -> str:
        where = f"project {self.data_dir.parent}"
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
            return (
                f"another baton-agent is already running for {where} "
                f"(pid {info.get('pid')}, port {info.get('port')}, host {info.get('host')})"
            )
        except (OSError, ValueError, AttributeError):
            return f"another baton-agent is already running for {where} (pid unknown)"

    def release(self) -> None:
        if self._lock.is_locked:
            self.info_path.unlink(missing_ok=True)
            self._lock.release()
