"""A task's diff for review: per-file unified hunks and stats between a base commit and the
task's work, within limits (huge files, many files, long lines, binary files).

Two git processes whatever the number of files: `--raw --numstat -z` for the file list (paths
NUL-terminated, so any byte in a name is safe) and one `-p` patch, streamed and cut off once the
limits are spent. Patch sections are paired with the file list in order, and a hunk's lines are
read by its header's counts: a line inside a hunk is content however much it looks like a
header ("diff --git ...", "@@ -1 +1 @@").
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from .dispatcher.workspace import BRANCH_PREFIX
from .gitrepo import GitError, run_git
from .models import Task, TaskStatus

MAX_FILES = 300  # files listed beyond this have no hunks (truncated: true)
MAX_FILE_BYTES = 256 * 1024  # patch text of one file; over it: too_large, no hunks
MAX_TOTAL_BYTES = 4 * 1024 * 1024  # patch text of all files shown; files after the budget: too_large
MAX_LINE_CHARS = 2000  # longer lines are clipped, ending with "…"
MAX_READ_BYTES = 64 * 1024 * 1024  # patch bytes read at most (skipped huge files count too)
MAX_CONTEXT = 20
TIMEOUT = 60.0

_SHA_RE = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1, or SHA-256 repositories
_HUNK_RE = re.compile(rb"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)", re.DOTALL)
_STATUS = {b"A": "added", b"D": "deleted", b"M": "modified", b"R": "renamed", b"C": "copied", b"T": "type_changed"}
_LINE_CAP = MAX_LINE_CHARS * 4 + 4  # bytes read of one line: enough for MAX_LINE_CHARS characters of UTF-8
_KIND = {ord(" "): "context", ord("+"): "add", ord("-"): "del"}
# Same options for both commands, so that both list the same files in the same order. No
# external diff or textconv (raw content, as git stores it); renames detected (old_path set).
_DIFF = ["-c", "core.quotePath=false", "diff", "--no-color", "--no-ext-diff", "--no-textconv", "-M"]


class NoDiff(Exception):
    """Nothing to diff: the task has no branch, or its commits are gone."""


def limits() -> dict:
    return {"max_files": MAX_FILES, "max_file_bytes": MAX_FILE_BYTES, "max_total_bytes": MAX_TOTAL_BYTES}


def task_diff(project_dir: Path, base_ref: str, task: Task, context: int = 3) -> dict:
    """The Diff answer for `task` (see README "API"). Raises NoDiff, or GitError when git fails."""
    if not 0 <= context <= MAX_CONTEXT:
        raise ValueError(f"context must be 0..{MAX_CONTEXT}")
    base, head, kind = diff_range(project_dir, base_ref, task)
    files, truncated = diff_files(project_dir, base, head, context)
    return {
        "task_id": task.id, "base": base, "head": head, "range": kind,
        "files": files,
        "stats": {"files": len(files), "additions": sum(f["additions"] for f in files),
                  "deletions": sum(f["deletions"] for f in files)},
        "truncated": truncated,
        "limits": limits(),
    }


def diff_range(project_dir: Path, base_ref: str, task: Task) -> tuple[str, str, str]:
    """(base sha, head sha, "review" | "landed" | "branch") for the task, or NoDiff."""
    if task.status == TaskStatus.review and task.review_sha and task.review_base:
        return (*_commits(project_dir, task.review_base, task.review_sha, "review"), "review")
    if task.status == TaskStatus.completed and task.base_sha and task.commit_sha:
        return (*_commits(project_dir, task.base_sha, task.commit_sha, "landed"), "landed")
    branch = f"refs/heads/{BRANCH_PREFIX}{task.id}"
    try:
        head = run_git(["rev-parse", "--verify", "--quiet", f"{branch}^{{commit}}"], project_dir).strip()
    except GitError as exc:
        if exc.returncode is None:
            raise
        raise NoDiff(f"task {task.id} has no branch {branch.removeprefix('refs/heads/')} to diff") from None
    try:
        base = run_git(["merge-base", base_ref, head], project_dir).strip()
    except GitError as exc:
        if exc.returncode is None:
            raise
        raise NoDiff(f"the branch of task {task.id} has no common commit with {base_ref}") from None
    return base, head, "branch"


def _commits(project_dir: Path, base: str, head: str, kind: str) -> tuple[str, str]:
    for sha in (base, head):
        if not _SHA_RE.fullmatch(sha):
            raise NoDiff(f"the task's {kind} commit {sha!r} is not a commit id")
    try:
        run_git(["rev-parse", "--quiet", f"{base}^{{commit}}", f"{head}^{{commit}}"], project_dir)
    except GitError as exc:
        if exc.returncode is None:
            raise
        raise NoDiff(f"the task's {kind} commits ({base[:12]}..{head[:12]}) are no longer in the repository") from None
    return base, head


@dataclass
class _Entry:
    path: str
    old_path: str | None
    status: str
    binary: bool
    additions: int
    deletions: int
    hunks: list[dict] = field(default_factory=list)
    too_large: bool = False
    size: int = 0  # patch bytes of its hunks

    def out(self) -> dict:
        return {"path": self.path, "old_path": self.old_path, "status": self.status, "binary": self.binary,
                "additions": self.additions, "deletions": self.deletions, "too_large": self.too_large,
                "hunks": [] if self.too_large else self.hunks}


def diff_files(project_dir: Path, base: str, head: str, context: int = 3) -> tuple[list[dict], bool]:
    """The files changed from `base` to `head` (shas), with hunks within the limits, and whether
    more than MAX_FILES changed."""
    if not (_SHA_RE.fullmatch(base) and _SHA_RE.fullmatch(head)):
        raise ValueError("base and head must be commit ids")
    span = ["--end-of-options", base, head, "--"]
    entries = parse_raw_numstat(_git_bytes([*_DIFF, "--raw", "--numstat", "-z", *span], project_dir))
    shown = entries[:MAX_FILES]
    if any(not e.binary for e in shown):
        _read_patch(project_dir, [*_DIFF, "-p", f"-U{context}", "--submodule=short", *span], shown)
    for entry in entries[MAX_FILES:]:
        entry.too_large = _has_text_changes(entry)
    return [e.out() for e in entries], len(entries) > MAX_FILES


def _has_text_changes(entry: _Entry) -> bool:
    return not entry.binary and entry.additions + entry.deletions > 0


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def parse_raw_numstat(out: bytes) -> list[_Entry]:
    """`git diff --raw --numstat -z`: every raw record (":modes shas STATUS\\0path\\0", renames and
    copies with two paths), then every numstat record ("add\\tdel\\tpath\\0", or
    "add\\tdel\\t\\0old\\0new\\0"), the same files in the same order."""
    fields = out.split(b"\0")
    i, raw = 0, []
    while i < len(fields) and fields[i].startswith(b":"):
        letter = fields[i].rsplit(b" ", 1)[-1][:1]
        if letter in (b"R", b"C"):
            raw.append((letter, fields[i + 1], fields[i + 2]))
            i += 3
        else:
            raw.append((letter, None, fields[i + 1]))
            i += 2
    entries = []
    for letter, old, new in raw:
        added, deleted, path = fields[i].split(b"\t", 2)
        i += 3 if path == b"" else 1
        binary = added == b"-"
        entries.append(_Entry(path=_decode(new), old_path=None if old is None else _decode(old),
                              status=_STATUS.get(letter, "modified"), binary=binary,
                              additions=0 if binary else int(added), deletions=0 if binary else int(deleted)))
    if any(f for f in fields[i:]):
        raise GitError(["diff", "--raw", "--numstat"], 0, "could not read git's file list")
    return entries


def _git_bytes(args: list[str], cwd: Path) -> bytes:
    """run_git for output that is bytes (paths may be any bytes; content any encoding)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise GitError(args, None, f"timed out after {TIMEOUT:g}s") from None
    if proc.returncode != 0:
        raise GitError(args, proc.returncode, _decode(proc.stderr))
    return proc.stdout


