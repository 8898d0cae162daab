"""What the stand-in Linear and Jira servers share: the process (a ThreadingHTTPServer on
127.0.0.1), request statistics, failure injection and the admin API tests drive them with.

Admin API (no auth, loopback only; JSON in and out), the same for both trackers:
    POST /_admin/seed {issues: [{title, description?, state?, labels?, priority?, team|project?,
                       comments?: [text]}], ...}     -> {"issues": [{id, identifier, url}]} (bulk)
    GET  /_admin/issues                            -> [issue view without comments]
    GET  /_admin/issues/{id or identifier}         -> {id, identifier, title, description, state,
                       labels, priority, comments: [{id, body (text), raw, created_at}],
                       history: [{from, to, by: api|human, at}]}
    POST /_admin/move {issue, state}               a person moves the issue (any state, by name)
    POST /_admin/update {issue, title?, description?, labels?, priority?}
    POST /_admin/comment {issue, body}             a person comments
    POST /_admin/delete {issue}
    GET  /_admin/stats                             {"calls": n, "by_operation": {op: n}}
    POST /_admin/stats/reset
    GET  /_admin/requests                          [{op, status, at}] every non-admin request
    POST /_admin/fail {"mode": "rate_limit", "count": N, "retry_after": S, "status"?: 400|429}
                      {"mode": "outage", "count": N} | {"mode": "outage", "seconds": S}
                      {"mode": "none"}
                      (rate limits answer Linear's 400 RATELIMITED / Jira's 429 unless `status`
                      says otherwise; outages 503 with Retry-After: retry_after, default 1)
Started with --parent-stdin, a stand-in exits when its stdin closes: tests/trackers_support.py
keeps it open, so a killed test run leaves no stand-in behind.
"""

from __future__ import annotations

import json
import threading
import time
import os
import sys
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class IssueIndex:
    """A stand-in's issues by id, or by the key people use (ENG-1, SHOP-1) in any case."""

    key_field = "identifier"  # the issue attribute holding that key
    issues: dict

    def lookup(self, ref: str):
        issue = self.issues.get(ref)
        if issue is None:
            upper = ref.upper()
            issue = next((i for i in self.issues.values() if getattr(i, self.key_field) == upper), None)
        return issue

    def find(self, ref: str):
        issue = self.lookup(str(ref))
        if issue is None:
            raise AdminError(404, f"no issue {ref!r}")
        return issue


