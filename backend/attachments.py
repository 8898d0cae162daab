"""Files a person attaches to a task: names, types, limits, receiving an upload, storing it.

Why this shape:
- Bytes live under `<project>/data/attachments/<task id>/<name>` (runtime state, never committed);
  the task record holds each file's metadata (`Task.attachments`), written under the store's lock,
  so the board sees them and two racing uploads cannot pass the count or size limits.
- An upload is a multipart/form-data body parsed as it arrives (python-multipart's streaming
  parser): each file goes to a temporary file beside its final place, checked while it is written
  (its size against the cap, its bytes against its type), so no body is ever held in memory and a
  file over the limit is refused at the byte that crosses it.
- The same name again replaces the earlier file (the answer says which names were replaced): a
  person re-attaching a corrected screenshot means that one, and the agent's path stays the same.
- Types are allowed by extension AND content: images by their magic bytes (png, jpeg, gif, webp),
  PDF by `%PDF-`, text-like files (plain text, data formats, source code) only if they are UTF-8.
  Served back as `attachment` with `nosniff`: images with their type, text as text/plain, the rest
  as application/octet-stream; never anything a browser would run.

The chat (backend/chat/) uses clean_name, kind_for, FileCheck and receive with its own limits.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import tempfile
import threading
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from .models import ATTACHMENT_NAME_MAX, ATTACHMENTS_MAX, Attachment, Task, check_attachment_name, utcnow
from .store import InvalidTransitionError, TaskNotFoundError

MIB = 1024 * 1024
MAX_FILE_BYTES = 10 * MIB  # one file
MAX_FILES = ATTACHMENTS_MAX  # files on one task (20)
MAX_TOTAL_BYTES = 50 * MIB  # all of one task's files together
NAME_MAX_CHARS = ATTACHMENT_NAME_MAX  # 100
NAME_MAX_BYTES = 200  # as UTF-8: file systems take 255
FIELD = "files"  # the multipart field that carries the files
# Where the coding agent finds a task's files, relative to its worktree (never committed).
WORKTREE_DIR = ".baton/attachments"
_INCOMING = ".incoming"  # temporary files of uploads under way (a task id never starts with a dot)
STALE_UPLOAD_SECONDS = 24 * 3600  # a temporary upload file this old was left by a killed process


class AttachmentError(Exception):
    """An upload or a read refused: HTTP status, error code, a message for the person."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# ----- names ------------------------------------------------------------------------------

_REPLACED = set('/\\:*?"<>|')  # separators, and what other file systems or git pathspecs read specially
_DROPPED = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # control, invisible-format (bidi), surrogates, line breaks


