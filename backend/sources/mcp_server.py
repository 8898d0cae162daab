"""The tracker tools a coding agent gets for its task's issue: an MCP stdio server.

    python -m backend.sources.mcp_server

The CLI (Claude Code, Codex, OpenCode) starts it for one turn with two variables:
BATON_TOOLS_URL, the dashboard's tool gateway (loopback), and BATON_TOOLS_TOKEN_FILE, a 0600 file
in the task's scratch folder holding the task's capability token. The server holds no tracker
secret and knows no issue: every tool call is posted to the gateway, which checks the token and
acts on the one issue the token names. The token is read at each call (the dispatcher removes the
file when the run ends: a lingering server can no longer act) and goes only into the
Authorization header: never into a log, an error message or stdout, which carries nothing but
the protocol.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

SERVER_NAME = "baton_tracker"
URL_VAR = "BATON_TOOLS_URL"
TOKEN_FILE_VAR = "BATON_TOOLS_TOKEN_FILE"
TIMEOUT = httpx.Timeout(60.0, connect=10.0)  # the gateway waits on the tracker (rate limits, retries)
TOKEN_MAX = 500  # ToolGrant.token's own limit

log = logging.getLogger("baton.tracker_tools")


def read_token(token_file: Path) -> str:
    """The capability token, read afresh (a symlink is refused: the file is Baton's own)."""
    try:
        fd = os.open(token_file, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "r", encoding="ascii", errors="replace") as handle:
            token = handle.read(TOKEN_MAX + 2).strip()
    except FileNotFoundError:
        raise ToolError(f"the tracker tools are not available: the task's token file {token_file} is gone "
                        "(the task's run has ended, or tracker tools were withdrawn)") from None
    except OSError as exc:
        raise ToolError(f"the tracker tools are not available: cannot read the task's token file "
                        f"{token_file} ({exc.strerror or type(exc).__name__})") from None
    if not token or len(token) > TOKEN_MAX:
        raise ToolError(f"the tracker tools are not available: the task's token file {token_file} "
                        "does not hold a token")
    return token


def _gateway_message(response: httpx.Response) -> str:
    """The gateway's own error message (its one error shape), else the HTTP status."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return f"{error['message']} ({code}, HTTP {response.status_code})" if code else error["message"]
    return f"the tracker gateway answered HTTP {response.status_code}"


class Gateway:
    """Posts one tool call to the dashboard's tracker-tools gateway."""

    def __init__(self, url: str, token_file: Path, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self.token_file = Path(token_file)
        self._transport = transport

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        headers = {"Authorization": f"Bearer {read_token(self.token_file)}"}
        body = {"tool": tool, "arguments": arguments}
        try:
            # trust_env off: a proxy from the environment must never see the token (loopback only).
            async with httpx.AsyncClient(timeout=TIMEOUT, transport=self._transport, trust_env=False) as client:
                response = await client.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("%s: gateway %s unreachable: %s", tool, self.url, type(exc).__name__)
            raise ToolError(f"the tracker gateway at {self.url} cannot be reached ({type(exc).__name__}); "
                            "try again later") from None
        if response.status_code != 200:
            message = _gateway_message(response)
            log.info("%s: gateway refused: %s", tool, message)
            raise ToolError(f"{tool} failed: {message}")
        try:
            result = response.json()["result"]
        except (ValueError, KeyError, TypeError):
            raise ToolError(f"{tool} failed: the tracker gateway's answer has no result") from None
        return json.dumps(result, ensure_ascii=False, indent=1)


def build_server(url: str, token_file: Path | str, transport: httpx.AsyncBaseTransport | None = None) -> MCPServer:
    gateway = Gateway(url, Path(token_file), transport)
    server = MCPServer(SERVER_NAME, instructions=(
        "Tools for the issue-tracker issue this coding task was created from (Linear or Jira). Every tool "
        "acts on that one issue only: none takes an issue id."))

    # structured_output off: the answer is the gateway's JSON as text, the same for every CLI.
    @server.tool(structured_output=False)
    async def tracker_get_issue() -> str:
        """Read this task's own tracker issue (the Linear or Jira issue the task was created from):
        its key, title, description, workflow state, labels and URL, as JSON."""
        return await gateway.call("tracker_get_issue", {})

    @server.tool(structured_output=False)
    async def tracker_list_comments() -> str:
        """List the comments on this task's own tracker issue, oldest first, as JSON (author, time,
        body)."""
        return await gateway.call("tracker_list_comments", {})

    @server.tool(structured_output=False)
    async def tracker_add_comment(body: str) -> str:
        """Add a comment to this task's own tracker issue, e.g. a question for the people who wrote
        it or a note on progress. `body` is the comment's text (Markdown). Returns the new comment
        as JSON."""
        return await gateway.call("tracker_add_comment", {"body": body})

    @server.tool(structured_output=False)
    async def tracker_update_state(state: str) -> str:
        """Move this task's own tracker issue to the workflow state named `state` (e.g. "In
        Progress"); only the states the project allows are accepted. Returns the issue as JSON."""
        return await gateway.call("tracker_update_state", {"state": state})

    return server


def main() -> None:
    # stdout is the protocol's: every word of our own goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="baton_tracker: %(levelname)s %(message)s")
    url, token_file = os.environ.get(URL_VAR), os.environ.get(TOKEN_FILE_VAR)
    missing = [name for name, value in ((URL_VAR, url), (TOKEN_FILE_VAR, token_file)) if not value]
    if missing:
        sys.stderr.write(f"baton_tracker: {' and '.join(missing)} must be set (Baton sets them when it gives "
                         "a task its tracker tools)\n")
        sys.exit(2)
    build_server(url, token_file).run()


if __name__ == "__main__":
    main()