class Faults:
    """Failure injection: the next `count` requests (or those in the next `seconds`) fail."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spec: dict = {"mode": "none"}

    def set(self, body: dict) -> dict:
        mode = body.get("mode")
        if mode not in ("none", "rate_limit", "outage"):
            raise AdminError(400, f"mode must be none, rate_limit or outage, not {mode!r}")
        spec = {"mode": mode}
        if mode != "none":
            if "count" not in body and "seconds" not in body:
                raise AdminError(400, "say how long: count (requests) or seconds")
            if "count" in body:
                spec["count"] = int(body["count"])
            if "seconds" in body:
                spec["until"] = time.time() + float(body["seconds"])
            spec["retry_after"] = float(body.get("retry_after", 1))
            spec["status"] = int(body.get("status", 0))
        with self.lock:
            self.spec = spec
        return self.describe()

    def describe(self) -> dict:
        with self.lock:
            return {k: v for k, v in self.spec.items()}

    def take(self) -> dict | None:
        """The fault this request meets (consuming one of `count`), or None."""
        with self.lock:
            spec = self.spec
            if spec["mode"] == "none":
                return None
            if "until" in spec and time.time() >= spec["until"]:
                self.spec = {"mode": "none"}
                return None
            if "count" in spec:
                if spec["count"] <= 0:
                    self.spec = {"mode": "none"}
                    return None
                spec["count"] -= 1
            return dict(spec)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.by_operation: dict[str, int] = {}
        self.requests: list[dict] = []

    def record(self, op: str, status: int) -> None:
        with self.lock:
            self.calls += 1
            self.by_operation[op] = self.by_operation.get(op, 0) + 1
            self.requests.append({"op": op, "status": status, "at": time.time()})

    def snapshot(self) -> dict:
        with self.lock:
            return {"calls": self.calls, "by_operation": dict(self.by_operation)}

    def reset(self) -> dict:
        with self.lock:
            self.calls, self.by_operation, self.requests = 0, {}, []
        return self.snapshot()


class Clock:
    """Strictly increasing timestamps: seeded issues and comments keep a stable order."""

    def __init__(self) -> None:
        self.last = 0.0
        self.lock = threading.Lock()

    def now(self) -> datetime:
        with self.lock:
            self.last = max(time.time(), self.last + 0.001)
            return datetime.fromtimestamp(self.last, timezone.utc)


class BaseHandler(BaseHTTPRequestHandler):
    """One request: admin routes here, the tracker's own API in the subclass's `api()`."""

    protocol_version = "HTTP/1.1"
    world = None  # set by make_server: the tracker's World (seed, move, view... + api state)

    def log_message(self, *args) -> None:  # quiet
        pass

    # ----- plumbing ---------------------------------------------------------------------------

    def raw_body(self) -> bytes:
        if getattr(self, "_raw", None) is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._raw = self.rfile.read(length) if length else b""
        return self._raw

    def json_body(self):
        """The JSON body; `ValueError` when it is not JSON."""
        raw = self.raw_body()
        return json.loads(raw) if raw else None

    def send(self, status: int, data=None, headers: dict | None = None, *, text: str | None = None,
             content_type: str = "application/json") -> None:
        if text is not None:
            payload = text.encode()
        elif data is None:
            payload = b""
        else:
            payload = json.dumps(data).encode()
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.end_headers()
        if payload:
            self.wfile.write(payload)
        self.status_sent = status

    def _route(self, method: str) -> None:
        self._raw = None
        self.status_sent = 0
        parts = urlsplit(self.path)
        self.route_path = parts.path
        self.query = parse_qs(parts.query)
        if parts.path.startswith("/_admin/"):
            return self._admin(method, parts.path)
        self.raw_body()  # read it whatever happens: the connection stays usable
        op = "unknown"
        try:
            op = self.api(method, parts.path) or op
        finally:
            self.world.stats.record(op, self.status_sent)

    def api(self, method: str, path: str) -> str:
        """Answer one API request (subclass); return the operation's name for the stats."""
        raise NotImplementedError

    # ----- admin -------------------------------------------------------------------------------

    def _admin(self, method: str, path: str) -> None:
        if self.client_address[0] != "127.0.0.1":
            return self.send(403, {"error": "the admin API is for loopback callers only"})
        try:
            body = self.json_body() or {}
        except ValueError:
            return self.send(400, {"error": "the body is not JSON"})
        rest = [unquote(p) for p in path.strip("/").split("/")[1:]]
        world = self.world
        try:
            if method == "GET" and rest == ["stats"]:
                return self.send(200, world.stats.snapshot())
            if method == "POST" and rest == ["stats", "reset"]:
                return self.send(200, world.stats.reset())
            if method == "GET" and rest == ["requests"]:
                with world.stats.lock:
                    return self.send(200, list(world.stats.requests))
            if method == "POST" and rest == ["fail"]:
                return self.send(200, world.faults.set(body))
            with world.lock:
                if method == "POST" and rest == ["seed"]:
                    return self.send(200, world.seed(body))
                if method == "GET" and rest == ["issues"]:
                    return self.send(200, world.views())
                if method == "GET" and len(rest) == 2 and rest[0] == "issues":
                    return self.send(200, world.view(world.find(rest[1])))
                if method == "POST" and rest == ["move"]:
                    issue = world.find(_required(body, "issue"))
                    world.set_state(issue, _required(body, "state"), by="human")
                    return self.send(200, world.view(issue))
                if method == "POST" and rest == ["update"]:
                    issue = world.find(_required(body, "issue"))
                    world.update(issue, body)
                    return self.send(200, world.view(issue))
                if method == "POST" and rest == ["comment"]:
                    issue = world.find(_required(body, "issue"))
                    world.add_comment(issue, _required(body, "body"), by="human")
                    return self.send(200, world.view(issue))
                if method == "POST" and rest == ["delete"]:
                    world.delete(world.find(_required(body, "issue")))
                    return self.send(200, {"deleted": True})
        except AdminError as exc:
            return self.send(exc.status, {"error": exc.message})
        except (KeyError, TypeError, ValueError) as exc:
            return self.send(400, {"error": f"bad admin request: {exc!r}"})
        return self.send(404, {"error": f"no admin route {method} {path}"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")


def _required(body: dict, key: str):
    if key not in body:
        raise AdminError(400, f"{key} is required")
    return body[key]


def _exit_with_parent() -> None:
    """Stop when stdin closes: the test that started us is gone (even if it was killed)."""
    sys.stdin.buffer.read()
    os._exit(0)


def run(world, handler: type[BaseHandler], port: int, ready_file: str | None, seed: str | None = None,
        parent_stdin: bool = False) -> None:
    """Serve until killed; load the seed file once the base URL is known (issue URLs name it);
    announce the URL on stdout (and in `ready_file`, atomically)."""
    if parent_stdin:
        threading.Thread(target=_exit_with_parent, daemon=True).start()
    handler_class = type(handler.__name__, (handler,), {"world": world})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_class)
    server.daemon_threads = True
    world.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    if seed:
        with world.lock:
            world.seed(json.loads(Path(seed).read_text()))
    if ready_file:
        tmp = Path(ready_file + ".tmp")
        tmp.write_text(world.base_url)
        tmp.replace(ready_file)
    print(f"ready {world.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