def _lines(stream: BinaryIO) -> Iterator[tuple[bytes, int, bool]]:
    """(line without its newline, clipped to _LINE_CAP bytes; its full size in bytes; clipped?):
    a single enormous line never sits in memory whole."""
    while True:
        chunk = stream.readline(_LINE_CAP)
        if not chunk:
            return
        if chunk.endswith(b"\n"):
            yield chunk[:-1], len(chunk), False
            continue
        size, clipped = len(chunk), False
        while more := stream.readline(_LINE_CAP):
            clipped, size = True, size + len(more)
            if more.endswith(b"\n"):
                break
        yield chunk, size, clipped


def _text(raw: bytes, clipped: bool) -> str:
    text = _decode(raw)
    if clipped or len(text) > MAX_LINE_CHARS:
        return text[:MAX_LINE_CHARS] + "…"
    return text


def _read_patch(project_dir: Path, args: list[str], entries: list[_Entry]) -> None:
    """Stream `git diff -p` and fill the entries' hunks; stop reading (and stop git) once every
    entry is seen or the byte budgets are spent."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(["git", *args], cwd=project_dir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=errors)
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        try:
            whole = _PatchReader(entries).read(proc.stdout)
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()  # we stopped reading: the rest is not wanted
            proc.stdout.close()
            code = proc.wait()
        if whole and code != 0:  # git failed, or the timer stopped it
            errors.seek(0)
            raise GitError(args, code if code > 0 else None, _decode(errors.read()) or f"timed out after {TIMEOUT:g}s")


class _PatchReader:
    """Pairs `git diff -p` sections with the file list and parses hunks by their counts."""

    def __init__(self, entries: list[_Entry]) -> None:
        self.entries = entries
        self.index = -1  # the entry whose section is being read
        self.header = b""  # its "diff --git" line: a type change comes as two sections with the same one
        self.total = 0  # bytes of hunks kept, all files
        self.spent = False  # the total budget is spent: this file and the ones after are too_large
        self.read_bytes = 0
        self.hunk: dict | None = None
        self.old = self.new = 0  # the next line numbers in the hunk
        self.old_left = self.new_left = 0  # the hunk's lines still expected, per side

    def read(self, stream: BinaryIO) -> bool:
        """True when the whole patch was read; False when reading stopped early."""
        for raw, size, clipped in _lines(stream):
            self.read_bytes += size
            if self.read_bytes > MAX_READ_BYTES:
                return self._stop(cut=True)
            if self.hunk is not None and (self.old_left > 0 or self.new_left > 0):
                self._content(raw, size, clipped)
                if self.spent:
                    return self._stop(cut=True)
                continue
            if self.hunk is not None and raw.startswith(b"\\"):
                continue  # "\ No newline at end of file" after the hunk's last line
            self.hunk = None
            if raw.startswith(b"diff --git "):
                if raw == self.header and self.entries[self.index].status == "type_changed":
                    continue  # the second half (the new type's side) of the same entry
                if self.index + 1 >= len(self.entries):
                    return self._stop(cut=False)  # the files past MAX_FILES are not read
                self.index += 1
                self.header = raw
            elif raw.startswith(b"@@ ") and self.index >= 0:
                self._start_hunk(raw, size, clipped)
                if self.spent:
                    return self._stop(cut=True)
            # Anything else outside a hunk is an extended header (modes, index, rename, ---/+++).
        return True

    def _stop(self, cut: bool) -> bool:
        """Reading ends here: the entry being read (when `cut`) and every later one with text
        changes have their hunks left out."""
        if cut and self.index >= 0:
            entry = self.entries[self.index]
            entry.too_large = _has_text_changes(entry)
        for later in self.entries[self.index + 1:]:
            later.too_large = _has_text_changes(later)
        return False

    def _start_hunk(self, raw: bytes, size: int, clipped: bool) -> None:
        match = _HUNK_RE.fullmatch(raw)
        if not match:
            return  # not a hunk header git writes; read on as headers
        old_start, old_lines, new_start, new_lines, _section = match.groups()
        self.old, self.new = int(old_start), int(new_start)
        self.old_left = 1 if old_lines is None else int(old_lines)
        self.new_left = 1 if new_lines is None else int(new_lines)
        self.hunk = {"header": _text(raw, clipped), "old_start": self.old, "old_lines": self.old_left,
                     "new_start": self.new, "new_lines": self.new_left, "lines": []}
        if self._count(size):
            self.entries[self.index].hunks.append(self.hunk)

    def _count(self, size: int) -> bool:
        """Charge `size` bytes to the current entry; False when its hunks are not kept."""
        entry = self.entries[self.index]
        if entry.too_large:
            return False
        entry.size += size
        self.total += size
        if entry.size > MAX_FILE_BYTES:  # this file alone: its hunks go, the others' stay
            entry.too_large, entry.hunks = True, []
            self.total -= entry.size
            return False
        if self.total > MAX_TOTAL_BYTES:
            entry.too_large, entry.hunks = True, []
            self.spent = True
            return False
        return True

    def _content(self, raw: bytes, size: int, clipped: bool) -> None:
        first = raw[:1]
        if first == b"\\":
            return  # "\ No newline at end of file" inside the hunk (after the old side's last line)
        kind = _KIND.get(first[0], "context") if first else "context"  # "": a blank context line
        line = {"kind": kind, "old": None, "new": None, "text": _text(raw[1:], clipped)}
        if kind != "add":
            line["old"] = self.old
            self.old += 1
            self.old_left -= 1
        if kind != "del":
            line["new"] = self.new
            self.new += 1
            self.new_left -= 1
        if self._count(size):
            self.hunk["lines"].append(line)
