"""A task's tracker tools for one agent turn: the capability token in a file, the MCP server naming it.

The token (ToolGrant.token) reaches the MCP server only through a 0600 file in the task's scratch
folder (outside the worktree, so `git add -A` never sees it): never argv (every local user can
read a process's arguments), the task's environment, the event log or the task record. The file
lives while a turn runs and is removed when it ends.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..models import ToolGrant
from ..runtimes.base import McpServer

SERVER_NAME = "baton_tracker"
TOKEN_FILE = "tracker-token"
MODULE = "backend.sources.mcp_server"
# The folder that holds the `backend` package: the server runs with the CLI's environment, not
# Baton's, so it is told where to import Baton from (an installed Baton: site-packages).
BATON_ROOT = str(Path(__file__).resolve().parents[2])


def write_token(scratch: Path, token: str) -> Path:
    """The token in `<scratch>/tracker-token`, mode 0600 from its creation; a symlink planted
    there is replaced, never followed."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / TOKEN_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token)
    return path


def remove_token(scratch: Path) -> None:
    (scratch / TOKEN_FILE).unlink(missing_ok=True)


def tracker_server(grant: ToolGrant, token_file: Path, marker: dict[str, str]) -> McpServer:
    # -P: the CLI starts the server in the worktree, whose own `backend/` (or `httpx.py`) must
    # not shadow Baton's modules (python -m would otherwise put the cwd first on sys.path).
    # `marker` (TASK_ID, BATON_PROJECT): a CLI may start the server with only the environment it
    # is given and in a session of its own; the marker still lets the task's end find and stop it.
    return McpServer(name=SERVER_NAME, command=sys.executable, args=["-P", "-m", MODULE],
                     env={"BATON_TOOLS_URL": grant.url, "BATON_TOOLS_TOKEN_FILE": str(token_file),
                          "PYTHONPATH": BATON_ROOT, **marker})