def clean_name(raw: str) -> str:
    """A safe file name from what a client sent: its last path segment, control and invisible
    characters removed, NFC, `/ \\ : * ? " < > |` as `_`, no leading dots, no `..`, at most
    100 characters and 200 bytes with the extension kept. Empty afterwards: 422 invalid_name."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]  # the basename, whichever separator
    name = "".join(c for c in name if unicodedata.category(c) not in _DROPPED)
    # NFC after the removal: a dropped character (a joiner) may have kept a letter and its accent apart.
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if c in _REPLACED else c for c in name)
    while ".." in name:
        name = name.replace("..", ".")
    name = name.strip().lstrip(".").strip()
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 20:
        stem, dot, ext = name, "", ""
    tail = dot + ext
    stem = stem[:NAME_MAX_CHARS]
    while stem and (len(stem) + len(tail) > NAME_MAX_CHARS or len((stem + tail).encode("utf-8")) > NAME_MAX_BYTES):
        stem = stem[:-1]
    name = (stem.rstrip() + tail) if stem else name[:NAME_MAX_CHARS]
    name = name.strip()
    try:
        return check_attachment_name(name)
    except ValueError:
        raise AttachmentError(422, "invalid_name",
                              f"{raw[:120]!r} leaves no usable file name once cleaned (a name needs letters, "
                              "not only dots, slashes or control characters)") from None


# ----- types ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    content_type: str  # what the file is
    image: bool = False
    magic: tuple[bytes, ...] = ()  # one of these must start the file (images, PDF)
    text: bool = False  # the whole file must be UTF-8

    @property
    def served_type(self) -> str:
        """What GET answers with: never a type a browser renders as a page or runs."""
        if self.image:
            return self.content_type
        return "text/plain; charset=utf-8" if self.text else "application/octet-stream"

    @property
    def label(self) -> str:
        if self.image or self.text:
            return "image" if self.image else "text"
        return "PDF" if self.content_type == "application/pdf" else "file"


_IMAGES = {
    "png": Kind("image/png", True, (b"\x89PNG\r\n\x1a\n",)),
    "jpg": Kind("image/jpeg", True, (b"\xff\xd8\xff",)),
    "jpeg": Kind("image/jpeg", True, (b"\xff\xd8\xff",)),
    "gif": Kind("image/gif", True, (b"GIF87a", b"GIF89a")),
    "webp": Kind("image/webp", True, (b"RIFF",)),  # and "WEBP" at offset 8, see FileCheck
}
_PDF = Kind("application/pdf", magic=(b"%PDF-",))
_TEXT_TYPES = {
    "md": "text/markdown", "markdown": "text/markdown", "csv": "text/csv", "tsv": "text/tab-separated-values",
    "json": "application/json", "jsonl": "application/jsonl", "yaml": "application/yaml",
    "yml": "application/yaml", "toml": "application/toml", "html": "text/html", "htm": "text/html",
    "xml": "application/xml", "svg": "image/svg+xml", "diff": "text/x-diff", "patch": "text/x-diff",
}
_TEXT_EXTENSIONS = {
    *_TEXT_TYPES, "txt", "text", "rst", "adoc", "org", "log", "ini", "cfg", "conf", "env", "properties",
    "py", "pyi", "ipynb", "js", "mjs", "cjs", "ts", "tsx", "jsx", "css", "scss", "sass", "less", "vue", "svelte",
    "java", "kt", "kts", "scala", "groovy", "gradle", "go", "rs", "c", "h", "cc", "cpp", "cxx", "hpp", "hh", "cs",
    "fs", "rb", "php", "pl", "pm", "swift", "m", "mm", "sh", "bash", "zsh", "fish", "ps1", "bat", "sql", "r",
    "lua", "dart", "ex", "exs", "erl", "hrl", "hs", "ml", "mli", "clj", "cljs", "elm", "jl", "nim", "zig",
    "graphql", "gql", "proto", "tf", "hcl", "cmake", "mk", "make", "dockerfile", "lock", "sum", "mod", "tex",
}
_TEXT_NAMES = {"makefile", "dockerfile", "readme", "license", "changelog", "gemfile", "procfile", "justfile"}
ALLOWED = ("images (png, jpeg, gif, webp), PDF, and UTF-8 text: txt, md, csv, tsv, json, yaml, toml, log, "
           "diff/patch, html, xml and source code")


def kind_for(name: str) -> Kind:
    """The kind a (clean) name's extension stands for; anything else: 415 unsupported_type."""
    stem, dot, ext = name.rpartition(".")
    ext = ext.lower() if dot and stem else ""
    if ext in _IMAGES:
        return _IMAGES[ext]
    if ext == "pdf":
        return _PDF
    if ext in _TEXT_EXTENSIONS or (not ext and name.lower() in _TEXT_NAMES):
        return Kind(_TEXT_TYPES.get(ext, "text/plain"), text=True)
    raise AttachmentError(415, "unsupported_type", f"{name}: this kind of file is not accepted; allowed: {ALLOWED}")


class FileCheck:
    """Checks a file's bytes against its kind as they arrive: magic bytes, or UTF-8 throughout."""

    def __init__(self, name: str, kind: Kind) -> None:
        self.name, self.kind = name, kind
        self._head = b""
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict") if kind.text else None

    def feed(self, data: bytes) -> None:
        if len(self._head) < 16:
            self._head += data[: 16 - len(self._head)]
        if self._decoder is not None:
            try:
                self._decoder.decode(data)
            except UnicodeDecodeError:
                raise self._refused("it is not UTF-8 text") from None

    def finish(self) -> None:
        if self._decoder is not None:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise self._refused("it is not UTF-8 text (it ends inside a character)") from None
        if self.kind.magic and not any(self._head.startswith(m) for m in self.kind.magic):
            raise self._refused(f"its content is not {self.kind.content_type}")
        if self.kind.content_type == "image/webp" and self._head[8:12] != b"WEBP":
            raise self._refused("its content is not image/webp")

    def _refused(self, why: str) -> AttachmentError:
        return AttachmentError(415, "unsupported_type", f"{self.name}: {why}")


