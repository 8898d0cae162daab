"""WORKFLOW.md followed while the agent runs (Symphony SPEC 6.2).

`check()` is cheap (one stat) and is called every second and before each run: when the file
changed it is read and validated again; a good edit becomes `current` and the listeners hear of
it; an invalid edit (a deleted file included) keeps the last good workflow, is logged once and
is reported by `status()` until a good one loads. `accept(old, new)`, when set, may refuse a
good edit (one that needs a restart): its message is then the edit's error ("restart_required").
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timezone
from pathlib import Path

from .loader import Workflow, WorkflowError, load_workflow, parse_workflow, read_file

log = logging.getLogger("baton.workflow")


class LiveWorkflow:
    def __init__(self, path: Path, *, project_dir: Path, environ: Mapping[str, str] = os.environ,
                 first: Workflow | None = None, hidden: Collection[str] = (),
                 accept: Callable[[Workflow, Workflow], str | None] | None = None) -> None:
        self.path = Path(path)
        self.project_dir = Path(project_dir)
        self.environ = environ
        self.hidden = frozenset(hidden)
        # Public and settable: whoever owns what an edit cannot change (the runner) sets it.
        self.accept = accept
        self._lock = threading.Lock()
        self._checking = threading.Lock()  # one check at a time: a reload is applied (and heard) once
        self._current = first if first is not None else load_workflow(self.path, project_dir=self.project_dir,
                                                                     environ=environ, hidden=self.hidden)
        # What was read: a file the CLI loaded then changed is read again at the first check.
        self._seen: tuple | None = self._current.stat_key
        self._error: dict | None = None
        self._logged: str | None = None
        self._listeners: list[Callable[[Workflow], None]] = []

    @property
    def current(self) -> Workflow:
        with self._lock:
            return self._current

    @property
    def error(self) -> dict | None:
        with self._lock:
            return dict(self._error) if self._error else None

    def listen(self, fn: Callable[[Workflow], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def check(self) -> bool:
        """Apply the file if it changed; True when a new good workflow became current. Never raises."""
        try:
            with self._checking:
                return self._check()
        except Exception:  # noqa: BLE001 — following a file must never stop the agent
            log.exception("workflow %s: checking for changes failed", self.path)
            return False

    def _check(self) -> bool:
        try:
            st = os.lstat(self.path)  # the link itself: a symlink is refused when read
            key: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        with self._lock:
            if key is not None and key == self._seen:
                return False
        try:
            read_key, data = read_file(self.path)
            workflow = parse_workflow(data, path=self.path, project_dir=self.project_dir, environ=self.environ,
                                      stat_key=read_key, hidden=self.hidden)
        except WorkflowError as exc:
            self._invalid(exc, key)
            return False
        refused = self._refused(workflow)
        if refused is not None:
            self._invalid(WorkflowError("restart_required", refused), workflow.stat_key)
            return False
        with self._lock:
            self._seen = workflow.stat_key
            was_invalid = self._error is not None
            self._error = None
            self._logged = None
            same = workflow.digest == self._current.digest
            if not same:
                self._current = workflow
            listeners = list(self._listeners)
        if was_invalid:
            log.info("workflow %s: %s is valid again", self.path, self.path.name)
        if same:
            return False  # touched, or put back as it was: nothing new to apply
        log.info("workflow %s: reloaded (sha256 %s)", self.path, workflow.digest[:12])
        for fn in listeners:
            try:
                fn(workflow)
            except Exception:  # noqa: BLE001 — one listener's failure must not hide the edit from the others
                log.exception("workflow %s: a listener failed on the reload", self.path)
        return True

    def _refused(self, workflow: Workflow) -> str | None:
        """accept's message for a new good version (None: apply it)."""
        accept = self.accept
        if accept is None or workflow.digest == self.current.digest:
            return None
        try:
            return accept(self.current, workflow)
        except Exception as exc:  # noqa: BLE001 — an edit nobody could check is not applied
            log.exception("workflow %s: checking whether the edit can apply failed", self.path)
            return f"the edit could not be checked ({type(exc).__name__}); restart baton-agent to apply it"

    def _invalid(self, exc: WorkflowError, key: tuple | None) -> None:
        with self._lock:
            # A missing file is stat'ed again every time; an invalid one is read again once it changes.
            self._seen = key
            if self._error is None or self._error["message"] != exc.message:
                self._error = {"code": exc.code, "message": exc.message,
                               "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            first_time = self._logged != exc.message
            self._logged = exc.message
            loaded_at = self._current.loaded_at.isoformat(timespec="seconds")
        if first_time:
            log.warning("workflow %s: the edit is invalid; still running the version loaded at %s:\n%s",
                        self.path, loaded_at, exc.message)

    def status(self) -> dict:
        """For /agent/health: {"path", "state": "ok"|"invalid", "error", "loaded_at", "digest"}."""
        with self._lock:
            current, error = self._current, self._error
        return {"path": str(self.path), "state": "invalid" if error else "ok", "error": dict(error) if error else None,
                "loaded_at": current.loaded_at.isoformat(timespec="seconds"), "digest": current.digest}
