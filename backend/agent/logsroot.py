"""`baton-agent --logs-root DIR`: the project's logs somewhere else than `<project>/logs`.

The agent prepares the folder (created 0700 when new; it must be writable), writes its own log
to `DIR/baton-agent.log` besides stderr, and records the folder in `data/baton-agent.json`, so
that whoever reads the project on disk without its agent (the dashboard's local connector)
still finds the task logs. Without --logs-root the record is removed: the logs are in
`<project>/logs` again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..fsutil import atomic_write
from ..gitrepo import GitError, run_git

RECORD = "baton-agent.json"  # in data/; excluded from git status (settings.RUNTIME_PATTERNS)
LOG_NAME = "baton-agent.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogsRootError(Exception):
    """The folder cannot hold the logs; str() names it and the problem."""


def resolve_logs_root(raw: Path) -> Path:
    """The absolute folder `--logs-root` names (relative to the current directory, ~ expanded)."""
    return Path(os.path.abspath(raw.expanduser()))


def prepare_logs_root(path: Path) -> None:
    """Create the folder (0700 when new) and check that this user can write into it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
            path.chmod(0o700)  # whatever the umask: task logs hold what the agents printed
        except FileExistsError:
            pass  # there already (or created meanwhile): checked below like any existing folder
    except OSError as exc:
        raise LogsRootError(f"--logs-root {path}: cannot create it ({exc.strerror or exc})") from None
    if not path.is_dir():
        raise LogsRootError(f"--logs-root {path}: not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise LogsRootError(f"--logs-root {path}: not writable by this user")


def inside_workspaces(logs_root: Path, roots: list[Path]) -> str | None:
    """Why the folder must not hold the logs: inside a folder where coding agents work, they
    could rewrite the logs people read (and the git hooks Baton keeps there)."""
    resolved = logs_root.resolve()
    for root in roots:
        if resolved == Path(root).resolve() or Path(root).resolve() in resolved.parents:
            return f"--logs-root {logs_root}: inside {root}, where the coding agents work"
    return None


def add_log_file(logs_root: Path) -> logging.Handler:
    """The agent's own log also goes to `<logs_root>/baton-agent.log` (appended, same format)."""
    try:
        handler = logging.FileHandler(logs_root / LOG_NAME, encoding="utf-8")
    except OSError as exc:
        raise LogsRootError(f"--logs-root {logs_root}: cannot write {LOG_NAME} ({exc.strerror or exc})") from None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler


def record_path(project_dir: Path) -> Path:
    return Path(project_dir) / "data" / RECORD


def record_logs_root(project_dir: Path, logs_root: Path | None) -> None:
    """Write (or, without a logs root, remove) the record the local connector reads."""
    path = record_path(project_dir)
    if logs_root is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"logs_dir": str(logs_root)}).encode(), durable=False)


def recorded_logs_dir(project_dir: Path) -> Path:
    """Where the project's task logs are: the recorded folder, else `<project>/logs`. A record
    that git tracks does not count (a landed commit could have written it), nor a malformed one."""
    default = Path(project_dir) / "logs"
    try:
        data = json.loads(record_path(project_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
    logs_dir = data.get("logs_dir") if isinstance(data, dict) else None
    if not isinstance(logs_dir, str) or not os.path.isabs(logs_dir) or _tracked(Path(project_dir)):
        return default
    return Path(logs_dir)


def _tracked(project_dir: Path) -> bool:
    try:
        return bool(run_git(["ls-files", "--", f"data/{RECORD}"], project_dir).strip())
    except GitError:
        return False  # not a git repository: nothing can land in it
