"""TaskStore: the only code that reads or writes data/dev-tasks.json.

The file format (one task per line, plain JSON) and its parsing are in storeformat.py.
Every read-modify-write holds a file lock on `<file>.lock` for its whole duration,
across threads and processes. Writes are atomic (temp file, fsync, os.replace, fsync folder).

Each process caches the parsed tasks together with each task's exact JSON line. The header line
carries `revision` and a random `write_id`, so reading one line tells whether the cache is
current; after another process wrote, only lines that differ from the cache are parsed again.
A store that is not valid JSON or not of the right shape is refused and never overwritten by a
process that has no good copy of it (at start). A running process that finds the file missing or
corrupt restores it from the newest good state it knows (its cache or a kept generation, see
generations.py), moving a damaged file aside as `<file>.damaged-<UTC time>`; it never deletes it.
Finished tasks leave the live file for an append-only archive (archive.py) that reads still reach.
A task's tracker-tool grant is kept beside the store (toolgrants.py), never in the task record.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import timedelta
from typing import Literal
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from . import dependencies, storeformat
from .archive import Archive
from .fsutil import atomic_write, is_disk_full, remove_leftover_tmp
from .generations import Generations
from .mirrors import MirrorWriter
from .models import (
    PRIORITY_RANK,
    REPORTS_MAX,
    TRANSITIONS,
    NewTask,
    Owner,
    SourceReport,
    Task,
    TaskStatus,
    new_task_id,
    utcnow,
)
# SCHEMA_VERSION and Snapshot are part of this module's interface too.
from .storeformat import SCHEMA_VERSION, FormatError, Snapshot, changes_between, encode_task  # noqa: F401
from .storeview import view_path
from .toolgrants import ToolGrants

log = logging.getLogger(__name__)

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


class StoreFullError(StoreError):
    """The disk (or quota) is full: the change was not made, the store is as it was."""


class StoreUnreadableError(StoreError):
    """The store exists but cannot be read (permissions, a folder in its place, I/O error)."""


class TaskNotFoundError(StoreError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class IdempotencyKeyReusedError(StoreError):
    """An Idempotency-Key already created tasks from a different request body."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for a different request")
        self.key = key


class SourceError(StoreError):
    """A task's `source` refused: reports sent at create, a tool grant without a source, or
    reports asked of a task that has no source. `loc` names the field, as validation errors do."""

    def __init__(self, loc: str, message: str) -> None:
        super().__init__(f"{loc}: {message}")
        self.loc = loc
        self.message = message


