"""TaskStore: the only code that reads or writes data/dev-tasks.json.

File format (canonical form, one task per line so a changed task costs one line):

    {"schema_version":1,"revision":7,"write_id":"9f0c…","tasks":[
    {"id":"abc",…},
    {"id":"def",…}
    ]}

It is plain JSON; any valid JSON of that shape is accepted (the canonical form is just faster
to reload). Every read-modify-write holds a file lock on `<file>.lock` for its whole duration,
across threads and processes. Writes are atomic (temp file, fsync, os.replace, fsync folder).

Each process caches the parsed tasks together with each task's exact JSON line. The header line
carries `revision` and a random `write_id`, so reading one line tells whether the cache is
current; after another process wrote, only lines that differ from the cache are parsed again.
A store that is not valid JSON or not of the right shape is refused and never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from pydantic import ValidationError

from .fsutil import atomic_write
from .mirrors import MirrorWriter
from .models import (
    PRIORITY_RANK,
    TRANSITIONS,
    NewTask,
    Owner,
    Task,
    TaskStatus,
    new_task_id,
    utcnow,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_MAX_HEADER = 4096
_FINISHED = {TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled}
# Fields that only transitions may change.
_PROTECTED_FIELDS = {"id", "status", "created_at"}


class StoreError(Exception):
    """Base class of store errors."""


class StoreCorruptError(StoreError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class StoreBusyError(StoreError):
    pass


class StoreUnreadableError(StoreError):
    """The store exists but cannot be read (permissions, a folder in its place, I/O error)."""


class TaskNotFoundError(StoreError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class InvalidTransitionError(StoreError):
    def __init__(self, task: Task, target: TaskStatus, why: str = "") -> None:
        reason = why or f"a {task.status.value} task cannot become {target.value}"
        super().__init__(f"task {task.id}: {reason}")
        self.task = task
        self.target = target


@dataclass(frozen=True)
class Snapshot:
    """One version of the store. Treat the dicts as read-only: they are shared with the cache."""

    revision: int
    tasks: dict[str, Task] = field(default_factory=dict)  # in file order
    lines: dict[str, bytes] = field(default_factory=dict)  # id -> canonical JSON of that task
    header: bytes = b""
    # (inode, size, mtime_ns) of the file this snapshot was read from or written to.
    signature: tuple[int, int, int] | None = None

    def task_json(self, task_id: str) -> bytes:
        return self.lines[task_id]


def _encode(task: Task) -> bytes:
    return task.model_dump_json().encode("utf-8")


class TaskStore:
    def __init__(
        self,
        path: Path,
        *,
        mirrors: MirrorWriter | None = None,
        lock_timeout: float = 30.0,
    ) -> None:
        # Resolve links so that a store reached through a symlink (e.g. from a worktree) shares
        # the lock file of the real one.
        self.path = Path(path).resolve()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._file_lock = FileLock(str(self.lock_path), timeout=lock_timeout, thread_local=False)
        self._mutex = threading.RLock()
        self._mirrors = mirrors
        self._cache: Snapshot | None = None
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` (quickly, without arguments) after every write by this store object."""
        self._listeners.append(listener)

    # ----- reading ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current store content (re-read only if another writer changed it)."""
        with self._mutex:
            return self._load()

    def list_tasks(self) -> list[Task]:
        return list(self.snapshot().tasks.values())

    def get(self, task_id: str) -> Task:
        task = self.snapshot().tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    def check(self) -> Snapshot:
        """Load and validate the whole file, bypassing the cache. Raises StoreCorruptError."""
        with self._mutex:
            self._cache = None
            return self._load()

    def initialize(self) -> Snapshot:
        """Validate the store, create it if missing, and rebuild the mirrors from it."""
        with self._mutex, self._locked():
            snap = self.check()
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                snap = self._write(snap, {})
            if self._mirrors is not None:
                self._mirrors.rebuild(list(snap.tasks.values()))
            return snap

    # ----- changing -----------------------------------------------------------------------

    def create(self, new: NewTask) -> Task:
        return self.create_many([new])[0]

    def create_many(self, items: Iterable[NewTask]) -> list[Task]:
        """Create all tasks in one write: all or nothing."""
        items = list(items)
        with self._transaction() as (snap, changes):
            now = utcnow()
            taken = set(snap.tasks)
            for item in items:
                task_id = new_task_id()
                while task_id in taken:
                    task_id = new_task_id()
                taken.add(task_id)
                task = Task(
                    id=task_id,
                    status=TaskStatus.pending,
                    created_at=now,
                    updated_at=now,
                    **item.model_dump(),
                )
                changes.append((None, task))
        return [new for _, new in changes]

    def claim(
        self, owner: Owner, lease_seconds: float, task_id: str | None = None
    ) -> Task | None:
        """Compare-and-set pending -> in_progress. Takes `task_id` if given (and still pending),
        otherwise the most urgent, oldest pending task. Returns None when nothing was claimed."""
        with self._transaction() as (snap, changes):
            if task_id is not None:
                candidate = snap.tasks.get(task_id)
                if candidate is None or candidate.status is not TaskStatus.pending:
                    return None
            else:
                candidate = _next_pending(snap.tasks.values())
                if candidate is None:
                    return None
            now = utcnow()
            claimed = _updated(
                candidate,
                status=TaskStatus.in_progress,
                owner=owner,
                started_at=now,
                heartbeat_at=now,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                finished_at=None,
                updated_at=now,
                attempts=candidate.attempts + 1,
                commit_sha=None,  # recovery reads it as "this attempt pushed this commit"
            )
            changes.append((candidate, claimed))
        return claimed

    def transition(
        self,
        task_id: str,
        target: TaskStatus,
        *,
        expect: Iterable[TaskStatus] | None = None,
        **fields: Any,
    ) -> Task:
        """Move a task to `target` if the lifecycle allows it (and, with `expect`, only from one
        of those statuses), setting `fields` in the same write."""
        _reject_protected(fields)
        with self._transaction() as (snap, changes):
            task = snap.tasks.get(task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            allowed_from = set(expect) if expect is not None else None
            if allowed_from is not None and task.status not in allowed_from:
                names = " or ".join(sorted(s.value for s in allowed_from))
                raise InvalidTransitionError(
                    task, target, f"is {task.status.value}, expected {names}"
                )
            if target not in TRANSITIONS[task.status]:
                raise InvalidTransitionError(task, target)
            if target is TaskStatus.in_progress:
                # A running task always has an owner and a lease: claim() is the only way in.
                raise InvalidTransitionError(task, target, "only claim() starts a task")
            now = utcnow()
            stamp: dict[str, Any] = {"status": target, "updated_at": now}
            if target in _FINISHED:
                stamp["finished_at"] = now
            stamp.update(owner=None, lease_expires_at=None, heartbeat_at=None)
            if target is TaskStatus.pending:
                stamp["finished_at"] = None
            changes.append((task, _updated(task, **{**stamp, **fields})))
        return changes[0][1]

    def update(
        self, task_id: str, *, expect: Iterable[TaskStatus] | None = None, **fields: Any
    ) -> Task:
        """Set non-status fields (what the dispatcher records), optionally only in a status."""
        _reject_protected(fields)
        with self._transaction() as (snap, changes):
            task = snap.tasks.get(task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            if expect is not None and task.status not in set(expect):
                raise InvalidTransitionError(task, task.status, f"is {task.status.value}")
            changes.append((task, _updated(task, updated_at=utcnow(), **fields)))
        return changes[0][1]

    def rerun(self, task_id: str) -> Task:
        return self.transition(
            task_id,
            TaskStatus.pending,
            expect={TaskStatus.failed, TaskStatus.cancelled},
            error_reason=None,
            error_message=None,
            result_text=None,
            no_changes=False,
            attempts=0,
        )

    def cancel(self, task_id: str) -> Task:
        return self.transition(
            task_id, TaskStatus.cancelled, expect={TaskStatus.pending, TaskStatus.plan_review}
        )

    # ----- internals ----------------------------------------------------------------------

    def _locked(self):
        try:
            self._file_lock.acquire()
        except FileLockTimeout as exc:
            raise StoreBusyError(f"{self.lock_path}: lock not acquired within timeout") from exc
        return _Release(self._file_lock)

    def _transaction(self):
        return _Transaction(self)

    def _load(self) -> Snapshot:
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            if self._cache is not None and self._cache.tasks:
                log.warning("%s disappeared; starting from an empty store", self.path)
            self._cache = Snapshot(revision=0)
            return self._cache
        except OSError as exc:
            raise StoreUnreadableError(f"{self.path}: cannot be read: {exc}") from None
        try:
            with handle:
                signature = _signature(os.fstat(handle.fileno()))
                header = handle.readline(_MAX_HEADER)
                cache = self._cache
                # Both must match: the header names our last write; the signature catches
                # anyone who edited the file in place below an unchanged first line.
                if cache is not None and header and header == cache.header and signature == cache.signature:
                    return cache
                data = header + handle.read()
        except OSError as exc:
            raise StoreUnreadableError(f"{self.path}: cannot be read: {exc}") from None
        snap = self._parse_canonical(data, signature) or self._parse_any(data, signature)
        if self._cache is not None and self._mirrors is not None:
            # Another writer changed the store: bring the mirrors along.
            self._mirrors.apply(_changes_between(self._cache, snap))
            self._mirrors.remove([t for i, t in self._cache.tasks.items() if i not in snap.tasks])
        self._cache = snap
        return snap

    def _corrupt(self, problem: str) -> StoreCorruptError:
        return StoreCorruptError(self.path, problem)

    def _parse_canonical(self, data: bytes, signature: tuple[int, int, int]) -> Snapshot | None:
        """Fast path for files in canonical form: reuse cached tasks whose line is unchanged.
        Returns None whenever the file is not exactly canonical; _parse_any then decides."""
        lines = data.split(b"\n")
        if len(lines) < 3 or lines[-1] != b"" or lines[-2] != b"]}":
            return None
        header = lines[0]
        if not header.endswith(b'"tasks":['):
            return None
        try:
            meta = json.loads(header + b"]}")
        except ValueError:
            return None
        if not _meta_ok(meta):
            return None
        body = lines[1:-2]
        old = self._cache
        tasks: dict[str, Task] = {}
        encoded: dict[str, bytes] = {}
        for index, line in enumerate(body):
            if index < len(body) - 1:
                if not line.endswith(b","):
                    return None
                line = line[:-1]
            task = _cached_task(old, line)
            if task is None:
                try:
                    task = Task.model_validate_json(line)
                except ValidationError:
                    return None
                # Keep our own encoding, not the line as found: what we serve and write back is
                # always the complete, normalised task.
                line = _encode(task)
            if task.id in tasks:
                return None
            tasks[task.id] = task
            encoded[task.id] = line
        return Snapshot(
            revision=meta["revision"], tasks=tasks, lines=encoded, header=header + b"\n", signature=signature
        )

    def _parse_any(self, data: bytes, signature: tuple[int, int, int]) -> Snapshot:
        """Authoritative parse of any JSON; raises StoreCorruptError naming the problem."""
        if not data.strip():
            raise self._corrupt("file is empty (expected a JSON object with schema_version and tasks)")
        try:
            doc = json.loads(data)
        except UnicodeDecodeError as exc:
            raise self._corrupt(f"not UTF-8 text: {exc}") from None
        except json.JSONDecodeError as exc:
            raise self._corrupt(f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        if not isinstance(doc, dict):
            raise self._corrupt("top level must be a JSON object")
        unknown = set(doc) - {"schema_version", "revision", "write_id", "tasks"}
        if unknown:
            raise self._corrupt(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
        if "schema_version" not in doc:
            raise self._corrupt("missing schema_version")
        if doc["schema_version"] != SCHEMA_VERSION:
            raise self._corrupt(
                f"unsupported schema_version {doc['schema_version']!r} (this Baton reads {SCHEMA_VERSION})"
            )
        revision = doc.get("revision", 0)
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise self._corrupt("revision must be a non-negative integer")
        raw_tasks = doc.get("tasks")
        if not isinstance(raw_tasks, list):
            raise self._corrupt("tasks must be a list")
        tasks: dict[str, Task] = {}
        for index, raw in enumerate(raw_tasks):
            try:
                task = Task.model_validate(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "(task)"
                ident = raw.get("id") if isinstance(raw, dict) else None
                label = f"tasks[{index}]" + (f" (id {ident!r})" if ident else "")
                raise self._corrupt(f"{label}: {where}: {first['msg']}") from None
            if task.id in tasks:
                raise self._corrupt(f"tasks[{index}]: duplicate id {task.id!r}")
            tasks[task.id] = task
        # Not canonical (or hand-edited): keep no header so the next read parses again, and
        # the next write rewrites it in canonical form.
        return Snapshot(
            revision=revision,
            tasks=tasks,
            lines={task_id: _encode(task) for task_id, task in tasks.items()},
            signature=signature,
        )

    def _write(self, snap: Snapshot, changed: dict[str, Task]) -> Snapshot:
        tasks = dict(snap.tasks)
        lines = dict(snap.lines)
        for task_id, task in changed.items():
            tasks[task_id] = task
            lines[task_id] = _encode(task)
        revision = snap.revision + 1
        header = (
            b'{"schema_version":%d,"revision":%d,"write_id":"%s","tasks":['
            % (SCHEMA_VERSION, revision, secrets.token_hex(8).encode())
        )
        body = b",\n".join(lines.values())
        atomic_write(self.path, [header, b"\n", body, b"\n" if body else b"", b"]}\n"])
        # Safe to stat after the replace: we still hold the lock, so the file is ours.
        signature = _signature(os.stat(self.path))
        new = Snapshot(revision=revision, tasks=tasks, lines=lines, header=header + b"\n", signature=signature)
        self._cache = new
        return new


class _Release:
    def __init__(self, lock: FileLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _Transaction:
    """Holds the thread mutex and the file lock; loads the store; writes what changed.

    Yields (snapshot, changes): append (old_or_None, new) pairs to `changes`. Nothing is written
    when `changes` stays empty or the body raises.
    """

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self._changes: list[tuple[Task | None, Task]] = []

    def __enter__(self) -> tuple[Snapshot, list[tuple[Task | None, Task]]]:
        self._store._mutex.acquire()
        try:
            self._release = self._store._locked()
            try:
                self._snap = self._store._load()
            except BaseException:
                self._release.__exit__(None, None, None)
                raise
        except BaseException:
            self._store._mutex.release()
            raise
        return self._snap, self._changes

    def __exit__(self, exc_type, exc, tb) -> bool:
        store = self._store
        try:
            if exc_type is None and self._changes:
                self._store.path.parent.mkdir(parents=True, exist_ok=True)
                store._write(self._snap, {new.id: new for _, new in self._changes})
                if store._mirrors is not None:
                    store._mirrors.apply(self._changes)
        finally:
            self._release.__exit__(None, None, None)
            store._mutex.release()
        if exc_type is None and self._changes:
            for listener in store._listeners:
                listener()
        return False


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _changes_between(old: Snapshot, new: Snapshot) -> list[tuple[Task | None, Task]]:
    return [
        (old.tasks.get(task_id), new.tasks[task_id])
        for task_id, line in new.lines.items()
        if old.lines.get(task_id) != line
    ]


def _meta_ok(meta: object) -> bool:
    revision = meta.get("revision") if isinstance(meta, dict) else None
    return (
        isinstance(meta, dict)
        and meta.get("schema_version") == SCHEMA_VERSION
        and isinstance(revision, int)
        and not isinstance(revision, bool)
        and revision >= 0
        and isinstance(meta.get("write_id"), str)
        and meta.get("tasks") == []
        and set(meta) == {"schema_version", "revision", "write_id", "tasks"}
    )


def _cached_task(snap: Snapshot | None, line: bytes) -> Task | None:
    # Canonical lines start with the id field: {"id":"abc",...
    if snap is None or not line.startswith(b'{"id":"'):
        return None
    end = line.find(b'"', 7)
    if end < 0:
        return None
    task_id = line[7:end].decode("ascii", "replace")
    if snap.lines.get(task_id) == line:
        return snap.tasks[task_id]
    return None


def _next_pending(tasks: Iterable[Task]) -> Task | None:
    """The most urgent pending task; among equals the oldest, i.e. the first in the store
    (tasks are appended in creation order under the lock)."""
    top = max(PRIORITY_RANK.values())
    first_by_rank: dict[int, Task] = {}
    for task in tasks:
        if task.status is TaskStatus.pending:
            rank = PRIORITY_RANK[task.priority]
            if rank not in first_by_rank:
                first_by_rank[rank] = task
                if rank == top:
                    break
    return first_by_rank[max(first_by_rank)] if first_by_rank else None


def _reject_protected(fields: dict[str, Any]) -> None:
    bad = _PROTECTED_FIELDS & set(fields)
    if bad:
        raise ValueError(f"fields {sorted(bad)} can only change through a transition")


def _updated(task: Task, **fields: Any) -> Task:
    """A validated copy of `task` with `fields` changed."""
    data = task.model_dump()
    data.update(fields)
    return Task.model_validate(data)
