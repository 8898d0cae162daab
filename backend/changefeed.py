"""The change feed: what the board needs to follow a project by change instead of re-reading it.

A ChangeFeed watches one TaskStore. It diffs each snapshot against the last one it saw by each
task's stored JSON line (identical bytes: nothing to do), recomputes the small `summary` only for
changed lines, and records a change only when the SUMMARY differs, so heartbeat-only writes cost
the board nothing. Cursors are `"<epoch>.<revision>"`: the epoch is random per feed (per agent
process), so a cursor from another process, from before what the feed remembers, or from a store
that went backwards gets a `reset` (the window of each status) rather than a wrong delta.

`change_events` turns the feed into the event sequence of GET /agent/changes/stream; it is
woken by the store listener (writes by this process) and polls for other processes' writes.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio.to_thread

from .models import PRIORITY_RANK, STATUSES, Task
from .store import StoreError

FINISHED = ("completed", "failed", "cancelled")

USAGE_DAYS = 8
WINDOW_MAX = 1000
# Removed (archived) ids remembered for deltas; older removals make older cursors reset.
_REMOVED_KEPT = 20_000

_SUMMARY_FIELDS = (
    "id", "title", "status", "priority", "task_type", "runtime", "model", "agent_runtime", "agent_model",
    "needs_plan_review",
    "created_at", "started_at", "finished_at", "last_activity_at", "runs", "attempts", "error_reason",
    "cost_usd", "cost_estimated", "input_tokens", "output_tokens", "landing",
    "depends_on", "blocked_reason", "plan_id", "cancel_reason",
    "run_on", "worker",  # executor: dask: the box it is pinned to, the worker that ran its latest turn
)
_SUMMARY_SET = set(_SUMMARY_FIELDS) | {"inbox", "pr"}


def _iso(value: datetime) -> str:
    # Fixed width (always microseconds), so plain string order is time order.
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sort_key(task: Task) -> str:
    """Ascending plain string order within a status column (same formula for every project).
    Waiting columns (pending, blocked) go most urgent first, then oldest; the rest newest first."""
    if task.status.value in ("pending", "blocked"):
        return f"{3 - PRIORITY_RANK[task.priority]}|{_iso(task.created_at)}|{task.id}"
    when = task.finished_at or task.started_at or task.created_at
    epoch_ms = int(when.timestamp() * 1000)
    return f"{10**13 - epoch_ms:013d}|{task.id}"


def summary(task: Task) -> dict:
    """What a board card needs; None values, False booleans and empty lists are left out to keep
    it small."""
    data = task.model_dump(mode="json", include=_SUMMARY_SET)
    out = {key: data[key] for key in _SUMMARY_FIELDS
           if data.get(key) is not None and data.get(key) is not False and data.get(key) != []}
    if task.inbox:
        out["inbox"] = len(task.inbox)  # messages waiting for the agent's next turn
    if task.pr is not None:
        pr = task.pr
        out["pr"] = {"number": pr.number, "state": pr.state, "checks": pr.checks.state if pr.checks else "none"}
    if task.source is not None:  # the tracker issue it came from: the card's key and link (not the sync's reports)
        src = task.source
        out["source"] = {"kind": src.kind, "id": src.id, "identifier": src.identifier, "url": src.url}
    out["sort"] = sort_key(task)
    return out


def parse_cursor(cursor: str) -> tuple[str, int]:
    """(epoch, revision) of a cursor; ValueError when it is not one."""
    epoch, sep, revision = cursor.partition(".")
    if not sep or not epoch or len(epoch) > 64 or not epoch.isalnum() or not epoch.isascii() \
            or not revision.isascii() or not revision.isdigit() or len(revision) > 19:
        raise ValueError(f"not a change cursor: {cursor[:80]!r} (expected '<epoch>.<revision>')")
    return epoch, int(revision)


def _hour(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def _usage_of(status: str, finished_at: datetime | None, started_at: datetime | None,
              cost: float | None, tokens_in: int | None, tokens_out: int | None):
    """(hour, cost, input, output) a task adds to the usage figures, or None. A task's cost is
    the sum of its runs: it counts when it last finished, or, while it has not, when it last
    started (a time that stays put, unlike updated_at, which every heartbeat moves)."""
    if status in FINISHED and finished_at is not None:
        when = finished_at
    elif cost is not None and started_at is not None:
        when = started_at
    else:
        return None
    return (_hour(when), float(cost or 0.0), int(tokens_in or 0), int(tokens_out or 0))


def _task_usage(task: Task):
    return _usage_of(task.status.value, task.finished_at, task.started_at, task.cost_usd,
                     task.input_tokens, task.output_tokens)


class _ArchiveUsage:
    """Usage contributions of archived tasks, read once per version of the archive file (only the
    appended part when it grew). The last line of an id is the current one."""

    def __init__(self, path) -> None:
        self.path = path
        self._by_id: dict[str, Any] = {}
        self._signature: tuple | None = None
        self._inode: int | None = None
        self._read = 0

    def contributions(self) -> tuple[tuple | None, dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except OSError:
            self._by_id, self._signature, self._inode, self._read = {}, None, None, 0
            return None, self._by_id
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self._signature:
            return signature, self._by_id
        if st.st_ino != self._inode or st.st_size < self._read:
            self._by_id, self._read, self._inode = {}, 0, st.st_ino
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._read)
                for line in handle:
                    if not line.endswith(b"\n"):
                        break  # a torn last line: not part of the archive (archive.py)
                    self._read += len(line)
                    self._add(line)
        except OSError:
            return None, self._by_id
        self._signature = signature
        return signature, self._by_id

    def _add(self, line: bytes) -> None:
        try:
            data = json.loads(line)
            task_id = data["id"]
            self._by_id[task_id] = _usage_of(
                data.get("status", ""), _dt(data.get("finished_at")), _dt(data.get("started_at")),
                data.get("cost_usd"), data.get("input_tokens"), data.get("output_tokens"))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass  # not a task line: archive.py logs those


def _dt(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class ChangeFeed:
    def __init__(self, store) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._waiters: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self._archive = _ArchiveUsage(store.archive.path)
        self._usage_key: tuple | None = None
        self._usage: dict = {"hours": []}
        self._start(None)
        store.subscribe(self._wake)

    # ----- state --------------------------------------------------------------------------

    def _start(self, snap) -> None:
        """Forget everything: a new epoch, based on `snap` (None: read the store on first use)."""
        self.epoch = secrets.token_hex(8)
        self._revision: int | None = None
        self._base = 0  # cursors below this revision reset
        self._lines: dict[str, bytes] = {}
        self._summaries: dict[str, dict] = {}
        self._usage_by_id: dict[str, Any] = {}
        self._changed_at: dict[str, int] = {}  # live id -> revision of its last summary change
        self._removed: OrderedDict[str, int] = OrderedDict()  # id -> revision it left the live store
        self._sorted: dict[str, tuple[list[str], list[dict]]] | None = None
        self._usage_rev = 0  # bumps when a live task's usage contribution changes
        if snap is not None:
            self._apply(snap)

    def _sync(self) -> None:
        """Catch up with the store (cheap when it did not change: the store answers from cache)."""
        snap = self.store.snapshot()
        if self._revision is not None and snap.revision < self._revision:
            # The store went back (a file put back by hand): old cursors mean nothing any more.
            self._start(snap)
        elif snap.revision != self._revision:
            self._apply(snap)

    def _apply(self, snap) -> None:
        first = self._revision is None
        revision = snap.revision
        if first:
            self._base = revision
        changed = False
        lines = self._lines
        for task_id, line in snap.lines.items():
            old_line = lines.get(task_id)
            if old_line is line or old_line == line:
                continue
            task = snap.tasks[task_id]
            lines[task_id] = line
            new = summary(task)
            usage = _task_usage(task)
            if self._usage_by_id.get(task_id) != usage:
                self._usage_by_id[task_id] = usage
                self._usage_rev += 1
            if self._summaries.get(task_id) != new:
                self._summaries[task_id] = new
                self._changed_at[task_id] = revision
                self._removed.pop(task_id, None)  # back from the archive
                changed = True
        if not first:
            gone = [task_id for task_id in lines if task_id not in snap.lines]
            for task_id in gone:
                del lines[task_id]
                self._summaries.pop(task_id, None)
                self._changed_at.pop(task_id, None)
                if self._usage_by_id.pop(task_id, None) is not None:
                    self._usage_rev += 1
                self._removed[task_id] = revision
                changed = True
            while len(self._removed) > _REMOVED_KEPT:
                _, dropped_at = self._removed.popitem(last=False)
                self._base = max(self._base, dropped_at)
        self._revision = revision
        if changed:
            self._sorted = None

    def _columns(self) -> dict[str, tuple[list[str], list[dict]]]:
        if self._sorted is None:
            groups: dict[str, list[dict]] = {status: [] for status in STATUSES}
            for item in self._summaries.values():
                groups[item["status"]].append(item)
            columns = {}
            for status, items in groups.items():
                items.sort(key=lambda item: item["sort"])
                columns[status] = ([item["sort"] for item in items], items)
            self._sorted = columns
        return self._sorted

    def _cursor(self) -> str:
        return f"{self.epoch}.{self._revision}"

    # ----- queries ------------------------------------------------------------------------

    def changes(self, since: str | None, window: int = 100) -> dict:
        """As GET /agent/changes. Raises ValueError for a malformed cursor or window."""
        if not 1 <= window <= WINDOW_MAX:
            raise ValueError(f"window must be 1..{WINDOW_MAX}")
        parsed = parse_cursor(since) if since is not None else None
        with self._lock:
            self._sync()
            revision = self._revision
            reset = (parsed is None or parsed[0] != self.epoch or parsed[1] < self._base
                     or parsed[1] > revision)
            if reset:
                tasks = [item for _, items in self._columns().values() for item in items[:window]]
                removed: list[str] = []
            else:
                after = parsed[1]
                tasks = [self._summaries[i] for i, rev in self._changed_at.items() if rev > after]
                removed = [i for i, rev in self._removed.items() if rev > after]
            cursor = self._cursor()
        return {"cursor": cursor, "revision": revision, "reset": reset, "tasks": tasks,
                "removed": removed, "usage": self.usage()}

    def summaries(self, status: str, after: str | None, limit: int = 50, q: str | None = None) -> dict:
        """The summaries of `status` with sort > `after`, ascending, at most `limit`;
        `q`: case-insensitive substring of title or id."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._lock:
            self._sync()
            keys, items = self._columns()[status]
        start = bisect.bisect_right(keys, after) if after is not None else 0
        needle = q.casefold() if q else None
        found: list[dict] = []
        for item in items[start:]:
            if needle is None or needle in item["title"].casefold() or needle in item["id"].casefold():
                if len(found) == limit:
                    return {"tasks": found, "more": True}
                found.append(item)
        return {"tasks": found, "more": False}

    def usage(self) -> dict:
        """Hourly UTC buckets of the last USAGE_DAYS days, live tasks plus archived ones."""
        with self._lock:
            self._sync()
            now_hour = _hour(datetime.now(timezone.utc))
            signature, archived = self._archive.contributions()
            key = (self.epoch, self._usage_rev, signature, now_hour)
            if key == self._usage_key:
                return self._usage
            since = now_hour - timedelta(days=USAGE_DAYS)
            hours: dict[datetime, list] = {}
            live = self._usage_by_id
            for source, skip in ((live, None), (archived, live)):
                for task_id, item in source.items():
                    if item is None or (skip is not None and task_id in skip) or item[0] <= since:
                        continue
                    bucket = hours.setdefault(item[0], [0.0, 0, 0, 0])
                    bucket[0] += item[1]
                    bucket[1] += item[2]
                    bucket[2] += item[3]
                    bucket[3] += 1
            self._usage = {"hours": [
                {"hour": hour.strftime("%Y-%m-%dT%H:00:00Z"), "cost_usd": round(b[0], 6),
                 "input_tokens": b[1], "output_tokens": b[2], "tasks": b[3]}
                for hour, b in sorted(hours.items())]}
            self._usage_key = key
            return self._usage

    # ----- waking streams -----------------------------------------------------------------

    def wake(self) -> None:
        """Wake every change stream now (something its `state` shows may have changed)."""
        self._wake()

    def _wake(self) -> None:
        # Runs in the writer's thread: hand the wake-up to each stream's event loop.
        for loop, event in list(self._waiters.values()):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # that loop is closed; its stream is gone

    def _watch(self, event: asyncio.Event) -> int:
        token = id(event)
        self._waiters[token] = (asyncio.get_running_loop(), event)
        return token

    def _unwatch(self, token: int) -> None:
        self._waiters.pop(token, None)


