"""Worker slots: `max_parallel_workers` bounds coding agents running, nothing else.

A task holds a slot while its agent runs (first turn and feedback turns) and gives it back when
it enters the merge queue; tests and landing cost no slot. A task coming back for a feedback
turn waits for a slot ahead of new claims (`wanted`), so ejected work is not starved.
"""

from __future__ import annotations

import threading

from .process import StopRequest


class WorkerSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._wanted = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        with self._cond:
            return self._used

    def try_take(self) -> bool:
        """For a new claim: only when no feedback turn is waiting for a slot."""
        with self._cond:
            if self._used + self._wanted >= self.limit:
                return False
            self._used += 1
            return True

    def take(self, stop: StopRequest) -> bool:
        """Block until a slot is free (True) or `stop` is requested (False)."""
        stop.listen(self._poke)
        with self._cond:
            self._wanted += 1
            try:
                while self._used >= self.limit and not stop.is_set():
                    self._cond.wait()
                if stop.is_set():
                    return False
                self._used += 1
                return True
            finally:
                self._wanted -= 1

    def resize(self, limit: int) -> None:
        """A new bound for the next takes (a workflow's max_concurrent_agents changed); work
        holding slots keeps them, so a smaller limit is reached as that work gives them back."""
        if limit < 1:
            raise ValueError(f"a worker limit must be at least 1, not {limit}")
        with self._cond:
            self.limit = limit
            self._cond.notify_all()  # a feedback turn waiting in take() may fit now

    def give(self) -> None:
        with self._cond:
            self._used = max(0, self._used - 1)
            self._cond.notify_all()

    def _poke(self) -> None:
        with self._cond:
            self._cond.notify_all()
