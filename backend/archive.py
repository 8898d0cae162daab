"""The archive: finished tasks older than `archive_after_days` leave the live store.

`data/dev-tasks.archive.jsonl` holds one task per line, exactly as the store holds it, and is
only ever appended to (but for a torn last line, which a crash mid-append left and which is cut
off before the next append). TaskStore.archive_finished appends (and fsyncs) the tasks before the live
write that drops them, so a crash in between leaves a task in both places: the live copy wins.
A rerun brings an archived task back to the live store; its archive line stays, shadowed. A
task archived again later is appended again: the last line of an id is the current one.

Reads go through an index id -> (offset, length), built by scanning the file once and then
extended from where it stopped (another process may have appended meanwhile). A second index,
Idempotency-Key -> ids, lets a repeated create find what it made even after it was archived.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError

from .fsutil import fsync_dir
from .models import Task, utcnow

log = logging.getLogger(__name__)

ARCHIVE_EVERY_SECONDS = 3600.0


class Archive:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._index: dict[str, tuple[int, int]] = {}  # in archive order: oldest first
        self._keys: dict[str, dict[str, None]] = {}  # Idempotency-Key -> ids (an ordered set)
        self._scanned = 0  # bytes of the file indexed so far (always at a line end)
        self._inode: int | None = None

    # ----- reading ------------------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            self._refresh()
            where = self._index.get(task_id)
            return self._read_at(where) if where else None

    def by_key(self, idempotency_key: str) -> list[Task]:
        """The archived tasks a request with this Idempotency-Key created, in archive order."""
        with self._lock:
            self._refresh()
            ids = list(self._keys.get(idempotency_key, ()))
            tasks = [self._read_at(self._index[task_id]) for task_id in ids if task_id in self._index]
        return [task for task in tasks if task is not None and task.idempotency_key == idempotency_key]

    def page(self, offset: int, limit: int, exclude: Iterable[str] = ()) -> tuple[int, list[Task]]:
        """(how many archived tasks, the `limit` tasks from `offset`), newest archived first.
        Tasks whose id is in `exclude` (the live ones) are left out."""
        skip = set(exclude)
        with self._lock:
            self._refresh()
            ids = [task_id for task_id in reversed(self._index) if task_id not in skip]
            chosen = [self._index[task_id] for task_id in ids[offset:offset + limit]]
            tasks = [self._read_at(where) for where in chosen]
        return len(ids), [task for task in tasks if task is not None]

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._index)

    def _read_at(self, where: tuple[int, int]) -> Task | None:
        offset, length = where
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            line = handle.read(length)
        try:
            return Task.model_validate_json(line)
        except ValidationError as exc:
            log.warning("%s: the line at byte %d is not a valid task: %s", self.path, offset, exc.errors()[0]["msg"])
            return None

    def _refresh(self) -> None:
        """Index what was appended since the last look (everything, if the file is new)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._index, self._keys, self._scanned, self._inode = {}, {}, 0, None
            return
        if st.st_ino != self._inode or st.st_size < self._scanned:
            self._index, self._keys, self._scanned, self._inode = {}, {}, 0, st.st_ino
        if st.st_size == self._scanned:
            return
        with open(self.path, "rb") as handle:
            handle.seek(self._scanned)
            offset = self._scanned
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a torn last line (a crash mid-append): never acknowledged, skipped
                task_id = _line_id(line)
                if task_id is None:
                    if line.strip():
                        log.warning("%s: skipping a line at byte %d that is not a task", self.path, offset)
                else:
                    self._index.pop(task_id, None)  # the last line of an id wins, and moves last
                    self._index[task_id] = (offset, len(line) - 1)
                    if (key := _line_key(line)) is not None:
                        self._keys.setdefault(key, {})[task_id] = None
                offset += len(line)
        self._scanned = offset

    # ----- writing ------------------------------------------------------------------------

    def append(self, tasks: list[Task]) -> None:
        """Append `tasks` durably. Raises OSError (nothing is dropped from the live store then)."""
        with self._lock:
            self._refresh()
            lines = [task.model_dump_json().encode("utf-8") for task in tasks]
            created = not self.path.exists()
            with open(self.path, "ab") as handle:
                if handle.tell() > self._scanned:
                    # A torn last line: an append that crashed before its live write, so those
                    # tasks are still live. Cut it off (appends hold the store lock: no one else
                    # is writing) so the new lines stay whole.
                    handle.truncate(self._scanned)
                handle.write(b"".join(line + b"\n" for line in lines))
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                fsync_dir(self.path.parent)
        # The index picks the new lines up on the next read.


def _line_id(line: bytes) -> str | None:
    # Lines are written as {"id":"abc",...}: read the id without parsing the whole task.
    if line.startswith(b'{"id":"') and line.endswith(b'}\n'):
        end = line.find(b'"', 7)
        if end > 7:
            return line[7:end].decode("ascii", "replace")
    try:
        value = json.loads(line).get("id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) else None


_KEY_FIELD = b'"idempotency_key":"'
_DECODER = json.JSONDecoder()


def _line_key(line: bytes) -> str | None:
    # The Idempotency-Key without parsing the whole task. In compact JSON an unescaped `":"`
    # only ends an object key, and no nested object has this field: the first hit is the task's.
    at = line.find(_KEY_FIELD)
    if at < 0:
        return None
    start = at + len(_KEY_FIELD) - 1
    try:
        value, _ = _DECODER.raw_decode(line[start:start + 1024].decode("utf-8", "replace"))
    except ValueError:
        return None
    return value if isinstance(value, str) else None


class Archiver:
    """Moves finished tasks older than `days` to the archive (and sweeps stale attachment
    uploads): at the first call, then at most once every `every` seconds. Driven by the
    dispatcher loop (no thread of its own)."""

    def __init__(self, store, days: float, every: float = ARCHIVE_EVERY_SECONDS,
                 clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self.days = days
        self.every = every
        self._clock = clock or time.monotonic
        self._last: float | None = None

    def run_if_due(self) -> int:
        now = self._clock()
        if self._last is not None and now - self._last < self.every:
            return 0
        self._last = now
        # The same hourly round sweeps uploads a killed process left half-received. (Attachments
        # themselves stay, archived or not: a rerun from the archive places them again.)
        from .attachments import AttachmentStore  # attachments -> store -> archive: imported late
        AttachmentStore(Path(self.store.path).parent).sweep_incoming()
        return len(archive_finished(self.store, self.days)) if self.days > 0 else 0


def archive_finished(store, days: float) -> list[Task]:
    """Archive the finished tasks whose `finished_at` is more than `days` days ago."""
    if days <= 0:
        return []
    cutoff = utcnow() - timedelta(days=days)
    moved = store.archive_finished(lambda task: (task.finished_at or task.updated_at) < cutoff)
    if moved:
        log.info("archived %d finished tasks older than %g days to %s", len(moved), days, store.archive.path)
    return moved
