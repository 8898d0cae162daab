"""The task store's file format: parsing and writing data/dev-tasks.json (store.py does the I/O).

Canonical form, one task per line so a changed task costs one line:

    {"schema_version":1,"revision":7,"write_id":"9f0c…","tasks":[
    {"id":"abc",…},
    {"id":"def",…}
    ]}

It is plain JSON; any valid JSON of that shape is accepted (the canonical form is just faster
to reload: lines equal to a cached snapshot's are not parsed again).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from .models import Task

SCHEMA_VERSION = 1


class FormatError(Exception):
    """The bytes are not a task store; `problem` says why, for a person."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


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


def encode_task(task: Task) -> bytes:
    return task.model_dump_json().encode("utf-8")


def parse(data: bytes, signature: tuple[int, int, int], old: Snapshot | None) -> Snapshot:
    """The snapshot `data` holds, reusing `old`'s parsed tasks for unchanged lines.
    Raises FormatError."""
    return _parse_canonical(data, signature, old) or _parse_any(data, signature)


def header(revision: int) -> bytes:
    """A canonical first line (without its newline), with a fresh random write_id."""
    return (
        b'{"schema_version":%d,"revision":%d,"write_id":"%s","tasks":['
        % (SCHEMA_VERSION, revision, secrets.token_hex(8).encode())
    )


def chunks(first_line: bytes, lines: Iterable[bytes]) -> list[bytes]:
    """The canonical file, as chunks to write in order."""
    body = b",\n".join(lines)
    return [first_line, b"\n", body, b"\n" if body else b"", b"]}\n"]


def changes_between(old: Snapshot, new: Snapshot) -> list[tuple[Task | None, Task]]:
    return [
        (old.tasks.get(task_id), new.tasks[task_id])
        for task_id, line in new.lines.items()
        if old.lines.get(task_id) != line
    ]


def _parse_canonical(data: bytes, signature: tuple[int, int, int], old: Snapshot | None) -> Snapshot | None:
    """Fast path for files in canonical form: reuse cached tasks whose line is unchanged.
    Returns None whenever the file is not exactly canonical; _parse_any then decides."""
    lines = data.split(b"\n")
    if len(lines) < 3 or lines[-1] != b"" or lines[-2] != b"]}":
        return None
    first = lines[0]
    if not first.endswith(b'"tasks":['):
        return None
    try:
        meta = json.loads(first + b"]}")
    except (ValueError, RecursionError):  # _parse_any names the problem
        return None
    if not _meta_ok(meta):
        return None
    body = lines[1:-2]
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
            line = encode_task(task)
        if task.id in tasks:
            return None
        tasks[task.id] = task
        encoded[task.id] = line
    return Snapshot(
        revision=meta["revision"], tasks=tasks, lines=encoded, header=first + b"\n", signature=signature
    )


def _parse_any(data: bytes, signature: tuple[int, int, int]) -> Snapshot:
    """Authoritative parse of any JSON; raises FormatError naming the problem."""
    if not data.strip():
        raise FormatError("file is empty (expected a JSON object with schema_version and tasks)")
    if b"\0" in data:
        # Checked first: json would guess UTF-16/32 from the zeros and report a codec error.
        offset = data.index(b"\0")
        raise FormatError(f"contains NUL bytes (binary data, not JSON), the first at byte {offset}")
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as exc:
        raise FormatError(f"not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise FormatError("nested too deeply to be a task store (not the expected shape)") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise FormatError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise FormatError("top level must be a JSON object")
    unknown = set(doc) - {"schema_version", "revision", "write_id", "tasks"}
    if unknown:
        raise FormatError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    if "schema_version" not in doc:
        raise FormatError("missing schema_version")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise FormatError(
            f"unsupported schema_version {doc['schema_version']!r} (this Baton reads {SCHEMA_VERSION})"
        )
    revision = doc.get("revision", 0)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise FormatError("revision must be a non-negative integer")
    raw_tasks = doc.get("tasks")
    if not isinstance(raw_tasks, list):
        raise FormatError("tasks must be a list")
    tasks: dict[str, Task] = {}
    for index, raw in enumerate(raw_tasks):
        try:
            task = Task.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(task)"
            ident = raw.get("id") if isinstance(raw, dict) else None
            label = f"tasks[{index}]" + (f" (id {ident!r})" if ident else "")
            raise FormatError(f"{label}: {where}: {first['msg']}") from None
        if task.id in tasks:
            raise FormatError(f"tasks[{index}]: duplicate id {task.id!r}")
        tasks[task.id] = task
    # Not canonical (or hand-edited): keep no header so the next read parses again, and
    # the next write rewrites it in canonical form.
    return Snapshot(
        revision=revision,
        tasks=tasks,
        lines={task_id: encode_task(task) for task_id, task in tasks.items()},
        signature=signature,
    )


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
