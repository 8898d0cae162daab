"""Tasks by id for one pass over plans: the store's snapshot, taken once, and the archive for
ids it lacks, each read once (a plan names tasks by id; store.get per task re-checks the file)."""

from __future__ import annotations

from ..models import Task
from ..store import TaskStore
from ..storeformat import Snapshot


class TaskLookup:
    def __init__(self, store: TaskStore, snap: Snapshot | None = None) -> None:
        self.store = store
        self.snap = snap if snap is not None else store.snapshot()
        self.live = self.snap.tasks
        self._archived: dict[str, Task | None] = {}

    def get(self, task_id: str, archived: bool = True) -> Task | None:
        """The live task, else (with `archived`) the archived one; None when neither exists."""
        task = self.live.get(task_id)
        if task is not None or not archived:
            return task
        if task_id not in self._archived:
            self._archived[task_id] = self.store.archive.get(task_id)
        return self._archived[task_id]

    def by_plan(self) -> dict[str, dict[str, str]]:
        """{plan id: {ref: task id}} of the live tasks plans created."""
        found: dict[str, dict[str, str]] = {}
        for task in self.live.values():
            if task.plan_id is not None and task.ref is not None:
                found.setdefault(task.plan_id, {})[task.ref] = task.id
        return found


def fingerprint(snap: Snapshot) -> tuple:
    """What of the store a plan's state depends on: the tasks carrying a plan id, with what
    `follow.decide` reads of them. A heartbeat or any other task's write leaves it as it was."""
    return tuple((t.id, t.plan_id, t.ref, t.status, t.title, t.error_reason, t.error_message)
                 for t in snap.tasks.values() if t.plan_id is not None)
