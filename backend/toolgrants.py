"""ToolGrants: each task's tracker-tool grant (ToolGrant: gateway URL + capability token), kept
beside the store as data/tool-grants/<task id>.json, never in the task record.

The token is a secret: files are 0600 in a 0700 folder, written atomically, read without
following links (a link planted in the folder must not make Baton read or overwrite another
file), and no message here ever carries a token. A missing or unreadable grant is None: the
task then runs without tracker tools.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from pydantic import ValidationError

from .fsutil import atomic_write
from .models import ToolGrant, is_valid_task_id

log = logging.getLogger(__name__)

_MAX_BYTES = 4096  # a grant is a URL and a token of at most 500 characters each


class ToolGrants:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)  # nothing is created until the first put (no I/O here)

    def _path(self, task_id: str) -> Path:
        if not is_valid_task_id(task_id):
            raise ValueError(f"not a task id: {task_id!r}")
        return self.folder / f"{task_id}.json"

    def _ensure_folder(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(self.folder)
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(f"{self.folder} is not a folder (a link?): tool grants are not kept there")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.folder, 0o700)  # grants are secrets: no one else may list them

    def put(self, task_id: str, grant: ToolGrant) -> None:
        path = self._path(task_id)
        self._ensure_folder()
        atomic_write(path, grant.model_dump_json().encode("utf-8"), mode=0o600)

    def get(self, task_id: str) -> ToolGrant | None:
        path = self._path(task_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: a link where the grant should be
            log.warning("task %s: tool grant %s cannot be opened (%s); running without tracker tools",
                        task_id, path, exc.strerror or type(exc).__name__)
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise OSError("not a regular file")
                raw = handle.read(_MAX_BYTES + 1)
        except OSError as exc:
            log.warning("task %s: tool grant %s cannot be read (%s); running without tracker tools",
                        task_id, path, exc.strerror or exc)
            return None
        try:
            if len(raw) > _MAX_BYTES:
                raise ValueError("too large")
            return ToolGrant.model_validate_json(raw)
        except (ValidationError, ValueError):
            # Never the content or pydantic's message: either may hold the token.
            log.warning("task %s: tool grant %s is not a valid grant; running without tracker tools", task_id, path)
            return None

    def remove(self, task_id: str) -> None:
        try:
            self._path(task_id).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("task %s: tool grant not removed: %s", task_id, exc.strerror or type(exc).__name__)
