"""The JSON shapes of tasks as Baton serves them, shared by the agent API and the dashboard's
local connector (which reads a project's store directly when it has no agent)."""

from __future__ import annotations

from collections.abc import Callable

from .mirrors import render_markdown
from .models import STATUSES, Task, TaskStatus
from .store import Snapshot


def counts(snap: Snapshot) -> dict[str, int]:
    out = {status: 0 for status in STATUSES}
    for task in snap.tasks.values():
        out[task.status.value] += 1
    return out


def _ids_by_status(snap: Snapshot) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {status: [] for status in STATUSES}
    for task in snap.tasks.values():
        groups[task.status.value].append(task.id)
    return groups


def _array(snap: Snapshot, ids: list[str]) -> bytes:
    # The store keeps each task's JSON; joining it avoids re-serialising thousands of tasks.
    return b"[" + b",".join(snap.task_json(i) for i in ids) + b"]"


def grouped_json(snap: Snapshot) -> bytes:
    """All tasks grouped by status, every status key present."""
    parts = [b'"%s":%s' % (status.encode(), _array(snap, ids)) for status, ids in _ids_by_status(snap).items()]
    return b"{" + b",".join(parts) + b"}"


def status_json(snap: Snapshot, status: str) -> bytes:
    return _array(snap, _ids_by_status(snap)[status])


def detail(snap: Snapshot, status: str, task_id: str,
           archived: Callable[[str], Task | None] | None = None) -> dict | None:
    """A task plus its mirror's name and text, and the id, title and status of the tasks it
    depends on (`dependencies`) and of the live tasks that depend on it (`dependents`); None if
    no such task has that status (`any`: any status). With `archived` (a lookup in the archive), a task that left
    the live store is found there, and so are finished dependencies."""
    task = snap.tasks.get(task_id)
    if task is None and archived is not None:
        task = archived(task_id)
    if task is None or (status != "any" and task.status is not TaskStatus(status)):
        return None

    def brief(tid: str) -> dict:
        other = snap.tasks.get(tid) or (archived(tid) if archived is not None else None)
        return {"id": tid, "title": other.title if other else None, "status": other.status.value if other else None}

    dependents = [brief(t.id) for t in snap.tasks.values() if task.id in t.depends_on]
    return {**task.model_dump(mode="json"), "filename": f"{task.id}.md", "markdown": render_markdown(task),
            "dependencies": [brief(tid) for tid in task.depends_on], "dependents": dependents}
