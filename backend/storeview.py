"""The coding agents' read-only view of the task store: data/snapshot/dev-tasks.json.

`symlink_files: [data/dev-tasks.json]` lets an agent read the task list. Linking the live store
let an agent truncate or rewrite it (no lock, no validation), so a worktree's link points to this
copy instead: mode 0444, in a folder Baton owns, replaced atomically. Writing through the link
(root ignores the mode) spoils only the copy, and the next refresh replaces it. The agent
process refreshes it at every task start (worktree_source) and, once it exists, debounced
after its writes (StoreView). Only the store reads or writes the live file; this module reads it as any reader
may: a replace is atomic, so a read sees one whole version.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .fsutil import atomic_write

log = logging.getLogger(__name__)

FOLDER = "snapshot"
STORE_REL = Path("data") / "dev-tasks.json"
DEBOUNCE_SECONDS = 0.2


def view_path(store_path: Path) -> Path:
    return store_path.parent / FOLDER / store_path.name


def refresh(store_path: Path) -> Path | None:
    """Copy the live store to its read-only view now. Returns the view (None: no store yet)."""
    try:
        data = store_path.read_bytes()
    except FileNotFoundError:
        return None
    view = view_path(store_path)
    view.parent.mkdir(exist_ok=True)
    atomic_write(view, data, durable=False, mode=0o444)  # derived data: no fsync needed
    return view


def worktree_source(project: Path, rel: str) -> Path:
    """What a worktree's link at `rel` points to: for the live store, its freshly refreshed
    read-only view; for any other file, the project's own."""
    source = project / rel
    store = project / STORE_REL
    if os.path.realpath(source) != os.path.realpath(store):
        return source
    try:
        refresh(store.resolve())
    except OSError as exc:  # a full disk, say: the view may be stale or missing, never the live file
        log.warning("could not refresh the agents' copy of %s: %s", store, exc)
    return view_path(store.resolve())  # never the live store, even when no copy could be made


class StoreView:
    """Keeps the view fresh after store writes: `request` is a cheap store listener; one
    background thread coalesces bursts of writes into one copy."""

    def __init__(self, store_path: Path, delay: float = DEBOUNCE_SECONDS) -> None:
        self.store_path = store_path
        self.delay = delay
        self._dirty = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        self._dirty.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed.is_set():
                    self._thread = threading.Thread(target=self._run, name="baton-store-view", daemon=True)
                    self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._dirty.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            if self._closed.is_set():
                return
            self._closed.wait(self.delay)  # let a burst of writes settle: one copy for all of them
            self._dirty.clear()
            if self._closed.is_set():
                return
            try:
                # Only once a worktree was given the copy: a project that does not link the
                # store pays nothing for it.
                if view_path(self.store_path).exists():
                    refresh(self.store_path)
            except OSError as exc:
                log.warning("could not refresh the agents' copy of the task store: %s", exc)
