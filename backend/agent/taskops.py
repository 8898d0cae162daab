"""Cancelling a task, as the agent does it: shared by POST /agent/tasks/{id}/cancel and the
agent's own tracker sync (backend/workflow/taskside.py), so both stop a run the same way."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import Task, TaskStatus
from ..store import InvalidTransitionError, StoreError, TaskStore


class NotRunningHere(Exception):
    """The task is in_progress, but no run of this agent's dispatcher holds it."""


@dataclass(frozen=True)
class Cancelled:
    task: Task
    stopping: bool  # still in_progress: stopping it took longer than the dispatcher waits


def cancel_task(store: TaskStore, dispatcher, task_id: str, reason: str | None) -> Cancelled:
    """A pending (blocked, plan_review, review) task is cancelled; a running one is stopped (its
    branch kept) and cancelled, `reason` noted first. Raises TaskNotFoundError,
    InvalidTransitionError (already finished) and NotRunningHere."""
    if store.get(task_id).status is TaskStatus.in_progress:
        noted = reason is not None and _note_reason(store, task_id, reason)
        if not dispatcher.cancel(task_id):
            if noted:
                _forget_reason(store, task_id)
            raise NotRunningHere(f"task {task_id} is running, but not in this agent's dispatcher")
        task = store.get(task_id)
        return Cancelled(task, task.status is TaskStatus.in_progress)
    current = store.get(task_id)
    if current.status is TaskStatus.review and current.pr is not None:
        dispatcher.prs.close(current)  # best effort: a cancelled task's pull request must not stay open
    return Cancelled(store.cancel(task_id, reason), False)


def _note_reason(store: TaskStore, task_id: str, reason: str) -> bool:
    """The reason goes on the running task before it is stopped: the run's own `cancelled`
    write then keeps it (any other ending drops it, see TaskStore.revise)."""
    try:
        store.update(task_id, expect={TaskStatus.in_progress}, cancel_reason=reason)
    except InvalidTransitionError:
        return False  # it ended meanwhile: the dispatcher has nothing to stop either
    return True


def _forget_reason(store: TaskStore, task_id: str) -> None:
    try:
        store.update(task_id, expect={TaskStatus.in_progress}, cancel_reason=None)
    except StoreError:
        pass  # it ended meanwhile, and not cancelled: that ending dropped the reason already
