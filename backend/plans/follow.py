"""The follower: a plan's state follows its tasks, the task store being the truth.

- ready with tasks that name it (a run interrupted after creating them): the ids are recorded,
  executing;
- executing, failed or done: failed while one of its tasks is failed or cancelled (`reason` names
  them), done once all are completed, executing otherwise (a failed plan whose failed task was
  rerun is executing again; a done plan whose task a follow-up reopened is executing again, and
  failed if that run fails). A done plan's tasks that left the live store were completed and can
  come back only through a rerun or a follow-up, which makes them live again: they are not looked
  up in the archive.

`sync` does one pass; `PlanFollower` runs it on its own thread, woken by every write of the
agent's store (the listener only sets an event: writes never wait for plan files) and now and
then for writes by other processes. The agent runs a pass at start to catch up.

A pass costs little when nothing it depends on changed, which is most store writes (heartbeats,
a run's progress): `Memory` keeps the last pass's view — the snapshot, the statuses of tasks that
carry a plan id (`tasks.fingerprint`) and the followed folders' files (inode, size, mtimes) — and
a pass that finds all three as they were does nothing. Otherwise it takes one snapshot, reads only
the plan files that changed (PlanStore remembers parsed ones) and looks up in the archive only ids
the snapshot lacks, each once.
"""

from __future__ import annotations

import logging
import threading

from ..models import Task, TaskStatus
from ..store import TaskStore
from .model import Plan
from .run import record_run
from .store import PlanError, PlanStore
from .tasks import TaskLookup, fingerprint

log = logging.getLogger(__name__)

_FOLLOWED = ("ready", "executing", "done", "failed")
_REASON_MAX = 500


class Memory:
    """What a follower remembers between passes (one per follower; passes hold its lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.folders: tuple | None = None
        self.snap = None
        self.tasks: tuple | None = None
        self.warned: set[str] = set()  # problems already logged: each is said once


def sync(plans: PlanStore, store: TaskStore, memory: Memory | None = None) -> list[Plan]:
    """One pass over the plans that follow their tasks; returns the plans it changed. Without
    `memory` the pass always looks at every followed plan."""
    memory = memory if memory is not None else Memory()
    with memory.lock:
        scan = plans.scan(_FOLLOWED)  # before the snapshot: a plan written meanwhile is seen next time
        tasks = TaskLookup(store)
        seen = memory.tasks if tasks.snap is memory.snap and memory.tasks is not None else fingerprint(tasks.snap)
        if scan.key == memory.folders and seen == memory.tasks:
            memory.snap = tasks.snap
            return []
        changed: list[Plan] = []
        retry = False
        created = None
        for plan in plans.read(scan).plans:  # draft plans are never read here
            try:
                if plan.state == "ready":
                    created = created if created is not None else tasks.by_plan()
                    if created.get(plan.id):
                        changed.append(record_run(plans, plan.id, created[plan.id]))
                    continue
                if decide(plan, tasks) != (plan.state, plan.reason):
                    updated = plans.update(plan.id, lambda current: _follow(current, store))
                    if updated.revision != plan.revision:
                        changed.append(updated)
            except PlanError as exc:  # a damaged file of it: listed as invalid, left alone
                retry = retry or exc.status >= 500  # a folder that cannot be written: the next pass tries again
                if exc.message not in memory.warned:
                    log.warning("plan %s not followed: %s", plan.id, exc.message)
                    memory.warned.add(exc.message)
        if retry:
            memory.folders = memory.tasks = memory.snap = None
        else:
            memory.folders, memory.snap, memory.tasks = scan.key, tasks.snap, seen
        return changed


def _follow(plan: Plan, store: TaskStore) -> dict | None:
    """Decided again under the plans' lock, on the plan and the tasks as they are now."""
    if plan.state not in ("executing", "failed", "done"):
        return None
    state, reason = decide(plan, TaskLookup(store))
    return None if (state, reason) == (plan.state, plan.reason) else {"state": state, "reason": reason}


def decide(plan: Plan, tasks: TaskLookup) -> tuple[str, str | None]:
    """(state, reason) of a plan that ran, from its tasks' statuses."""
    problems: list[str] = []
    done = True
    for ref, task_id in plan.task_ids.items():
        task = tasks.get(task_id, archived=plan.state != "done")
        if task is None:
            if plan.state != "done":
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
        self.memory = Memory()

    def catch_up(self) -> list[Plan]:
        """One pass now (at the agent's start, before anything runs). A plans folder that cannot
        be used (unwritable, say) is logged: the agent's tasks do not depend on it."""
        try:
            return sync(self.plans, self.store, self.memory)
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
                sync(self.plans, self.store, self.memory)
            except Exception:  # a full disk, a store that cannot be read: the next write tries again
                log.exception("following plans failed")