async def change_events(
    feed: ChangeFeed,
    state: Callable[[], dict],
    since: str | None,
    window: int,
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_seconds: float = 1.0,
    keepalive_seconds: float = 15.0,
) -> AsyncIterator[tuple[str, dict | None, str | None]]:
    """(event, data, id) of a change stream: `state` first and whenever it changes, `changes`
    when there is something (or a reset); ("", None, None) is a keep-alive. `state` blocks: it
    runs in a worker thread, like the feed's reads."""
    wake = asyncio.Event()
    token = feed._watch(wake)
    try:
        last_state = await anyio.to_thread.run_sync(state)
        yield "state", last_state, None
        cursor = since
        last_sent = time.monotonic()
        while True:
            try:
                result = await anyio.to_thread.run_sync(feed.changes, cursor, window)
            except StoreError:
                result = None  # unreadable or busy for now: the state's health says why; retried next round
            if result is not None:
                cursor = result["cursor"]
                if result["reset"] or result["tasks"] or result["removed"]:
                    # Without usage: the `state` event carries it, and only when it changed.
                    yield "changes", {k: v for k, v in result.items() if k != "usage"}, cursor
                    last_sent = time.monotonic()
            current = await anyio.to_thread.run_sync(state)
            if current != last_state:
                last_state = current
                yield "state", current, None
                last_sent = time.monotonic()
            if time.monotonic() - last_sent >= keepalive_seconds:
                yield "", None, None
                last_sent = time.monotonic()
            if await is_disconnected():
                return
            wait = max(0.0, min(poll_seconds, keepalive_seconds - (time.monotonic() - last_sent)))
            try:
                await asyncio.wait_for(wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
            wake.clear()
    finally:
        feed._unwatch(token)
