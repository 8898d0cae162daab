"""Hypothesis drives random sequences of store operations and checks the lifecycle invariants."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from backend.mirrors import MirrorWriter
from backend.models import PRIORITY_RANK, STATUSES, TRANSITIONS, NewTask, Owner, TaskStatus
from backend.store import InvalidTransitionError, TaskStore

OWNER = Owner(pid=os.getpid(), host="hypothesis", instance="h")
FINISHED = {TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled}
priorities = st.sampled_from(sorted(PRIORITY_RANK))


class StoreLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="baton-hyp-"))
        self.store_path = self.root / "data" / "dev-tasks.json"
        self.tasks_dir = self.root / "tasks"
        self.store = self._open()
        self.store.initialize()
        self.model: dict[str, TaskStatus] = {}
        self.deps: dict[str, list[str]] = {}  # task id -> its depends_on

    def _open(self) -> TaskStore:
        return TaskStore(self.store_path, mirrors=MirrorWriter(self.tasks_dir))

    def _settle(self) -> None:
        """What the dependency rules make of waiting tasks, worked out independently of the
        store: blocked when a dependency failed, was cancelled or is blocked; else pending."""
        for task_id in self.model:  # creation order: dependencies are settled first
            if self.deps[task_id] and self.model[task_id] in (TaskStatus.pending, TaskStatus.blocked):
                blocked = any(self.model[d] in (TaskStatus.failed, TaskStatus.cancelled)
                              or self.model[d] is TaskStatus.blocked for d in self.deps[task_id])
                self.model[task_id] = TaskStatus.blocked if blocked else TaskStatus.pending

    def _pick(self, data) -> str:
        # An index, not an id: ids are random, and hypothesis needs repeatable draws.
        ids = list(self.model)
        return ids[data.draw(st.integers(min_value=0, max_value=len(ids) - 1))]

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # ----- rules ---------------------------------------------------------------------------

    @rule(priority=priorities, count=st.integers(min_value=1, max_value=3))
    def create(self, priority: str, count: int) -> None:
        tasks = self.store.create_many([NewTask(title="t", priority=priority) for _ in range(count)])
        for task in tasks:
            assert task.id not in self.model
            self.model[task.id] = TaskStatus.pending
            self.deps[task.id] = []

    @precondition(lambda self: self.model)
    @rule(data=st.data(), count=st.integers(min_value=1, max_value=2))
    def create_dependent(self, data, count: int) -> None:
        depends_on = sorted({self._pick(data) for _ in range(count)})
        task = self.store.create(NewTask(title="d", depends_on=depends_on))
        assert task.id not in self.model and task.depends_on == depends_on
        self.model[task.id] = TaskStatus.pending
        self.deps[task.id] = depends_on
        self._settle()
        assert task.status is self.model[task.id]

    @rule()
    def claim(self) -> None:
        ready = lambda t: all(self.model[d] is TaskStatus.completed for d in self.deps[t.id])  # noqa: E731
        pending = [t for t in self.store.list_tasks() if self.model[t.id] is TaskStatus.pending and ready(t)]
        claimed = self.store.claim(OWNER, 60)
        if not pending:
            assert claimed is None
            return
        assert claimed is not None and self.model[claimed.id] is TaskStatus.pending
        # Most urgent first; among equals the oldest (the model's dict keeps creation order).
        age = {task_id: index for index, task_id in enumerate(self.model)}
        key = lambda t: (-PRIORITY_RANK[t.priority], age[t.id])  # noqa: E731
        assert key(claimed) == min(key(t) for t in pending), "claim must take the most urgent, oldest task"
        self.model[claimed.id] = TaskStatus.in_progress

    @precondition(lambda self: self.model)
    @rule(data=st.data(), to=st.sampled_from(list(TaskStatus)))
    def transition(self, data, to: TaskStatus) -> None:
        task_id = self._pick(data)
        current = self.model[task_id]
        revision = self.store.snapshot().revision
        # Only claim() starts a task, and only the dependency rules block or unblock one.
        refused = (to not in TRANSITIONS[current] or to is TaskStatus.in_progress or to is TaskStatus.blocked
                   or (current is TaskStatus.blocked and to is TaskStatus.pending))
        try:
            self.store.transition(task_id, to)
        except InvalidTransitionError:
            assert refused
            assert self.store.snapshot().revision == revision
        else:
            assert not refused
            self.model[task_id] = to
            self._settle()

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def rerun(self, data) -> None:
        task_id = self._pick(data)
        try:
            self.store.rerun(task_id)
        except InvalidTransitionError:
            assert self.model[task_id] not in (TaskStatus.failed, TaskStatus.cancelled)
        else:
            assert self.model[task_id] in (TaskStatus.failed, TaskStatus.cancelled)
            self.model[task_id] = TaskStatus.pending
            self._settle()

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        task_id = self._pick(data)
        try:
            self.store.cancel(task_id)
        except InvalidTransitionError:
            assert self.model[task_id] not in (TaskStatus.pending, TaskStatus.blocked, TaskStatus.plan_review)
        else:
            self.model[task_id] = TaskStatus.cancelled
            self._settle()

    @rule()
    def reopen(self) -> None:
        # A new process' view: no cache, mirrors rebuilt.
        self.store = self._open()
        self.store.initialize()

    # ----- invariants ----------------------------------------------------------------------

    @invariant()
    def statuses_match_model(self) -> None:
        assert {t.id: t.status for t in self.store.list_tasks()} == self.model

    @invariant()
    def file_is_valid_json_with_every_task(self) -> None:
        doc = json.loads(self.store_path.read_bytes())
        assert doc["schema_version"] == 1
        assert sorted(t["id"] for t in doc["tasks"]) == sorted(self.model)

    @invariant()
    def ownership_and_timestamps_follow_status(self) -> None:
        for task in self.store.list_tasks():
            assert (task.owner is not None) == (task.status is TaskStatus.in_progress)
            assert (task.finished_at is not None) == (task.status in FINISHED)
            assert task.updated_at >= task.created_at

    @invariant()
    def one_mirror_per_task_in_its_status_folder(self) -> None:
        found = {}
        for status in STATUSES:
            folder = self.tasks_dir / status
            for path in folder.glob("*.md") if folder.is_dir() else []:
                assert path.stem not in found, f"{path.stem} mirrored twice"
                found[path.stem] = status
        assert found == {task_id: status.value for task_id, status in self.model.items()}


StoreLifecycle.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreLifecycle = StoreLifecycle.TestCase
