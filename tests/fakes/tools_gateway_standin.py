"""A stand-in for the dashboard's tracker-tools gateway (`POST /api/tracker-tools/call`), for the
tests of the MCP server and of the CLIs that start it: it checks the bearer token, records every
call as it came, and answers like the gateway (`{"result": ...}`, or the one error shape).

    gateway = ToolsGateway(token="tok-...")
    with serve(gateway.app()) as base:  # tests/support.py
        url = base + PATH
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

PATH = "/api/tracker-tools/call"
ISSUE = {"id": "issue-1", "identifier": "ENG-7", "title": "Fix the login", "state": "In Progress",
         "url": "https://linear.example/ENG-7", "description": "The login button does nothing."}
ALLOWED_STATES = ("Todo", "In Progress", "In Review")


@dataclass
class ToolsGateway:
    token: str
    calls: list[dict] = field(default_factory=list)  # {tool, arguments, authorization, body}
    fail: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # tool -> (status, code, message)
    comments: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post(PATH)
        async def call(request: Request):
            body = await request.json()
            auth = request.headers.get("authorization")
            with self._lock:
                self.calls.append({"tool": body.get("tool"), "arguments": body.get("arguments"),
                                   "authorization": auth, "body": body})
            if auth != f"Bearer {self.token}":
                return error(401, "unauthorized", "missing or invalid tool token")
            tool, args = body.get("tool"), body.get("arguments") or {}
            if tool in self.fail:
                return error(*self.fail[tool])
            if tool == "tracker_get_issue":
                return {"result": ISSUE}
            if tool == "tracker_list_comments":
                return {"result": list(self.comments)}
            if tool == "tracker_add_comment":
                comment = {"id": f"c{len(self.comments) + 1}", "body": args.get("body")}
                self.comments.append(comment)
                return {"result": comment}
            if tool == "tracker_update_state":
                if args.get("state") not in ALLOWED_STATES:
                    return error(403, "out_of_scope", f"state {args.get('state')!r} is not allowed for this project")
                return {"result": {**ISSUE, "state": args["state"]}}
            return error(422, "validation_error", f"unknown tool {tool!r}")

        return app

    def calls_of(self, tool: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["tool"] == tool]


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "code": code, "message": message}}, status_code=status)
