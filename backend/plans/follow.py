"""The follower: a plan's state follows its tasks, the task store being the truth.

- ready with tasks that name it (a run interrupted after creating them): the ids are recorded,
  executing;
- executing or failed: failed while one of its tasks is failed or cancelled (`reason` names
  them), done once all are completed, executing otherwise (a failed plan whose failed task was
  rerun is executing again).

`sync` does one pass; `PlanFollower` runs it on its own thread, woken by every write of the
agent's store (the listener only sets an event: writes never wait for plan files) and now and
then for writes by other processes. The agent runs a pass at start to catch up.
"""

from __future__ import annotations

import logging
import threading

from ..models import Task, TaskStatus
from ..store import TaskNotFoundError, TaskStore
from .model import Plan
from .run import created_for, record_run
from .store import PlanError, PlanStore

log = logging.getLogger(__name__)

_FOLLOWED = ("ready", "executing", "failed")
_REASON_MAX = 500


def sync(plans: PlanStore, store: TaskStore, warned: set[str] | None = None) -> list[Plan]:
    """One pass over the plans that follow their tasks; returns the plans it changed. `warned`:
    problems already logged (a pass runs after every store write; each is said once)."""
    changed: list[Plan] = []
    live = None
    for plan_id in plans.ids_in(_FOLLOWED):  # done and draft plans are never read here
        try:
            plan = plans.get(plan_id)
            if plan.state not in _FOLLOWED:
                continue
            if plan.state == "ready":
                live = live if live is not None else store.snapshot().tasks
                task_ids = created_for(plan, live)
                if task_ids:
                    changed.append(record_run(plans, plan.id, task_ids))
                continue
            state, reason = decide(plan, store)
            if (state, reason) != (plan.state, plan.reason):
                changed.append(plans.update(plan.id, lambda current: _follow(current, store)))
        except PlanError as exc:  # a damaged file of it: listed as invalid, left alone
            if warned is None or exc.message not in warned:
                log.warning("plan %s not followed: %s", plan_id, exc.message)
                if warned is not None:
                    warned.add(exc.message)
    return changed


def _follow(plan: Plan, store: TaskStore) -> dict | None:
    """Decided again under the plans' lock, on the plan as it is now."""
    if plan.state not in ("executing", "failed"):
        return None
    state, reason = decide(plan, store)
    return None if (state, reason) == (plan.state, plan.reason) else {"state": state, "reason": reason}


def decide(plan: Plan, store: TaskStore) -> tuple[str, str | None]:
    """(state, reason) of a plan that ran, from its tasks' statuses."""
    problems: list[str] = []
    done = True
    for ref, task_id in plan.task_ids.items():
        try:
            task = store.get(task_id)
        except TaskNotFoundError:
            problems.append(f"{ref} ({task_id}) no longer exists")
            continue
        if task.status is TaskStatus.failed:
            why = task.error_message or task.error_reason or "no reason given"
            problems.append(f"{_named(ref, task)} failed: {why}")
        elif task.status is TaskStatus.cancelled:
            problems.append(f"{_named(ref, task)} was cancelled")
        elif task.status is not TaskStatus.completed:
            done = False
    if problems:
        reason = "; ".join(problems)
        return "failed", reason if len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 1] + "…"
    return ("done" if done else "executing"), None


def _named(ref: str, task: Task) -> str:
    title = task.title if len(task.title) <= 60 else task.title[:59] + "…"
    return f"{ref} ({task.id}, “{title}”)"


class PlanFollower:
    """Runs `sync` on a thread after store writes (coalesced) and every `poll_seconds`."""

    def __init__(self, plans: PlanStore, store: TaskStore, poll_seconds: float = 15.0) -> None:
        self.plans, self.store, self.poll_seconds = plans, store, poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscribed = False
        self._warned: set[str] = set()

    def catch_up(self) -> list[Plan]:
        """One pass now (at the agent's start, before anything runs). A plans folder that cannot
        be used (unwritable, say) is logged: the agent's tasks do not depend on it."""
        try:
            return sync(self.plans, self.store, self._warned)
        except Exception:
            log.exception("plans could not catch up with their tasks")
            return []

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        if not self._subscribed:
            self.store.subscribe(self._wake.set)  # cheap: the work happens on the thread
            self._subscribed = True
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="plan-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.poll_seconds)
            if self._stopping.is_set():
                return
            self._wake.clear()  # writes during the pass wake the next one
            try:
                sync(self.plans, self.store, self._warned)
            except Exception:  # a full disk, a store that cannot be read: the next write tries again
                log.exception("following plans failed")