class InvalidTransitionError(StoreError):
    def __init__(self, task: Task, target: TaskStatus, why: str = "") -> None:
        reason = why or f"a {task.status.value} task cannot become {target.value}"
        super().__init__(f"task {task.id}: {reason}")
        self.task = task
        self.target = target


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
        # The last snapshot this process read or wrote successfully; survives check(), so a
        # damaged or vanished file can be restored from it.
        self._last_good: Snapshot | None = None
        self._listeners: list[Callable[[], None]] = []
        self.generations = Generations(self.path)
        self.archive = Archive(self.path.with_name(self.path.stem + ".archive.jsonl"))
        # The dispatcher reads a task's grant here (store.grants.get(task.id)) when it runs it.
        self.grants = ToolGrants(self.path.parent / "tool-grants")

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
        """A live task, else an archived one (live wins when a task is in both)."""
        task = self.snapshot().tasks.get(task_id)
        if task is None:
            task = self.archive.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    def created_with(self, idempotency_key: str) -> list[Task]:
        """The tasks a request with this Idempotency-Key created (live or archived), in creation order."""
        with self._mutex:
            return self._created_with(self._load(), idempotency_key)

    def _created_with(self, snap: Snapshot, idempotency_key: str) -> list[Task]:
        live = [t for t in snap.tasks.values() if t.idempotency_key == idempotency_key]
        archived = [t for t in self.archive.by_key(idempotency_key) if t.id not in snap.tasks]
        if not archived:
            return live  # already in creation order: the store appends
        return sorted(live + archived, key=lambda t: t.created_at)

    def check(self) -> Snapshot:
        """Load and validate the whole file, bypassing the cache. Raises StoreCorruptError."""
        with self._mutex:
            self._cache = None
            return self._load()

    def initialize(self) -> Snapshot:
        """Validate the store, create it if missing, and rebuild the mirrors from it.
        Removes the temporary files of writers killed mid-write (no writer runs: we hold the lock)."""
        with self._mutex, self._locked():
            self._remove_leftovers()
            snap = self.check()
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                snap = self._write(snap, {})
            # A store restored from a generation or edited by hand: blocked as its dependencies say.
            moves = dependencies.settle(snap.tasks, _memo(self.archive.get))
            if moves:
                now = utcnow()
                snap = self._write(snap, {t.id: _updated(t, updated_at=now, **fields) for t, fields in moves})
            if self._mirrors is not None:
                self._mirrors.rebuild(list(snap.tasks.values()))
            return snap

    # ----- changing -----------------------------------------------------------------------

    def create(self, new: NewTask, idempotency_key: str | None = None) -> Task:
        return self.create_many([new], idempotency_key)[0]

    def create_many(self, items: Iterable[NewTask], idempotency_key: str | None = None,
                    plan_id: str | None = None) -> list[Task]:
        """Create all tasks in one write: all or nothing. With an `idempotency_key`, a repeat
        of the same request returns the tasks it created before (checked under the lock, so two
        racing repeats create once); the same key with other items raises
        IdempotencyKeyReusedError. `depends_on` names existing tasks or other items' refs
        (dependencies.resolve); an unknown name or a cycle raises DependencyError. A task whose
        dependency already failed is created blocked. `plan_id`: the plan the tasks run.
        A repeat is found in the archive too. An item's `tool_grant` goes to `self.grants` (before
        the task exists for a dispatcher to claim), never into the task; a repeat's grant replaces
        the live task's (tokens may rotate), so repeats compare everything but the grant (and the
        reports the sync engine recorded since). Raises SourceError for a source with reports or
        a grant without a source."""
        items = list(items)
        for index, item in enumerate(items):
            _check_new_source(item, index if len(items) > 1 else None)
        granted: list[str] = []
        try:
            with self._transaction() as (snap, changes):
                if idempotency_key is not None:
                    earlier = self._created_with(snap, idempotency_key)
                    if earlier:
                        if [_as_asked(t, earlier) for t in earlier] != [_asked(item) for item in items]:
                            raise IdempotencyKeyReusedError(idempotency_key)
                        for task, item in zip(earlier, items):
                            if item.tool_grant is not None and task.id in snap.tasks \
                                    and self.grants.get(task.id) != item.tool_grant:
                                self.grants.put(task.id, item.tool_grant)
                        return earlier
                self._create_in(snap, changes, items, idempotency_key, plan_id)
                for (_, task), item in zip(changes, items):
                    if item.tool_grant is not None:
                        granted.append(task.id)
                        self.grants.put(task.id, item.tool_grant)
        except BaseException:
            for task_id in granted:  # nothing was created: no grant stays behind
                self.grants.remove(task_id)
            raise
        # As written: the dependency rules may have made some blocked (settled in place).
        return [new for _, new in changes[: len(items)]]

    def _create_in(self, snap: Snapshot, changes: list[tuple[Task | None, Task]], items: list[NewTask],
                   idempotency_key: str | None, plan_id: str | None) -> None:
        """Add `items` as new pending tasks to `changes` (create_many's write, under its lock)."""
        now = utcnow()
        taken = set(snap.tasks)
        new_ids: list[str] = []
        for _ in items:
            task_id = new_task_id()
            while task_id in taken:
                task_id = new_task_id()
            taken.add(task_id)
            new_ids.append(task_id)
        resolved = dependencies.resolve(items, new_ids, self._lookup(snap))
        for index, item in enumerate(items):
            # A microsecond apart: "oldest first" (the board's pending order) is then the store's
            # order, the order claims take equal-priority tasks in.
            created = now + timedelta(microseconds=index)
            task = Task(
                id=new_ids[index],
                status=TaskStatus.pending,
                created_at=created,
                updated_at=created,
                idempotency_key=idempotency_key,
                plan_id=plan_id,
                **{**item.model_dump(exclude={"tool_grant"}), "depends_on": resolved[index]},
            )
            changes.append((None, task))

    def claim(
        self, owner: Owner, lease_seconds: float, task_id: str | None = None,
        runnable: Callable[[Task], bool] | None = None,
    ) -> Task | None:
        """Compare-and-set pending -> in_progress. Takes `task_id` if given (and still pending),
        otherwise the most urgent, oldest pending task (of those `runnable` accepts, e.g. whose
        runtime can start now). Returns None when nothing was claimed."""
        with self._transaction() as (snap, changes):
            if task_id is not None:
                candidate = snap.tasks.get(task_id)
                if candidate is None or candidate.status is not TaskStatus.pending:
                    return None
                if not dependencies.ready(candidate, self._lookup(snap)):
                    return None
            else:
                lookup = self._lookup(snap)
                candidate = _next_pending(
                    t for t in snap.tasks.values()
                    if t.status is TaskStatus.pending and (runnable is None or runnable(t))
                    and (not t.depends_on or dependencies.ready(t, lookup)))
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
                runs=candidate.runs + 1,  # never reset: a rerun's runs keep counting
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
        from_archive: bool = False,
        **fields: Any,
    ) -> Task:
        """Move a task to `target` if the lifecycle allows it (and, with `expect`, only from one
        of those statuses), setting `fields` in the same write. `from_archive`: an archived task
        comes back to the live store in that same write."""
        _reject_protected(fields)
        allowed_from = set(expect) if expect is not None else None

        def decide(task: Task) -> tuple[TaskStatus, dict[str, Any]]:
            if allowed_from is not None and task.status not in allowed_from:
                names = " or ".join(sorted(s.value for s in allowed_from))
                raise InvalidTransitionError(task, target, f"is {task.status.value}, expected {names}")
            return target, fields

        return self.revise(task_id, decide, from_archive=from_archive)

    def revise(
        self,
        task_id: str,
        decide: Callable[[Task], tuple[TaskStatus | None, dict[str, Any]]],
        *,
        from_archive: bool = False,
    ) -> Task:
        """Read-modify-write of one task under the lock: `decide(task)` sees the current task and
        returns (target status or None to keep it, fields to set); it may raise to change nothing.
        For changes that depend on what the task holds now (a message appended to its inbox)."""
        with self._transaction() as (snap, changes):
            task = snap.tasks.get(task_id)
            if task is None:
                task = self.archive.get(task_id)
                if task is None:
                    raise TaskNotFoundError(task_id)
                if not from_archive:
                    target, _ = decide(task)
                    raise InvalidTransitionError(task, target or task.status, f"is {task.status.value} and archived")
            target, fields = decide(task)
            _reject_protected(fields)
            now = utcnow()
            if target is None:
                changes.append((task, _updated(task, updated_at=now, **fields)))
                return changes[0][1]
            if target not in TRANSITIONS[task.status]:
                raise InvalidTransitionError(task, target)
            if target is TaskStatus.in_progress:
                # A running task always has an owner and a lease: claim() is the only way in.
                raise InvalidTransitionError(task, target, "only claim() starts a task")
            if target is TaskStatus.blocked or (task.status is TaskStatus.blocked and target is TaskStatus.pending):
                # Blocked says a dependency failed: only the dependency rules decide it (settle).
                raise InvalidTransitionError(task, target, "only its dependencies move a task in or out of blocked")
            stamp: dict[str, Any] = {"status": target, "updated_at": now}
            if target in _FINISHED:
                stamp["finished_at"] = now
            stamp.update(owner=None, lease_expires_at=None, heartbeat_at=None)
            if target is TaskStatus.pending:
                stamp["finished_at"] = None
            if target is not TaskStatus.cancelled:
                # Why it was cancelled holds only while it is: a rerun, a follow-up or a run that
                # ended otherwise after a reason was noted (cancel of a running task) drops it.
                stamp["cancel_reason"] = None
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
            from_archive=True,
            error_reason=None,
            error_message=None,
            result_text=None,
            no_changes=False,
            attempts=0,
            approved_sha=None,
            cancel_reason=None,
        )

    def cancel(self, task_id: str, reason: str | None = None) -> Task:
        """A task that is not running is cancelled, `reason` kept as its cancel_reason. (A running
        one is the dispatcher's to stop: note the reason first with update(cancel_reason=...).)"""
        return self.transition(
            task_id, TaskStatus.cancelled,
            expect={TaskStatus.pending, TaskStatus.blocked, TaskStatus.plan_review, TaskStatus.review},
            cancel_reason=reason,
        )

    def source_report(self, task_id: str, key: str, action: Literal["claim", "done", "release"], by: str,
                      stale_seconds: float) -> tuple[bool, Task]:
        """One side effect of a tracker sync on a live task's `source.reports[key]`, decided and
        written under the lock (so of two engines claiming at once, one is granted):
        claim: granted when the key is absent, or claimed more than `stale_seconds` ago (its
        claimer died); never once done. done: marks it done (always granted). release: drops a
        claim (granted when there was one to drop). Returns (granted, the task as it is now).
        Raises TaskNotFoundError (archived tasks included), SourceError (no source)."""
        with self._transaction() as (snap, changes):
            task = snap.tasks.get(task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            if task.source is None:
                raise SourceError("source", f"task {task_id} was not made from a tracker issue: it has no reports")
            now = utcnow()
            reports = dict(task.source.reports)
            entry = reports.get(key)
            if action == "claim":
                granted = entry is None or (entry.state == "claimed"
                                            and (now - entry.at).total_seconds() > stale_seconds)
                if granted:
                    reports[key] = SourceReport(state="claimed", at=now, by=by)
            elif action == "done":
                granted = True
                if entry is None or entry.state != "done":
                    reports[key] = SourceReport(state="done", at=now, by=by)
            else:
                granted = entry is not None and entry.state == "claimed"
                if granted:
                    del reports[key]
            if reports == task.source.reports:
                return granted, task
            reports = _trimmed(reports, keep=key)
            changes.append((task, _updated(task, updated_at=now,
                                           source={**task.source.model_dump(), "reports": reports})))
        return granted, changes[0][1]

    def archive_finished(self, select: Callable[[Task], bool]) -> list[Task]:
        """Move the finished tasks `select` picks to the archive, in one write under the lock.
        The archive is appended and fsynced first: a crash in between leaves a task in both
        places, where the live copy wins."""
        with self._mutex, self._locked():
            snap = self._load()
            chosen = [t for t in snap.tasks.values() if t.status in _FINISHED and select(t)]
            if not chosen:
                return []
            try:
                self.archive.append(chosen)
            except OSError as exc:
                if is_disk_full(exc):
                    raise StoreFullError(f"{self.archive.path}: {exc.strerror or exc}: nothing was archived; "
                                         "free disk space, then retry") from None
                raise
            self._write(snap, {}, removed={t.id for t in chosen})
            if self._mirrors is not None:
                self._mirrors.remove(chosen)
        for task in chosen:
            if task.source is not None:
                self.grants.remove(task.id)  # its runs are over: the token must not outlive them
        for listener in self._listeners:
            listener()
        return chosen

    # ----- internals ----------------------------------------------------------------------

    def _lookup(self, snap: Snapshot) -> Callable[[str], Task | None]:
        """A task by id, live or archived; each archived one read once per call site."""
        archived = _memo(self.archive.get)
        return lambda task_id: snap.tasks.get(task_id) or archived(task_id)

    def _settle_dependents(self, snap: Snapshot, changes: list[tuple[Task | None, Task]]) -> None:
        """Move waiting tasks in or out of `blocked` in the same write as the status changes
        that decide it (dependencies.settle)."""
        if not any(old is None or old.status is not new.status for old, new in changes):
            return
        merged = {**snap.tasks, **{new.id: new for _, new in changes}}
        at = {new.id: i for i, (_, new) in enumerate(changes)}
        now = utcnow()
        for task, fields in dependencies.settle(merged, _memo(self.archive.get)):
            moved = _updated(task, updated_at=now, **fields)
            if task.id in at:
                old, _ = changes[at[task.id]]
                changes[at[task.id]] = (old, moved)
            else:
                changes.append((task, moved))

    def _remove_leftovers(self) -> None:
        # The store's own, a generation's link being made, and the agents' read-only copy's:
        # each can be the full size of the store.
        targets = [(folder, self.path.name) for folder in
                   (self.path.parent, self.generations.folder, view_path(self.path).parent)]
        if self._mirrors is not None:
            # A mirror's temporary files are named after it: tasks/<status>/.<id>.md.*.tmp
            targets += [(self._mirrors.tasks_dir / status.value, "*.md") for status in TaskStatus]
        for folder, name in targets:
            for leftover in remove_leftover_tmp(folder, name):
                log.warning("removed %s, left by a writer that was stopped mid-write", leftover)

    def _locked(self):
        # filelock would create every missing parent of the lock file: create data/ only, so a
        # missing project folder fails (FileNotFoundError) instead of appearing.
        self.lock_path.parent.mkdir(exist_ok=True)
        try:
            self._file_lock.acquire()
        except FileLockTimeout as exc:
            raise StoreBusyError(f"{self.lock_path}: lock not acquired within timeout") from exc
        return _Release(self._file_lock)

    def _transaction(self):
        return _Transaction(self)

    def _load(self) -> Snapshot:
        try:
            snap = self._read(self.path)
        except StoreCorruptError as exc:
            if self._last_good is None:
                # Nothing good known (at start): refuse, untouched, and say where help is.
                raise StoreCorruptError(self.path, f"{exc.problem}; {self.generations.describe(self.path)}") from None
            return self._restore(exc.problem)
        if snap is None:
            if (self._last_good is not None and self._last_good.revision > 0) or self.generations.newest_first():
                return self._restore(None)
            snap = Snapshot(revision=0)  # a new project
        return self._adopt(snap)

    def _read(self, path: Path) -> Snapshot | None:
        """Parse `path` (None when missing), reusing the cache when the file is unchanged."""
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnreadableError(f"{path}: cannot be read: {exc}") from None
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
            raise StoreUnreadableError(f"{path}: cannot be read: {exc}") from None
        try:
            return storeformat.parse(data, signature, self._cache)
        except FormatError as exc:
            raise self._corrupt(exc.problem) from None

    def _adopt(self, snap: Snapshot) -> Snapshot:
        if snap is not self._cache:
            if self._cache is not None and self._mirrors is not None:
                # Another writer changed the store: bring the mirrors along.
                self._mirrors.apply(changes_between(self._cache, snap))
                self._mirrors.remove([t for i, t in self._cache.tasks.items() if i not in snap.tasks])
            self._cache = snap
        self._last_good = snap
        return snap

    def _restore(self, problem: str | None) -> Snapshot:
        """The store file is missing (`problem` None) or corrupt: put back the newest good state
        this process knows (its memory or a kept generation), setting a damaged file aside."""
        with self._locked():
            # Look again under the lock: another process may have restored it already.
            try:
                current = self._read(self.path)
            except StoreCorruptError as exc:
                problem = exc.problem
            else:
                if current is not None:
                    return self._adopt(current)
                problem = None
            base, source = self._last_good, "this process's memory"
            generations = self.generations.newest_first()
            for revision, path in generations:
                if base is not None and revision <= base.revision:
                    break
                try:
                    found = self._read(path)
                except StoreError as exc:
                    log.warning("store generation %s is unusable: %s", path, exc)
                    continue
                if found is not None:
                    base, source = found, str(path)
                    break
            if base is None:
                # Generations exist (or the file was there a moment ago) but nothing is usable:
                # refuse rather than start an empty store over what was.
                what = problem or "file is missing"
                raise self._corrupt(f"{what}; no usable good copy: {self.generations.describe(self.path)}")
            aside = None
            if problem is not None:
                stamp = utcnow().strftime("%Y%m%dT%H%M%S.%fZ")
                aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
                try:
                    os.rename(self.path, aside)  # kept for a person to look at, never deleted
                except OSError as exc:
                    raise self._corrupt(f"{problem}; could not be set aside for restoring: {exc}") from None
            old = self._cache
            # _write numbers it past every generation: no process mistakes it for one it read.
            new = self._write(replace(base, signature=None), {})
            if old is not None and self._mirrors is not None:
                self._mirrors.apply(changes_between(old, new))
                self._mirrors.remove([t for i, t in old.tasks.items() if i not in new.tasks])
            what = f"was corrupt ({problem}); set aside as {aside.name}" if aside else "was missing"
            log.warning("task store %s %s; restored %d tasks (revision %d) from %s",
                        self.path, what, len(new.tasks), base.revision, source)
            return new

    def _corrupt(self, problem: str) -> StoreCorruptError:
        return StoreCorruptError(self.path, problem)

    def _write(self, snap: Snapshot, changed: dict[str, Task], removed: Iterable[str] = ()) -> Snapshot:
        tasks = dict(snap.tasks)
        lines = dict(snap.lines)
        for task_id in removed:
            del tasks[task_id], lines[task_id]
        for task_id, task in changed.items():
            tasks[task_id] = task
            lines[task_id] = encode_task(task)
        # Past every kept generation too: a file put back by hand with a lower revision must not
        # have its successors pruned as "oldest" (nor lose a restore to an older lineage).
        revision = max(snap.revision, self.generations.newest_revision()) + 1
        header = storeformat.header(revision)
        try:
            atomic_write(self.path, storeformat.chunks(header, lines.values()))
        except OSError as exc:
            if is_disk_full(exc):
                # atomic_write removed its temporary file; the store and the cache are as they were.
                raise StoreFullError(f"{self.path}: {exc.strerror or exc}: the change was not saved; "
                                     "free disk space, then retry") from None
            # E.g. a folder put where the file was while it was being restored: a store problem
            # reported as such (503, health), not an unhandled error.
            raise StoreUnreadableError(f"{self.path}: cannot be written: {exc.strerror or exc}; "
                                       "nothing was changed") from None
        # Safe to stat after the replace: we still hold the lock, so the file is ours.
        signature = _signature(os.stat(self.path))
        # Every process's restore then finds this state, not only this process's memory.
        self.generations.keep(self.path, revision)
        new = Snapshot(revision=revision, tasks=tasks, lines=lines, header=header + b"\n", signature=signature)
        self._cache = self._last_good = new
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
                store._settle_dependents(self._snap, self._changes)
                # data/ may be created, never the project folder above it.
                self._store.path.parent.mkdir(exist_ok=True)
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


def _memo(lookup: Callable[[str], Task | None]) -> Callable[[str], Task | None]:
    """`lookup` remembered for one transaction (archived tasks do not change while archived)."""
    seen: dict[str, Task | None] = {}

    def get(task_id: str) -> Task | None:
        if task_id not in seen:
            seen[task_id] = lookup(task_id)
        return seen[task_id]
    return get


def _asked(item: NewTask) -> dict[str, Any]:
    """A create item as a repeat of its request is compared: depends_on deduplicated, in order;
    without its tool grant (a token may rotate between repeats)."""
    data = {**item.model_dump(exclude={"tool_grant"}), "depends_on": list(dict.fromkeys(item.depends_on))}
    return _without_reports(data)


def _as_asked(task: Task, batch: list[Task]) -> dict[str, Any]:
    """A task created by a request, as that request asked for it: dependencies on tasks of the
    same request by their refs (as resolve() read them), others by id."""
    refs = {t.id: t.ref for t in batch if t.ref is not None}
    data = task.model_dump(include=set(NewTask.model_fields) - {"tool_grant"})
    data["depends_on"] = [refs.get(dep, dep) for dep in task.depends_on]
    return _without_reports(data)


def _without_reports(data: dict[str, Any]) -> dict[str, Any]:
    # Reports are recorded after create (a create carries none): a repeat asked for the issue only.
    if data.get("source") is not None:
        data["source"] = {**data["source"], "reports": {}}
    return data


def _check_new_source(item: NewTask, index: int | None) -> None:
    where = "" if index is None else f"tasks.{index}."
    if item.source is not None and item.source.reports:
        raise SourceError(f"{where}source.reports", "must be empty when a task is created "
                                                    "(the sync engine records reports afterwards)")
    if item.tool_grant is not None and item.source is None:
        raise SourceError(f"{where}tool_grant", "needs `source`: tracker tools work on a task's own issue")


def _trimmed(reports: dict[str, SourceReport], keep: str) -> dict[str, SourceReport]:
    """At most REPORTS_MAX reports: the oldest done ones go first, then the oldest claims; never `keep`."""
    excess = len(reports) - REPORTS_MAX
    if excess <= 0:
        return reports
    order = sorted((k for k in reports if k != keep), key=lambda k: (reports[k].state != "done", reports[k].at))
    for k in order[:excess]:
        del reports[k]
    return reports


def _reject_protected(fields: dict[str, Any]) -> None:
    bad = _PROTECTED_FIELDS & set(fields)
    if bad:
        raise ValueError(f"fields {sorted(bad)} can only change through a transition")


def _updated(task: Task, **fields: Any) -> Task:
    """A validated copy of `task` with `fields` changed."""
    data = task.model_dump()
    data.update(fields)
    return Task.model_validate(data)
