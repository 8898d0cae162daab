"""Per-task logs under logs/:

    <id>.jsonl         the coding agent's raw output, exactly as printed (all runs, appended)
    <id>.stderr.log    its standard error
    <id>.test.log      the test command's output
    <id>.hooks.log     the output of WORKFLOW.md's hooks (a workflow task's)
    <id>.events.jsonl  parsed AgentEvents, one per line, numbered from 1 (`seq`)

Readers page through the events file by line; nothing holds a whole log in memory.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from ..models import is_valid_task_id
from ..models import TaskStatus
from ..runtimes.base import AgentEvent
from ..web.sse import sse_event

FOLLOW_POLL_SECONDS = 0.2
_OPEN = {TaskStatus.pending, TaskStatus.plan_review, TaskStatus.in_progress}


class TaskLogs:
    def __init__(self, logs_dir: Path, task_id: str) -> None:
        if not is_valid_task_id(task_id):
            raise ValueError(f"invalid task id {task_id!r}")
        self.dir = logs_dir
        self.raw = logs_dir / f"{task_id}.jsonl"
        self.stderr = logs_dir / f"{task_id}.stderr.log"
        self.tests = logs_dir / f"{task_id}.test.log"
        self.hooks = logs_dir / f"{task_id}.hooks.log"
        self.events = logs_dir / f"{task_id}.events.jsonl"
        # Files a runtime generates for the task (configs, isolated CLI state): outside the
        # worktree, so nothing of it can be committed. Kept while the task may resume.
        self.runtime_dir = logs_dir / f"{task_id}.runtime"


class EventWriter:
    """Appends events for one task, numbering them after those already in the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = _count_lines(path)

    def append(self, event: AgentEvent) -> AgentEvent:
        with self._lock:
            self._seq += 1
            numbered = event.model_copy(update={"seq": self._seq})
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(numbered.model_dump_json(exclude_none=True) + "\n")
        return numbered


class EventWriters:
    """One EventWriter per events file in this process: a task's run and a person's message
    (from an API thread) append to the same transcript without interleaving or misnumbering."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        self._lock = threading.Lock()
        self._writers: dict[Path, EventWriter] = {}

    def for_task(self, task_id: str) -> EventWriter:
        path = TaskLogs(self.logs_dir, task_id).events
        with self._lock:
            writer = self._writers.get(path)
            if writer is None:
                writer = self._writers[path] = EventWriter(path)
            return writer


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def read_events(path: Path, after: int = 0, limit: int = 500) -> list[dict]:
    """Events with seq > `after`, at most `limit`, read line by line."""
    out: list[dict] = []
    for seq, line in _lines_after(path, after):
        if len(out) >= limit:
            break
        out.append(_decode(line, seq))
    return out


def _lines_after(path: Path, after: int) -> Iterator[tuple[int, bytes]]:
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        for seq, line in enumerate(handle, start=1):
            if seq > after and line.endswith(b"\n"):
                yield seq, line


def _decode(line: bytes, seq: int) -> dict:
    try:
        data = json.loads(line)
    except ValueError:
        data = {"kind": "unparsed", "text": line.decode("utf-8", "replace")}
    data["seq"] = seq
    return data


class EventFollower:
    """Reads new complete lines of an events file as it grows (for Server-Sent Events)."""

    def __init__(self, path: Path, after: int = 0) -> None:
        self.path = path
        self.seq = 0
        self._offset = 0
        self._skip = after

    def poll(self) -> list[dict]:
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return []
        out = []
        with handle:
            handle.seek(self._offset)
            while True:
                line = handle.readline()
                if not line.endswith(b"\n"):
                    break  # not yet complete: read it next time
                self._offset += len(line)
                self.seq += 1
                if self.seq > self._skip:
                    out.append(_decode(line, self.seq))
        return out


async def follow_task(
    path: Path,
    after: int,
    status_of: Callable[[], TaskStatus],
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """Server-Sent Events for one task: its events after `after` as they are written, then an
    `end` event once the task is no longer pending or running."""
    follower = EventFollower(path, after=after)
    while True:
        # The status is read before the file, so every event written before the task ended
        # is sent before the end event.
        status = await run_in_threadpool(status_of)
        for item in await run_in_threadpool(follower.poll):
            yield sse_event(item.get("kind", "event"), item, item["seq"])
        if status not in _OPEN:
            yield sse_event("end", {"status": status.value})
            return
        if await disconnected():
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
