"""Conversations on disk: `<chat dir>/<project id>/<chat id>.jsonl`, one record a line, appended.

Why here, and why so: conversations belong to the dashboard — it holds the API key and runs
the model — and not to an agent (a project may have none, and the agent's store is the
source of truth for tasks only). One JSONL file per conversation, only ever appended to: the
person's message is written before the model is asked and the answer once it has ended
(done, stopped or failed), so a crash loses at most the answer being written, and nothing
already said is ever rewritten. A complete line that cannot be read makes that conversation
refused with the file and line named (ChatCorrupt), never repaired or rewritten; a last line
without its newline is the torn tail of a crashed append: it is ignored, and cut off before the
next append (it never was a record).

Records (`type`): `chat` (first line: id, title, created_at), `title`, `message`,
`attachment` (a file uploaded to the chat; its bytes in `<chat id>.files/<attachment id>`),
`usage` (tokens spent outside a message, e.g. making a plan), `plan` (a plan made from it).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..models import TASK_ID_RE, new_task_id, utcnow

FORMAT = 1
TITLE_MAX = 200
DEFAULT_TITLE = "New chat"
STALE_UPLOAD_SECONDS = 3600  # a file this old in .incoming was left by an upload that never ended


_STAMP = TypeAdapter(AwareDatetime)


class ChatNotFound(LookupError):
    pass


class ChatCorrupt(ValueError):
    """str() names the file, the line and the problem."""


class Attachment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    size: int
    content_type: str
    image: bool
    sha256: str
    at: AwareDatetime


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    role: Literal["user", "assistant"]
    text: str
    at: AwareDatetime
    attachments: list[str] = Field(default_factory=list)  # attachment ids
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    stopped: bool = False
    error: str | None = None
    # The output tokens are a lower bound: the answer ended (stopped, failed) before the API's
    # final count arrived.
    usage_partial: bool = False


class Usage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    purpose: str
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    at: AwareDatetime


class Conversation:
    """A conversation as read from its file."""

    def __init__(self, chat_id: str, title: str, created_at: datetime) -> None:
        self.id = chat_id
        self.title = title
        self.created_at = created_at
        self.updated_at = created_at
        self.messages: list[Message] = []
        self.attachments: dict[str, Attachment] = {}
        self.usage: list[Usage] = []
        self.plan_ids: list[str] = []

    def totals(self) -> dict:
        spent = [*self.messages, *self.usage]
        costs = [s.cost_usd for s in spent if s.input_tokens or s.output_tokens]
        return {"input_tokens": sum(s.input_tokens for s in spent),
                "output_tokens": sum(s.output_tokens for s in spent),
                # None: some of it was spent on a model whose price is unknown
                "cost_usd": None if any(c is None for c in costs) else round(float(sum(costs)), 6),
                # a lower bound: some answer ended before the API's final token count
                "usage_partial": any(m.usage_partial for m in self.messages)}

    def summary(self) -> dict:
        totals = self.totals()
        return {"id": self.id, "title": self.title, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat(), "messages": len(self.messages),
                "cost_usd": totals["cost_usd"], "input_tokens": totals["input_tokens"],
                "output_tokens": totals["output_tokens"], "problem": None}

    def message_out(self, message: Message) -> dict:
        out = message.model_dump(mode="json")
        out["attachments"] = [self.attachments[a].model_dump(mode="json") for a in message.attachments
                              if a in self.attachments]
        return out

    def detail(self) -> dict:
        return {"id": self.id, "title": self.title, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat(),
                "messages": [self.message_out(m) for m in self.messages], "totals": self.totals(),
                "plan_ids": list(self.plan_ids)}


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not TASK_ID_RE.fullmatch(value):
        raise ChatNotFound(f"no {what} {value!r}")
    return value


class ChatStore:
    """Blocking file operations: call them off the event loop. Appends to one conversation are
    serialised by a lock per conversation (an answer being stored, a title, an upload), so a
    torn tail is judged and cut with the file's current size, never another thread's."""

    def __init__(self, root: Path | None) -> None:
        self._root = root  # None: a temporary folder, made on first use (nothing is kept after exit)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, project_id: str, chat_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((project_id, chat_id), threading.Lock())

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="baton-chats-"))
            atexit.register(shutil.rmtree, self._root, ignore_errors=True)
        return self._root

    def _folder(self, project_id: str) -> Path:
        return self.root / _check_id_project(project_id)

    def path(self, project_id: str, chat_id: str) -> Path:
        return self._folder(project_id) / f"{_check_id(chat_id, 'chat')}.jsonl"

    def files_dir(self, project_id: str, chat_id: str) -> Path:
        return self._folder(project_id) / f"{_check_id(chat_id, 'chat')}.files"

    # ----- reading -----------------------------------------------------------------------

    def load(self, project_id: str, chat_id: str) -> Conversation:
        path = self.path(project_id, chat_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ChatNotFound(f"no chat {chat_id!r} in project {project_id!r}") from None
        return _parse(path, chat_id, raw)

    def summaries(self, project_id: str) -> list[dict]:
        """Every conversation's summary, newest first; an unreadable one is listed with its problem."""
        folder = self._folder(project_id)
        if not folder.is_dir():
            return []
        out = []
        for path in folder.glob("*.jsonl"):
            chat_id = path.stem
            if not TASK_ID_RE.fullmatch(chat_id):
                continue
            try:
                out.append(_parse(path, chat_id, path.read_bytes()).summary())
            except (ChatCorrupt, OSError) as exc:
                stamp = datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat()
                out.append({"id": chat_id, "title": "(unreadable)", "created_at": stamp, "updated_at": stamp,
                            "messages": 0, "cost_usd": None, "input_tokens": 0, "output_tokens": 0,
                            "problem": str(exc)})
        out.sort(key=lambda s: (s["updated_at"], s["id"]), reverse=True)
        return out

    # ----- writing -----------------------------------------------------------------------

    def create(self, project_id: str, title: str | None) -> Conversation:
        folder = self._folder(project_id)
        folder.mkdir(parents=True, exist_ok=True)
        now = utcnow()
        while True:
            chat_id = new_task_id()
            path = folder / f"{chat_id}.jsonl"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            break
        try:
            os.write(fd, _line({"type": "chat", "format": FORMAT, "id": chat_id,
                                "title": (title or DEFAULT_TITLE), "created_at": now.isoformat()}))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(folder)
        return Conversation(chat_id, title or DEFAULT_TITLE, now)

    def append(self, project_id: str, chat_id: str, record: dict) -> None:
        """One record, as one write at the end of the file, synced."""
        path = self.path(project_id, chat_id)
        with self.lock(project_id, chat_id):
            self._append(path, record)

    def _append(self, path: Path, record: dict) -> None:
        data = _line(record)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size:
                os.lseek(fd, size - 1, os.SEEK_SET)
                if os.read(fd, 1) != b"\n":
                    _cut_torn_tail(fd, size)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def add_message(self, project_id: str, chat_id: str, message: Message) -> None:
        self.append(project_id, chat_id, {"type": "message", "message": message.model_dump(mode="json")})

    def incoming(self, project_id: str, chat_id: str) -> Path:
        """Where an upload is received (beside the files: keeping one is a rename). What an upload
        that never ended left (a killed process) is removed here, once an hour old."""
        folder = self.files_dir(project_id, chat_id) / ".incoming"
        folder.mkdir(parents=True, exist_ok=True)
        stale = time.time() - STALE_UPLOAD_SECONDS
        for leftover in folder.iterdir():
            try:
                if leftover.lstat().st_mtime < stale:
                    leftover.unlink()
            except OSError:
                pass
        return folder

    def keep_files(self, project_id: str, chat_id: str, files: list[tuple[Attachment, Path]],
                   check: Callable[[Conversation], None]) -> None:
        """Received files moved into place, then listed, after `check` (the chat's limits) passed
        on the conversation as it is now: under the conversation's lock, so two uploads at once
        cannot pass a limit together. A crash in between leaves an unlisted file, never a listed
        one without bytes."""
        folder = self.files_dir(project_id, chat_id)
        path = self.path(project_id, chat_id)
        with self.lock(project_id, chat_id):
            check(self.load(project_id, chat_id))
            for attachment, received in files:
                os.replace(received, folder / _check_id(attachment.id, "attachment"))
            _fsync_dir(folder)
            for attachment, _ in files:
                self._append(path, {"type": "attachment", "attachment": attachment.model_dump(mode="json")})

    def read_file(self, project_id: str, chat_id: str, attachment_id: str) -> bytes:
        return (self.files_dir(project_id, chat_id) / _check_id(attachment_id, "attachment")).read_bytes()


