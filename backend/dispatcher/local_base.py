"""Keeps the project's local base branch following what was landed on the remote.

Landing only needs the push; bringing the user's local branch along (a fast-forward when
that is safe, see ProjectGit.advance_local_base) happens here, off the landing path. Several
landings in a row are coalesced into one update to the newest commit.
"""

from __future__ import annotations

import logging
import threading

from ..gitrepo import GitError
from .workspace import ProjectGit

log = logging.getLogger(__name__)

SETTLE_SECONDS = 0.3  # landings closer together than this share one update


class LocalBaseFollower:
    def __init__(self, git: ProjectGit) -> None:
        self.git = git
        self._target: str | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def request(self, sha: str) -> None:
        with self._cond:
            self._target = sha
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="baton-local-base", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._target is None and not self._closed:
                    self._cond.wait()
                if self._target is None:
                    return
                if not self._closed:
                    self._cond.wait(SETTLE_SECONDS)  # let a burst of landings settle
                sha, self._target = self._target, None
            try:
                note = self.git.advance_local_base(sha)
            except GitError as exc:
                note = str(exc)
            if note:
                log.warning("local %s not updated to %s: %s", self.git.base, sha[:12], note)

    def flush(self, timeout: float = 30.0) -> None:
        """Finish any pending update and stop the thread (at shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            self._closed = False