def check_bytes(name: str, data: bytes) -> Kind:
    """Kind and content check of a whole file in memory (small files, tests)."""
    kind = kind_for(name)
    check = FileCheck(name, kind)
    check.feed(data)
    check.finish()
    return kind


# ----- receiving an upload ----------------------------------------------------------------

@dataclass
class Upload:
    """One received file, checked, in a temporary file until it is stored."""

    name: str
    kind: Kind
    path: Path
    size: int = 0
    sha256: str = ""


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    field_name: bytes = b""
    value: bytes = b""
    upload: Upload | None = None
    handle: Any = None
    digest: Any = None
    check: FileCheck | None = None


class Receiver:
    """Parses one multipart/form-data body fed chunk by chunk. Every part must be a file in the
    `files` field; each goes to its own temporary file in `folder`, refused as soon as it passes
    `max_file_bytes`, the request passes `max_total_bytes`, or there are more than `max_files`.
    A name given twice keeps the last file. `close()` removes every temporary file still held."""

    def __init__(self, content_type: str, folder: Path, *, max_file_bytes: int = MAX_FILE_BYTES,
                 max_files: int = MAX_FILES, max_total_bytes: int = MAX_TOTAL_BYTES, field_name: str = FIELD) -> None:
        kind, options = parse_options_header(content_type or "")
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise AttachmentError(415, "unsupported_media_type",
                                  f"send the files as multipart/form-data in the field {field_name!r}")
        self.folder = folder
        self.max_file_bytes, self.max_files, self.max_total = max_file_bytes, max_files, max_total_bytes
        self.field = field_name.encode()
        self.files: dict[str, Upload] = {}
        self._orphans: list[Path] = []  # temporary files superseded by a later file of the same name
        self._total = 0
        self._parts = 0
        self._ended = False
        self._part = _Part()
        self._field, self._value = b"", b""
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done, "on_part_data": self._data,
            "on_part_end": self._end, "on_end": self._all_done,
        })

    # python-multipart calls these while write() runs; an AttachmentError raised here ends write().
    def _begin(self) -> None:
        self._part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._part.headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_done(self) -> None:
        part = self._part
        disposition, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        if disposition != b"form-data":
            raise AttachmentError(400, "malformed_multipart", "a part has no Content-Disposition: form-data")
        if options.get(b"name") != self.field:
            raise AttachmentError(422, "validation_error",
                                  f"unexpected field {options.get(b'name', b'').decode('utf-8', 'replace')[:80]!r}: "
                                  f"send files in {self.field.decode()!r} only")
        raw = options.get(b"filename")
        if raw is None:
            raise AttachmentError(422, "validation_error", f"each part of {self.field.decode()!r} must be a file "
                                                          "(with a filename)")
        self._parts += 1
        if self._parts > self.max_files:
            raise AttachmentError(409, "too_many_attachments", f"at most {self.max_files} files at once")
        # Browsers write `"` and line breaks in a multipart file name as %22, %0A and %0D (WHATWG
        # HTML, multipart/form-data encoding).
        text = raw.decode("utf-8", "replace").replace("%22", '"').replace("%0A", "\n").replace("%0D", "\r")
        name = clean_name(text)
        kind = kind_for(name)
        fd, tmp = tempfile.mkstemp(prefix="upload-", dir=self.folder)
        part.upload = Upload(name=name, kind=kind, path=Path(tmp))
        part.handle = os.fdopen(fd, "wb")
        part.digest = hashlib.sha256()
        part.check = FileCheck(name, kind)

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.upload is None:
            return
        chunk = data[start:end]
        part.upload.size += len(chunk)
        self._total += len(chunk)
        if part.upload.size > self.max_file_bytes:
            raise AttachmentError(413, "too_large", f"{part.upload.name}: larger than "
                                                    f"{self.max_file_bytes // MIB} MiB (the limit per file)")
        if self._total > self.max_total:
            raise AttachmentError(413, "too_large", f"the files together are larger than {self.max_total // MIB} MiB")
        part.check.feed(chunk)
        part.digest.update(chunk)
        part.handle.write(chunk)

    def _end(self) -> None:
        part = self._part
        if part.upload is None:
            return
        part.handle.close()
        part.handle = None
        part.check.finish()
        part.upload.sha256 = part.digest.hexdigest()
        earlier = self.files.pop(part.upload.name, None)
        if earlier is not None:
            self._orphans.append(earlier.path)
        self.files[part.upload.name] = part.upload
        part.upload = None

    def _all_done(self) -> None:
        self._ended = True

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise AttachmentError(400, "malformed_multipart", f"the multipart body cannot be read: {exc}") from None

    def finish(self) -> list[Upload]:
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise AttachmentError(400, "malformed_multipart", f"the multipart body cannot be read: {exc}") from None
        if not self._ended:
            raise AttachmentError(400, "malformed_multipart", "the multipart body ended before its closing boundary")
        if not self.files:
            raise AttachmentError(422, "validation_error", f"no file in the field {self.field.decode()!r}")
        return list(self.files.values())

    def close(self) -> None:
        """Remove every temporary file (call once the uploads were moved, or on failure)."""
        if self._part.handle is not None:
            self._part.handle.close()
        paths = [*self._orphans, *(u.path for u in self.files.values())]
        if self._part.upload is not None:
            paths.append(self._part.upload.path)
        for path in paths:
            path.unlink(missing_ok=True)


