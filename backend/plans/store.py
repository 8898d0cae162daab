"""PlanStore: the only code that reads or writes plan files, <project>/plans/<state>/<id>.json.

One JSON file per plan, in the folder of its state; a state change writes the file into the new
folder, then removes the old one. Every read-modify-write holds one file lock
(`plans/.plans.lock`, across threads and processes) and writes atomically (fsutil.atomic_write).

A crash between writing the new file and removing the old one leaves the same id in two folders:
the copy with the higher revision (then the later `updated_at`, then the later state) is the
plan, and the other copy is removed the next time the plan is read under the lock. Every change,
state moves included, raises the revision, so the newer copy is always the one that wins.

A file that is not valid JSON, not a valid plan, of an unknown `format`, or whose name, id and
folder disagree, is listed under `invalid` with its problem and never overwritten or deleted:
a person may be editing it by hand. A plan with such a file beside a valid copy can be read (the
valid copy) but not changed until the file is fixed or removed.

plans/ lies in the user's checkout, where a commit of an untrusted agent can put files and
symbolic links (only .git/info/exclude keeps Baton's own files out of commits). So no link is
ever followed: plans/, a state folder, the lock or a plan file that is a link (or not a folder /
not a regular file) is listed as invalid, never read through, written through or removed
through. A folder that cannot be used answers 503 plans_unavailable (507 insufficient_storage
when the disk is full), naming the path and the system's error.

Parsed files are remembered by (path, inode, size, mtime_ns, ctime_ns): the follower looks at
every followed plan after each store write, and reads only the files that changed.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from pydantic import ValidationError

from ..fsutil import atomic_write, is_disk_full
from ..models import is_valid_task_id, new_task_id, utcnow
from .model import PLAN_FORMAT, PLAN_STATES, Plan, PlanDraft

log = logging.getLogger(__name__)

PLANS_DIR = "plans"
LOCK_NAME = ".plans.lock"
FILE_MAX_BYTES = 64 * 1024 * 1024  # 200 tasks of 256 KiB each fit; anything larger is not ours
CACHE_MAX_BYTES = 4 * 1024 * 1024  # larger plan files are read again when asked for (rare, and big)
_ORDER = {state: index for index, state in enumerate(PLAN_STATES)}
_LINK = "a symbolic link: Baton never follows links in plans/ (a commit may have put it there); remove it"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class PlanError(Exception):
    """A request the plan's state does not allow, with the API's status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(plan_id: str) -> PlanError:
    return PlanError(404, "not_found", f"no plan with id {plan_id!r}")


def wrong_state(plan: Plan, action: str, expected: str, hint: str = "") -> PlanError:
    return PlanError(409, "invalid_plan_state",
                     f"plan {plan.id} is {plan.state}; only a {expected} plan can be {action}{hint}")


def unavailable(path: Path, problem: str) -> PlanError:
    return PlanError(503, "plans_unavailable", f"{path}: {problem}")


def fs_error(exc: OSError, path: Path, action: str) -> PlanError:
    """An OSError of the plans folder as the API's answer: the disk is full (507), or the folder
    cannot be used as it is (503: read-only, no permission, a file where a folder should be)."""
    detail = exc.strerror or str(exc)
    if is_disk_full(exc):
        return PlanError(507, "insufficient_storage", f"{path}: cannot {action}: {detail}; free some space")
    return unavailable(path, f"cannot {action}: {detail}")


@contextmanager
def _fs(path: Path, action: str) -> Iterator[None]:
    try:
        yield
    except FileLockTimeout:  # a TimeoutError, so an OSError: not a file-system problem
        raise
    except OSError as exc:
        raise fs_error(exc, path, action) from None


@dataclass(frozen=True)
class InvalidFile:
    file: str  # relative to the project folder: plans/<state>/<name>
    problem: str


@dataclass(frozen=True)
class _Copy:
    state: str
    path: Path
    plan: Plan


@dataclass
class Listing:
    plans: list[Plan]  # newest first
    invalid: list[InvalidFile]


@dataclass
class Scan:
    """The plan files of some state folders, looked at (lstat) but not read. `key` differs
    whenever a file was added, removed or rewritten, or a folder's kind changed."""

    states: tuple[str, ...]
    key: tuple = ()
    files: list[tuple[str, Path, os.stat_result]] = field(default_factory=list)
    invalid: list[InvalidFile] = field(default_factory=list)