def _check_id_project(project_id: str) -> str:
    # Project ids are validated by the dashboard's config (a-z, 0-9, '-'); never a path part.
    if not project_id or "/" in project_id or "\\" in project_id or project_id.startswith("."):
        raise ChatNotFound(f"no project {project_id!r}")
    return project_id


def _line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _cut_torn_tail(fd: int, size: int) -> None:
    """Drop the unfinished last line a crash left (the reader never counted it)."""
    chunk = 64 * 1024
    end = size
    while end > 0:
        start = max(0, end - chunk)
        os.lseek(fd, start, os.SEEK_SET)
        block = os.read(fd, end - start)
        cut = block.rfind(b"\n")
        if cut != -1:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(path: Path, chat_id: str, raw: bytes) -> Conversation:
    lines = raw.split(b"\n")
    lines.pop()  # after the last newline: empty, or a torn tail (ignored, see the docstring)
    conversation: Conversation | None = None
    for number, line in enumerate(lines, start=1):
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ChatCorrupt(f"{where}: not JSON ({exc}); the conversation is left as it is") from None
        if not isinstance(record, dict):
            raise ChatCorrupt(f"{where}: not a record")
        kind = record.get("type")
        try:
            if conversation is None:
                if kind != "chat" or record.get("id") != chat_id or record.get("format") != FORMAT:
                    raise ChatCorrupt(f"{where}: the first line must be this chat's header (format {FORMAT})")
                created = _STAMP.validate_python(record.get("created_at"))
                title = record.get("title")
                if not isinstance(title, str):
                    raise ChatCorrupt(f"{where}: no title")
                conversation = Conversation(chat_id, title, created)
                continue
            _apply(conversation, kind, record, where)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ChatCorrupt(f"{where}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    if conversation is None:
        raise ChatCorrupt(f"{path}: empty (no header line)")
    return conversation


def _apply(conversation: Conversation, kind: object, record: dict, where: str) -> None:
    if kind == "message":
        message = Message.model_validate(record.get("message"))
        conversation.messages.append(message)
        conversation.updated_at = max(conversation.updated_at, message.at)
    elif kind == "attachment":
        attachment = Attachment.model_validate(record.get("attachment"))
        conversation.attachments[attachment.id] = attachment
    elif kind == "usage":
        conversation.usage.append(Usage.model_validate(record))
    elif kind == "plan":
        plan_id = record.get("plan_id")
        if not isinstance(plan_id, str):
            raise ChatCorrupt(f"{where}: a plan record without plan_id")
        conversation.plan_ids.append(plan_id)
    elif kind == "title":
        title = record.get("title")
        if not isinstance(title, str):
            raise ChatCorrupt(f"{where}: a title record without a title")
        conversation.title = title
    else:
        raise ChatCorrupt(f"{where}: unknown record type {kind!r}")