async def receive(chunks: AsyncIterator[bytes], content_type: str, folder: Path,
                  receiver_class: type[Receiver] | None = None, **limits: Any) -> tuple[Receiver, list[Upload]]:
    """Read a whole multipart body into checked temporary files in `folder` (with `receiver_class`'s
    rules, Receiver's by default). On any refusal the temporary files are gone; on success the
    caller moves them and calls `close()`."""
    receiver = (receiver_class or Receiver)(content_type, folder, **limits)
    try:
        async for chunk in chunks:
            receiver.feed(chunk)
        return receiver, receiver.finish()
    except BaseException:
        receiver.close()
        raise


# ----- storing ----------------------------------------------------------------------------

class AttachmentStore:
    """A project's attachments on disk, their metadata in the task store."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "attachments"
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def folder(self, task_id: str) -> Path:
        return self.root / task_id

    def incoming(self) -> Path:
        """Where uploads are received (beside their final place: moving is a rename). Creates
        data/attachments/ but never data/ itself (nor the project folder)."""
        self.root.mkdir(exist_ok=True)
        folder = self.root / _INCOMING
        folder.mkdir(exist_ok=True)
        self.sweep_incoming()
        return folder

    def sweep_incoming(self) -> int:
        """Remove what a process killed mid-upload left in .incoming/ (an upload under way is much
        younger than STALE_UPLOAD_SECONDS). Runs before each upload, and hourly from the
        dispatcher's loop (archive.Archiver) so a project that takes no more uploads is swept too.
        Creates nothing. Returns how many files it removed."""
        stale = time.time() - STALE_UPLOAD_SECONDS
        try:
            leftovers = list(os.scandir(self.root / _INCOMING))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        removed = 0
        for leftover in leftovers:
            try:
                if not leftover.is_dir(follow_symlinks=False) and leftover.stat(follow_symlinks=False).st_mtime < stale:
                    os.unlink(leftover.path)
                    removed += 1
            except OSError:
                pass
        return removed

    def _lock(self, task_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(task_id, threading.Lock())

    def add(self, store, task_id: str, uploads: list[Upload]) -> tuple[list[Attachment], list[str]]:
        """Record `uploads` on the task and move them into place: (what was added, names that
        replaced an earlier file). The limits are checked under the store's lock; an archived task
        is refused (409), an unknown one raises TaskNotFoundError."""
        if task_id not in store.snapshot().tasks:
            archived = store.archive.get(task_id)
            if archived is None:
                raise TaskNotFoundError(task_id)
            raise InvalidTransitionError(archived, archived.status, f"is {archived.status.value} and archived: "
                                                                    "rerun it to attach files")
        now = utcnow()
        added = [Attachment(name=u.name, size=u.size, content_type=u.kind.content_type, image=u.kind.image,
                            sha256=u.sha256, at=now) for u in uploads]
        replaced: list[str] = []

        def decide(task: Task):
            kept = [a for a in task.attachments if a.name not in {u.name for u in uploads}]
            replaced[:] = [a.name for a in task.attachments if a not in kept]
            result = [*kept, *added]
            if len(result) > MAX_FILES:
                raise AttachmentError(409, "too_many_attachments",
                                      f"task {task.id} has {len(task.attachments)} files; at most {MAX_FILES} per task")
            if sum(a.size for a in result) > MAX_TOTAL_BYTES:
                raise AttachmentError(413, "too_large", f"task {task.id}'s files would be larger than "
                                                        f"{MAX_TOTAL_BYTES // MIB} MiB together (the limit per task)")
            return None, {"attachments": result}

        # One upload per task at a time in this process: the files move in the order their
        # metadata was written, so the bytes on disk are the ones the task record describes.
        with self._lock(task_id):
            store.revise(task_id, decide)
            folder = self.folder(task_id)
            folder.mkdir(exist_ok=True)
            for upload in uploads:
                os.replace(upload.path, folder / upload.name)
        return added, replaced

    def file(self, task: Task, name: str) -> tuple[Attachment, Path]:
        """A task's attachment and the path of its bytes; 404 when there is no such file."""
        found = next((a for a in task.attachments if a.name == name), None)
        path = self.folder(task.id) / name if found is not None else None
        if found is None or path is None or not path.is_file() or path.is_symlink():
            raise AttachmentError(404, "not_found", f"task {task.id} has no attachment {name[:120]!r}")
        return found, path

    def stored_names(self, task_id: str) -> list[str]:
        """The files on disk for a task (what the dispatcher places in its worktree)."""
        try:
            entries = sorted(os.scandir(self.folder(task_id)), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for entry in entries:
            try:
                check_attachment_name(entry.name)
            except ValueError:
                continue
            if entry.is_file(follow_symlinks=False):
                names.append(entry.name)
        return names


def served_type(name: str) -> str:
    """The Content-Type a download of `name` is sent with (see Kind.served_type)."""
    try:
        return kind_for(name).served_type
    except AttachmentError:
        return "application/octet-stream"


def download_headers(name: str) -> dict[str, str]:
    """Always a download, never shown in place. (`X-Content-Type-Options: nosniff` and a strict
    CSP come with every answer of both servers: backend/web/security.py.)"""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    return {"Content-Disposition": f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}",
            "Cache-Control": "no-store"}


async def store_upload(store, attachments: AttachmentStore, task_id: str, chunks: AsyncIterator[bytes],
                       content_type: str, run) -> dict:
    """A whole upload: the task must exist (before the body is read), the body is received into
    checked temporary files, then recorded and moved. `run(fn, *args)` runs blocking work off the
    event loop (and maps store errors, for the dashboard's local connector). The agent's route and
    the local connector share it. Answers {attachments: [the files stored], replaced: [names]}."""
    await run(store.get, task_id)
    folder = await run(attachments.incoming)
    receiver, uploads = await receive(chunks, content_type, folder)
    try:
        added, replaced = await run(attachments.add, store, task_id, uploads)
    finally:
        receiver.close()
    return {"attachments": [a.model_dump(mode="json") for a in added], "replaced": replaced}


def describe(attachment: Attachment) -> str:
    """How the prompt names a file: `.baton/attachments/x.png` (image, 12 KB)."""
    size = attachment.size
    amount = f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} KB" if size < MIB else f"{size / MIB:.1f} MB"
    try:
        label = kind_for(attachment.name).label
    except AttachmentError:
        label = "file"
    return f"`{WORKTREE_DIR}/{attachment.name}` ({label}, {amount})"
