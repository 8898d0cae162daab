"""The JSON shapes of tasks as Baton serves them, shared by the agent API and the dashboard's
local connector (which reads a project's store directly when it has no agent)."""

from __future__ import annotations

from .mirrors import render_markdown
from .models import STATUSES, TaskStatus
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


def detail(snap: Snapshot, status: str, task_id: str) -> dict | None:
    """A task plus its mirror's name and text, or None if no such task has that status."""
    task = snap.tasks.get(task_id)
    if task is None or task.status is not TaskStatus(status):
        return None
    return {**task.model_dump(mode="json"), "filename": f"{task.id}.md", "markdown": render_markdown(task)}
