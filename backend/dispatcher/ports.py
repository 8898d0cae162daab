"""TASK_PORT allocation: one port per live task, from the configured range."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

PORT_RETRY_SECONDS = 0.5  # a port may be held by another program: nothing tells us when it is free


def _bindable(port: int) -> bool:
    # A port something else on the machine already listens on is no use to a task.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortPool:
    def __init__(self, start: int, end: int) -> None:
        self._ports = range(start, end + 1)
        self._used: dict[int, str] = {}
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)

    def acquire_wait(self, owner: str, stopping: Callable[[], bool]) -> int | None:
        """A free port, waiting for one (a release wakes us at once); None once `stopping()`."""
        while not stopping():
            port = self.acquire(owner)
            if port is not None:
                return port
            with self._freed:
                self._freed.wait(PORT_RETRY_SECONDS)
        return None

    def acquire(self, owner: str) -> int | None:
        """A free port for `owner`, or None when every port is taken."""
        with self._lock:
            for port in self._ports:
                if port not in self._used and _bindable(port):
                    self._used[port] = owner
                    return port
        return None

    def assign(self, port: int, owner: str) -> None:
        """Record who holds an acquired port (e.g. the task claimed for it)."""
        with self._lock:
            self._used[port] = owner

    def release(self, port: int | None) -> None:
        if port is None:
            return
        with self._lock:
            self._used.pop(port, None)
            self._freed.notify_all()

    def in_use(self) -> dict[int, str]:
        with self._lock:
            return dict(self._used)
