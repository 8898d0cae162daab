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
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from pydantic import ValidationError

from ..fsutil import atomic_write
from ..models import is_valid_task_id, new_task_id, utcnow
from .model import PLAN_FORMAT, PLAN_STATES, Plan, PlanDraft

log = logging.getLogger(__name__)

PLANS_DIR = "plans"
LOCK_NAME = ".plans.lock"
FILE_MAX_BYTES = 64 * 1024 * 1024  # 200 tasks of 256 KiB each fit; anything larger is not ours
_ORDER = {state: index for index, state in enumerate(PLAN_STATES)}


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


class PlanStore:
    def __init__(self, project_dir: Path, lock_timeout: float = 10.0) -> None:
        self.project_dir = Path(project_dir)
        self.folder = self.project_dir / PLANS_DIR
        self._file_lock = FileLock(str(self.folder / LOCK_NAME), timeout=lock_timeout, thread_local=False)
        self._mutex = threading.RLock()

    # ----- the lock ------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the plans' lock (re-entrant within this object). Creates plans/, never the project
        folder above it (FileNotFoundError when that is missing)."""
        with self._mutex:
            self.folder.mkdir(exist_ok=True)
            try:
                self._file_lock.acquire()
            except FileLockTimeout:
                raise PlanError(503, "plans_busy", f"{self.folder / LOCK_NAME}: lock not acquired in time") from None
            try:
                yield
            finally:
                self._file_lock.release()

    # ----- reading -------------------------------------------------------------------------

    def listing(self) -> Listing:
        """Every valid plan (duplicates repaired) and every file that is not one, with its problem."""
        if not self.folder.is_dir():
            return Listing(plans=[], invalid=[])  # reading makes no folder
        with self.locked():
            copies: dict[str, list[_Copy]] = {}
            invalid: list[InvalidFile] = []
            for state in PLAN_STATES:
                for path in self._files(state):
                    found = self._read(state, path)
                    if isinstance(found, InvalidFile):
                        invalid.append(found)
                    else:
                        copies.setdefault(found.plan.id, []).append(found)
            plans = [self._winner(group) for group in copies.values()]
        plans.sort(key=lambda p: (p.updated_at, p.id), reverse=True)
        return Listing(plans=plans, invalid=invalid)

    def ids_in(self, states: tuple[str, ...]) -> list[str]:
        """The ids of the plan files in these state folders (unread: cheap enough to ask often)."""
        names = (path.name.removesuffix(".json") for state in states for path in self._files(state))
        return sorted({name for name in names if is_valid_task_id(name)})

    def get(self, plan_id: str, for_write: bool = False) -> Plan:
        """The plan. `for_write`: refused (409 plan_invalid) while a damaged file of it is there,
        as every change is; a plain read answers the valid copy."""
        if not self.folder.is_dir():
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
            _check_revision(plan, revision)
            return draft.model_dump()
        return self.update(plan_id, change)

    def approve(self, plan_id: str, revision: int) -> Plan:
        def change(plan: Plan) -> dict[str, Any]:
            if plan.state != "draft":
                raise wrong_state(plan, "approved", "draft")
            _check_revision(plan, revision)
            return {"state": "ready"}
        return self.update(plan_id, change)

    def reopen(self, plan_id: str) -> Plan:
        def change(plan: Plan) -> dict[str, Any]:
            if plan.state != "ready":
                raise wrong_state(plan, "reopened", "ready")
            return {"state": "draft"}
        return self.update(plan_id, change)

    def delete(self, plan_id: str) -> None:
        with self.locked():
            plan = self._current(plan_id, for_write=True)
            if plan.state == "executing":
                raise PlanError(409, "invalid_plan_state", f"plan {plan.id} is executing; it can be deleted once it "
                                                           "is done or failed (its tasks stay on the board either way)")
            self._path(plan.state, plan.id).unlink(missing_ok=True)

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

    # ----- internals -----------------------------------------------------------------------

    def _path(self, state: str, plan_id: str) -> Path:
        return self.folder / state / f"{plan_id}.json"

    def _files(self, state: str) -> list[Path]:
        try:
            names = sorted(os.listdir(self.folder / state))
        except (FileNotFoundError, NotADirectoryError):
            return []
        # Dot files are atomic_write's temporary files (and anything hidden); other names are not ours.
        return [self.folder / state / n for n in names if n.endswith(".json") and not n.startswith(".")]

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.project_dir))

    def _read(self, state: str, path: Path) -> _Copy | InvalidFile:
        def bad(problem: str) -> InvalidFile:
            return InvalidFile(self._relative(path), problem)

        stem = path.name.removesuffix(".json")
        if not is_valid_task_id(stem):
            return bad("the file name is not <plan id>.json (a plan id is 1-32 characters of a-z and 0-9)")
        try:
            if not path.is_file():
                return bad("not a regular file")
            if path.stat().st_size > FILE_MAX_BYTES:
                return bad(f"larger than {FILE_MAX_BYTES // (1024 * 1024)} MB")
            raw = path.read_bytes()
        except OSError as exc:
            return bad(f"cannot be read: {exc.strerror or exc}")
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

    def _winner(self, group: list[_Copy], repair: bool = True) -> Plan:
        """The newest copy of a plan; the others are what a state move left behind: removed."""
        group = sorted(group, key=lambda c: (c.plan.revision, c.plan.updated_at, _ORDER[c.state]), reverse=True)
        if repair:
            for stale in group[1:]:
                log.warning("plan %s: removing %s, an older copy left by an interrupted state change (kept %s)",
                            stale.plan.id, self._relative(stale.path), self._relative(group[0].path))
                stale.path.unlink(missing_ok=True)
        return group[0].plan

    def _current(self, plan_id: str, for_write: bool) -> Plan:
        """The plan (under the lock). Damaged files of it refuse writes, and reads when no valid copy exists."""
        if not is_valid_task_id(plan_id):
            raise not_found(plan_id)
        copies: list[_Copy] = []
        damaged: list[InvalidFile] = []
        for state in PLAN_STATES:
            path = self._path(state, plan_id)
            if os.path.lexists(path):
                found = self._read(state, path)
                (damaged if isinstance(found, InvalidFile) else copies).append(found)
        if damaged and (for_write or not copies):
            first = damaged[0]
            raise PlanError(409, "plan_invalid", f"{first.file}: {first.problem}; fix or remove that file first")
        if not copies:
            raise not_found(plan_id)
        return self._winner(copies)

    def _taken(self, plan_id: str) -> bool:
        return any(os.path.lexists(self._path(state, plan_id)) for state in PLAN_STATES)

    def _write(self, plan: Plan, old_state: str | None) -> None:
        folder = self.folder / plan.state
        folder.mkdir(exist_ok=True)
        atomic_write(self._path(plan.state, plan.id), encode(plan))
        if old_state is not None and old_state != plan.state:
            self._path(old_state, plan.id).unlink(missing_ok=True)


def encode(plan: Plan) -> bytes:
    """The file's bytes: the identifying fields first, indented, for people who read them."""
    data = plan.model_dump(mode="json")
    head = {key: data.pop(key) for key in ("format", "id", "state", "revision", "title")}
    return (json.dumps({**head, **data}, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _check_revision(plan: Plan, revision: int) -> None:
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
