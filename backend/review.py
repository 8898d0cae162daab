"""What a person does to a task after it was written: send it a message, approve or send back
its work or its plan, reject it. Store operations only (one locked read-modify-write each), shared
by the agent's routes and the dashboard's local connector; the dispatcher does the running.

Every action that hands the task back to the dispatcher resets `attempts`: a person's decision
starts a new count, so crash recovery's give-up limit counts interruptions, not review rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .models import INBOX_MAX, HumanMessage, NewMessage, Task, TaskStatus, new_task_id, utcnow
from .runtimes.base import AgentEvent, EventKind, event
from .store import InvalidTransitionError, TaskNotFoundError, TaskStore

_TAKES_MESSAGES = {TaskStatus.pending, TaskStatus.blocked, TaskStatus.in_progress, TaskStatus.plan_review, TaskStatus.review,
                   TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled}
# Where a run can leave messages that came while it ended (never failed: a run that fails before
# it reads its inbox would start again and again).
_REOPENED = {TaskStatus.completed, TaskStatus.review, TaskStatus.plan_review}
# What a new run must not inherit from the one before it.
_FRESH = {"attempts": 0, "approved_sha": None, "error_reason": None, "error_message": None, "no_changes": False}


class ReviewError(Exception):
    """A request the task's state does not allow, with the API's code and status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Posted:
    task: Task
    message: HumanMessage
    delivery: str  # queued: for the running (or pending) task's next turn; started: a new run

    def answer(self) -> dict:
        return {"task": self.task.model_dump(mode="json"), "message": self.message.model_dump(mode="json"),
                "delivery": self.delivery}


def _message(body: NewMessage, kind: str) -> HumanMessage:
    return HumanMessage(id=new_task_id(), kind=kind, at=utcnow(), text=body.text, comments=body.comments)


def _inbox_with(task: Task, message: HumanMessage) -> list[HumanMessage]:
    if len(task.inbox) >= INBOX_MAX:
        raise ReviewError(409, "inbox_full", f"task {task.id} already has {INBOX_MAX} messages waiting for its "
                                             "next turn; wait until the agent has read them")
    return [*task.inbox, message]


def post_message(store: TaskStore, task_id: str, body: NewMessage, running: Callable[[str], bool]) -> Posted:
    """A follow-up. Pending or running: queued for the next turn. In review, plan review (a
    revision), completed, failed or cancelled: the task goes back to pending for a run that starts
    with it (the same session where the runtime can continue it). `running(id)`: a run of the task
    is still winding down in this process (a landed task's cleanup): then it is only queued, and
    the dispatcher re-queues the task once that run has let go of its branch."""
    holder: dict[str, Any] = {}

    def decide(task: Task) -> tuple[TaskStatus | None, dict[str, Any]]:
        if task.status not in _TAKES_MESSAGES:
            raise InvalidTransitionError(task, TaskStatus.pending, "takes no messages")
        kind = "revise" if task.status is TaskStatus.plan_review else "message"
        message = holder["message"] = _message(body, kind)
        inbox = _inbox_with(task, message)
        # A blocked task waits like a pending one: the message is read when it finally runs.
        if task.status in (TaskStatus.pending, TaskStatus.blocked, TaskStatus.in_progress) or running(task.id):
            holder["delivery"] = "queued"
            return None, {"inbox": inbox}
        holder["delivery"] = "started"
        return TaskStatus.pending, {**_FRESH, "inbox": inbox}

    task = store.revise(task_id, decide, from_archive=True)
    return Posted(task, holder["message"], holder["delivery"])


def reopen_for_messages(store: TaskStore, task_id: str, winding_down: Callable[[str], bool]) -> None:
    """A task whose inbox got a message while its run was ending (completed, or handed to review
    or plan review): now that the run has let go, it goes back to pending for a run that reads it."""

    def decide(task: Task) -> tuple[TaskStatus | None, dict[str, Any]]:
        if task.status not in _REOPENED or not task.inbox or winding_down(task.id):
            raise _Nothing()
        return TaskStatus.pending, dict(_FRESH)

    try:
        store.revise(task_id, decide)
    except (_Nothing, TaskNotFoundError):
        pass


class _Nothing(Exception):
    pass


def approve(store: TaskStore, task_id: str, sha: str | None = None) -> Task:
    """Review: land exactly the reviewed commit (`sha`, when given, must be the one shown).
    Plan review: run the task with its plan."""

    def decide(task: Task) -> tuple[TaskStatus, dict[str, Any]]:
        if task.status is TaskStatus.plan_review:
            return TaskStatus.pending, {**_FRESH, "plan_approved": True}
        if task.status is not TaskStatus.review:
            raise InvalidTransitionError(task, TaskStatus.pending, "only a task in review or plan_review is approved")
        if task.pr is not None:
            raise ReviewError(409, "invalid_transition", f"task {task.id} lands through pull request "
                                                         f"#{task.pr.number}: merge it on GitHub")
        if sha is not None and sha != task.review_sha:
            raise ReviewError(409, "stale_review", f"task {task.id} waits for review at {str(task.review_sha)[:12]}, "
                                                   f"not {sha[:12]}: reload its diff and review again")
        return TaskStatus.pending, {**_FRESH, "approved_sha": task.review_sha}

    return store.revise(task_id, decide)


def request_changes(store: TaskStore, task_id: str, body: NewMessage) -> tuple[Task, HumanMessage]:
    """Review: another turn of the same session with the person's message and line comments, then
    back to review. Plan review: another planning turn (a revision)."""
    holder: dict[str, HumanMessage] = {}

    def decide(task: Task) -> tuple[TaskStatus, dict[str, Any]]:
        if task.status not in (TaskStatus.review, TaskStatus.plan_review):
            raise InvalidTransitionError(task, TaskStatus.pending, "only a task in review or plan_review takes changes")
        message = holder["m"] = _message(body, "revise" if task.status is TaskStatus.plan_review else "changes")
        return TaskStatus.pending, {**_FRESH, "inbox": _inbox_with(task, message)}

    task = store.revise(task_id, decide)
    return task, holder["m"]


def reject(store: TaskStore, task_id: str, reason: str | None = None) -> Task:
    """Cancelled, its branch kept (a pull request is closed by the caller first)."""

    def decide(task: Task) -> tuple[TaskStatus, dict[str, Any]]:
        if task.status not in (TaskStatus.review, TaskStatus.plan_review):
            raise InvalidTransitionError(task, TaskStatus.cancelled, "only a task in review or plan_review is rejected")
        what = "plan" if task.status is TaskStatus.plan_review else "work"
        note = f"{what} rejected in review" + (f": {reason.strip()}" if reason and reason.strip() else "")
        return TaskStatus.cancelled, {"error_message": note[:4000], "approved_sha": None}

    return store.revise(task_id, decide)


def human_event(subtype: str, text: str = "", comments: list | None = None) -> AgentEvent:
    """A person's message or decision, for the task's transcript."""
    return event(EventKind.human, subtype=subtype, text=text or None,
                 comments=[c.model_dump() for c in comments] if comments else None)