def _kind_problem(st: os.stat_result | None, want_dir: bool) -> str | None:
    """Why an lstat result is not a real folder (want_dir) or regular file; None when it is or is absent."""
    if st is None:
        return None
    if stat.S_ISLNK(st.st_mode):
        return _LINK
    if want_dir and not stat.S_ISDIR(st.st_mode):
        return "not a folder: remove or rename it"
    if not want_dir and not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class PlanStore:
    def __init__(self, project_dir: Path, lock_timeout: float = 10.0) -> None:
        self.project_dir = Path(project_dir)
        self.folder = self.project_dir / PLANS_DIR
        self._file_lock = FileLock(str(self.folder / LOCK_NAME), timeout=lock_timeout, thread_local=False)
        self._mutex = threading.RLock()
        self._parsed: dict[Path, tuple[tuple, _Copy | InvalidFile]] = {}

    # ----- the lock ------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the plans' lock (re-entrant within this object). Creates plans/, never the project
        folder above it; plans/ or a lock file that is not what it should be: 503."""
        with self._mutex:
            self._real_folder(self.folder)
            lock = self.folder / LOCK_NAME
            with _fs(lock, "be read"):
                problem = _kind_problem(_lstat(lock), want_dir=False)
            if problem is not None:  # filelock opens it for writing: never through a link
                raise unavailable(lock, problem)
            try:
                with _fs(lock, "be locked"):
                    self._file_lock.acquire()
            except FileLockTimeout:
                raise PlanError(503, "plans_busy", f"{lock}: lock not acquired in time") from None
            try:
                yield
            finally:
                self._file_lock.release()

    # ----- reading -------------------------------------------------------------------------

    def listing(self) -> Listing:
        """Every valid plan (duplicates repaired) and every file that is not one, with its problem."""
        with _fs(self.folder, "be read"):
            st = _lstat(self.folder)
        if st is None:
            return Listing(plans=[], invalid=[])  # reading makes no folder
        problem = _kind_problem(st, want_dir=True)
        if problem is not None:
            return Listing(plans=[], invalid=[InvalidFile(PLANS_DIR, problem)])
        with self.locked():
            return self.read(self.scan(PLAN_STATES), repair=True)

    def scan(self, states: tuple[str, ...]) -> Scan:
        """The plan files in these state folders, unread: cheap enough to ask after every store
        write. Makes no folder and takes no lock."""
        st = _lstat(self.folder)
        root_problem = _kind_problem(st, want_dir=True)
        if st is None or root_problem is not None:
            invalid = [InvalidFile(PLANS_DIR, root_problem)] if root_problem else []
            return Scan(states, key=(root_problem,), invalid=invalid)
        key: list[tuple] = []
        scan = Scan(states)
        for state in states:
            folder = self.folder / state
            found: list[tuple[str, os.stat_result]] = []
            try:
                problem = _kind_problem(_lstat(folder), want_dir=True)
                if problem is None:
                    for name in self._names(folder):
                        if (st := _lstat(folder / name)) is not None:  # else removed meanwhile
                            found.append((name, st))
            except (FileNotFoundError, NotADirectoryError):  # the folder removed meanwhile
                problem, found = None, []
            except OSError as exc:
                problem = f"cannot be read: {exc.strerror or exc}"
            if problem is not None:
                scan.invalid.append(InvalidFile(self._relative(folder), problem))
                key.append((state, problem))
                continue
            key.append((state, tuple((name, _signature(st)) for name, st in found)))
            scan.files.extend((state, folder / name, st) for name, st in found)
        scan.key = tuple(key)
        return scan

    def read(self, scan: Scan, repair: bool = False) -> Listing:
        """The plans of a scan (newest first), each file parsed once per version. `repair` (under
        the lock): remove the older copies an interrupted state move left."""
        copies: dict[str, list[_Copy]] = {}
        invalid = list(scan.invalid)
        for state, path, st in scan.files:
            found = self._read(state, path, st)
            if isinstance(found, InvalidFile):
                invalid.append(found)
            else:
                copies.setdefault(found.plan.id, []).append(found)
        self._forget_except({path for _, path, _ in scan.files}, set(scan.states))
        plans = [self._winner(group, repair=repair) for group in copies.values()]
        plans.sort(key=lambda p: (p.updated_at, p.id), reverse=True)
        return Listing(plans=plans, invalid=invalid)

    def get(self, plan_id: str, for_write: bool = False) -> Plan:
        """The plan. `for_write`: refused (409 plan_invalid) while a damaged file of it is there,
        as every change is; a plain read answers the valid copy."""
        with _fs(self.folder, "be read"):
            st = _lstat(self.folder)
        if st is None:
            raise not_found(plan_id)
        with self.locked():
            return self._current(plan_id, for_write=for_write)

    # ----- changing ------------------------------------------------------------------------

    def create(self, draft: PlanDraft, chat_id: str | None = None) -> Plan:
        with self.locked():
            plan_id = new_task_id()
            while self._taken(plan_id):
                plan_id = new_task_id()
            now = utcnow()
            plan = Plan.model_validate({**draft.model_dump(), "id": plan_id, "state": "draft", "revision": 1,
                                        "chat_id": chat_id, "created_at": now, "updated_at": now})
            self._write(plan, None)
            return plan

    def edit(self, plan_id: str, revision: int, draft: PlanDraft) -> Plan:
        """A draft's new content, made on `revision` (an older one: 409 stale_plan)."""
        def change(plan: Plan) -> dict[str, Any]:
            if plan.state != "draft":
                raise PlanError(409, "plan_not_editable", f"plan {plan.id} is {plan.state}; only a draft can be "
                                                          "edited (reopen a ready plan first)")
            check_revision(plan, revision)
            return draft.model_dump()
        return self.update(plan_id, change)

    def approve(self, plan_id: str, revision: int) -> Plan:
        def change(plan: Plan) -> dict[str, Any]:
            if plan.state != "draft":
                raise wrong_state(plan, "approved", "draft")
            check_revision(plan, revision)
            return {"state": "ready"}
        return self.update(plan_id, change)

    def reopen(self, plan_id: str) -> Plan:
        def change(plan: Plan) -> dict[str, Any]:
            if plan.state != "ready":
                raise wrong_state(plan, "reopened", "ready")
            return {"state": "draft"}
        return self.update(plan_id, change)

    def delete(self, plan_id: str) -> None:
        """Removes the plan's file. Not while executing; run.delete_plan also refuses a ready plan
        whose tasks exist (the task store is not this module's)."""
        with self.locked():
            plan = self._current(plan_id, for_write=True)
            if plan.state == "executing":
                raise PlanError(409, "invalid_plan_state", f"plan {plan.id} is executing; it can be deleted once it "
                                                           "is done or failed (its tasks stay on the board either way)")
            path = self._path(plan.state, plan.id)
            with _fs(path, "be removed"):
                self._unlink(plan.state, plan.id)

    def update(self, plan_id: str, change: Callable[[Plan], dict[str, Any] | None]) -> Plan:
        """Read-modify-write under the lock: `change(plan)` returns the fields to set (None: leave
        the plan as it is) or raises PlanError. The revision grows; a new state moves the file."""
        with self.locked():
            plan = self._current(plan_id, for_write=True)
            fields = change(plan)
            if fields is None:
                return plan
            new = Plan.model_validate({**plan.model_dump(), **fields, "revision": plan.revision + 1,
                                       "updated_at": utcnow()})
            self._write(new, plan.state)
            return new

    def prepare(self, state: str) -> None:
        """Make sure a plan can be written into `state`'s folder (a real folder, made if missing):
        what must not fail after an irreversible step (running creates the tasks first)."""
        with self.locked():
            self._real_folder(self.folder / state)

    # ----- internals -----------------------------------------------------------------------

    def _path(self, state: str, plan_id: str) -> Path:
        return self.folder / state / f"{plan_id}.json"

    def _real_folder(self, folder: Path) -> None:
        """`folder` exists and is a folder, not a link to one (made when missing)."""
        with _fs(folder, "be created"):
            try:
                folder.mkdir()
            except FileExistsError:
                pass
            st = _lstat(folder)
        problem = _kind_problem(st, want_dir=True) if st is not None else "vanished while it was made"
        if problem is not None:
            raise unavailable(folder, problem)

    def _folder_ok(self, state: str) -> bool:
        """The state folder exists and is a real folder (reads never go through a link)."""
        st = _lstat(self.folder / state)
        return st is not None and _kind_problem(st, want_dir=True) is None

    @staticmethod
    def _names(folder: Path) -> list[str]:
        # Dot files are atomic_write's temporary files (and anything hidden); other names are not ours.
        return sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith("."))

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.project_dir))

    def _read(self, state: str, path: Path, st: os.stat_result) -> _Copy | InvalidFile:
        """A file as a plan copy or an invalid file; a version already parsed is not read again."""
        def bad(problem: str) -> InvalidFile:
            return InvalidFile(self._relative(path), problem)

        stem = path.name.removesuffix(".json")
        if not is_valid_task_id(stem):
            return bad("the file name is not <plan id>.json (a plan id is 1-32 characters of a-z and 0-9)")
        problem = _kind_problem(st, want_dir=False)
        if problem is not None:
            return bad(problem)
        if st.st_size > FILE_MAX_BYTES:
            return bad(f"larger than {FILE_MAX_BYTES // (1024 * 1024)} MB")
        cached = self._parsed.get(path)
        if cached is not None and cached[0] == _signature(st):
            return cached[1]
        try:
            fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as handle:
                opened = os.fstat(handle.fileno())
                if not stat.S_ISREG(opened.st_mode):
                    return bad("not a regular file")
                raw = handle.read(FILE_MAX_BYTES + 1)
        except OSError as exc:  # ELOOP: it became a link since the lstat
            return bad(f"cannot be read: {exc.strerror or exc}")
        if len(raw) > FILE_MAX_BYTES:
            return bad(f"larger than {FILE_MAX_BYTES // (1024 * 1024)} MB")
        found = self._parse(state, path, stem, raw, bad)
        if opened.st_size <= CACHE_MAX_BYTES:
            self._parsed[path] = (_signature(opened), found)
        return found

    def _parse(self, state: str, path: Path, stem: str, raw: bytes,
               bad: Callable[[str], InvalidFile]) -> _Copy | InvalidFile:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return bad(f"not valid JSON: {exc}")
        if not isinstance(data, dict):
            return bad("not a JSON object")
        if "format" not in data:
            return bad(f"no `format` (this Baton reads plan format {PLAN_FORMAT})")
        if data["format"] != PLAN_FORMAT or isinstance(data["format"], bool):
            return bad(f"format {data['format']!r} is not one this Baton reads (it reads format {PLAN_FORMAT})")
        try:
            plan = Plan.model_validate(data)
        except ValidationError as exc:
            return bad("not a valid plan: " + _errors(exc))
        if plan.id != stem:
            return bad(f"its id is {plan.id!r} but the file is named {path.name}")
        if plan.state != state:
            return bad(f"its state is {plan.state!r} but it lies in {PLANS_DIR}/{state}/")
        return _Copy(state, path, plan)

    def _forget_except(self, seen: set[Path], states: set[str]) -> None:
        """Drop remembered files of these state folders that a scan no longer found."""
        for path in [p for p in list(self._parsed) if p.parent.name in states and p not in seen]:  # list(): atomic
            self._parsed.pop(path, None)

    def _winner(self, group: list[_Copy], repair: bool = True) -> Plan:
        """The newest copy of a plan; the others are what a state move left behind: removed."""
        group = sorted(group, key=lambda c: (c.plan.revision, c.plan.updated_at, _ORDER[c.state]), reverse=True)
        if repair:
            for stale in group[1:]:
                log.warning("plan %s: removing %s, an older copy left by an interrupted state change (kept %s)",
                            stale.plan.id, self._relative(stale.path), self._relative(group[0].path))
                try:
                    self._unlink(stale.state, stale.plan.id)
                except OSError as exc:  # the newer copy wins anyway; the next read tries again
                    log.warning("plan %s: could not remove %s: %s", stale.plan.id, stale.path, exc)
        return group[0].plan

    def _current(self, plan_id: str, for_write: bool) -> Plan:
        """The plan (under the lock). Damaged files of it refuse writes, and reads when no valid copy exists."""
        if not is_valid_task_id(plan_id):
            raise not_found(plan_id)
        copies: list[_Copy] = []
        damaged: list[InvalidFile] = []
        for state in PLAN_STATES:
            if not self._folder_ok(state):
                continue
            path = self._path(state, plan_id)
            st = _lstat(path)
            if st is not None:
                found = self._read(state, path, st)
                (damaged if isinstance(found, InvalidFile) else copies).append(found)
        if damaged and (for_write or not copies):
            first = damaged[0]
            raise PlanError(409, "plan_invalid", f"{first.file}: {first.problem}; fix or remove that file first")
        if not copies:
            raise not_found(plan_id)
        return self._winner(copies)

    def _taken(self, plan_id: str) -> bool:
        return any(_lstat(self._path(state, plan_id)) is not None for state in PLAN_STATES if self._folder_ok(state))

    def _unlink(self, state: str, plan_id: str) -> None:
        """Remove a plan file by name inside its folder, opened without following a link: a folder
        swapped for a link meanwhile is refused (ELOOP), never removed through."""
        dir_fd = os.open(self.folder / state, os.O_RDONLY | os.O_DIRECTORY | _O_NOFOLLOW)
        try:
            os.unlink(f"{plan_id}.json", dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(dir_fd)

    def _write(self, plan: Plan, old_state: str | None) -> None:
        self._real_folder(self.folder / plan.state)
        path = self._path(plan.state, plan.id)
        with _fs(path, "be written"):
            atomic_write(path, encode(plan))
        if old_state is not None and old_state != plan.state:
            try:
                self._unlink(old_state, plan.id)
            except OSError as exc:  # the new copy has the higher revision: it is the plan
                log.warning("plan %s: could not remove its old copy in %s/: %s (removed when next read)",
                            plan.id, old_state, exc)


def encode(plan: Plan) -> bytes:
    """The file's bytes: the identifying fields first, indented, for people who read them."""
    data = plan.model_dump(mode="json")
    head = {key: data.pop(key) for key in ("format", "id", "state", "revision", "title")}
    return (json.dumps({**head, **data}, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def check_revision(plan: Plan, revision: int) -> None:
    if revision != plan.revision:
        raise PlanError(409, "stale_plan", f"plan {plan.id} is at revision {plan.revision}, not {revision}: "
                                           "someone changed it meanwhile; reload it and apply your change again")



def _errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
