"""A stand-in Anthropic Messages API for the chat tests: `POST /v1/messages` answered from a
scripted queue of replies, streamed as the real API streams (SSE: message_start,
content_block_start, ping, content_block_delta…, content_block_stop, message_delta with
stop_reason and usage, message_stop), or refused with the real error shapes.

    with MessagesStandIn() as api:
        api.script(text(["Hel", "lo"], usage=(120, 7)), tool("propose_plan", {...}), http_error(429))
        ... point the SDK's base_url at api.url ...
        api.requests[0]["headers"]["authorization"], api.requests[0]["body"]["system"]

Replies:
- text(chunks, usage, delay, hold_after): text in one delta per chunk; `delay` seconds before
  each delta; `hold_after=n` stops after n deltas until `api.release` is set (or the client
  goes away, which is recorded in `api.disconnects`): how a test stops an answer mid-stream.
- tool(name, input, pieces, usage, stop_reason, raw_json): a tool_use block whose input arrives
  as `pieces` input_json_delta chunks (`raw_json`: that JSON text instead, e.g. cut off), then
  `stop_reason` (tool_use; max_tokens for a cut-off plan).
- stream_error(kind, message, chunks): some text, then an `error` event (e.g. overloaded_error).
- dropped(chunks, chunked): message_start and some text, then the connection is closed: in the
  middle of a chunked body (what a dropped connection looks like: the client's read fails), or,
  with chunked=False, a body that simply ends there (without message_delta and message_stop).
- http_error(status, kind, message): a plain HTTP error answer (401, 429, 529…).
A request with no reply scripted gets HTTP 500 saying so (the test forgot one).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "claude-sonnet-5-5"
_ERROR_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                       404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


@dataclass
class Reply:
    kind: str  # text | tool | stream_error | dropped | http_error
    chunks: list[str] = field(default_factory=list)
    usage: tuple[int, int] = (100, 10)
    delay: float = 0.0
    hold_after: int | None = None
    name: str = ""
    input: Any = None
    pieces: int = 3
    status: int = 200
    error_type: str = ""
    message: str = ""
    stop_reason: str = ""
    raw_json: str | None = None
    chunked: bool = False


def text(chunks: list[str], usage: tuple[int, int] = (100, 10), delay: float = 0.0,
         hold_after: int | None = None) -> Reply:
    return Reply("text", chunks=list(chunks), usage=usage, delay=delay, hold_after=hold_after)


def tool(name: str, tool_input: Any, pieces: int = 3, usage: tuple[int, int] = (200, 50),
         stop_reason: str = "tool_use", raw_json: str | None = None) -> Reply:
    return Reply("tool", name=name, input=tool_input, pieces=pieces, usage=usage, stop_reason=stop_reason,
                 raw_json=raw_json)


def dropped(chunks: list[str], chunked: bool = True, usage: tuple[int, int] = (100, 10)) -> Reply:
    return Reply("dropped", chunks=list(chunks), chunked=chunked, usage=usage)


def stream_error(kind: str = "overloaded_error", message: str = "Overloaded", chunks: list[str] | None = None,
                 usage: tuple[int, int] = (100, 3)) -> Reply:
    return Reply("stream_error", error_type=kind, message=message, chunks=list(chunks or []), usage=usage)


def http_error(status: int, kind: str | None = None, message: str = "") -> Reply:
    kind = kind or _ERROR_STATUS_TYPES.get(status, "api_error")
    return Reply("http_error", status=status, error_type=kind, message=message or kind.replace("_", " "))


def _split(text_: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text_) // max(1, pieces)))
    return [text_[i:i + size] for i in range(0, len(text_), size)] or [""]


class MessagesStandIn:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0
        self.release = threading.Event()
        self.holding = threading.Event()  # set while a reply waits at its hold_after point
        self._lock = threading.Lock()
        self._ids = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> MessagesStandIn:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def _next(self) -> Reply | None:
        with self._lock:
            self._ids += 1
            return self.replies.popleft() if self.replies else None

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, payload: dict, status: int = 200, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            chunked = False

            def _event(self, name: str, data: dict) -> None:
                raw = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                if self.chunked:  # HTTP/1.1 chunked framing: a chunk's size in hex, the bytes
                    raw = f"{len(raw):x}\r\n".encode() + raw + b"\r\n"
                self.wfile.write(raw)
                self.wfile.flush()

            def _client_gone(self) -> bool:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if not readable:
                    return False
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                api.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                     "body": body})
                if not self.path.startswith("/v1/messages"):
                    self._json({"type": "error", "error": {"type": "not_found_error", "message": self.path}}, 404)
                    return
                reply = api._next()
                if reply is None:
                    self._json({"type": "error", "error": {"type": "api_error",
                                                           "message": "stand-in: no reply scripted"}}, 500,
                               {"x-should-retry": "false"})
                    return
                if reply.kind == "http_error":
                    self._json({"type": "error", "error": {"type": reply.error_type, "message": reply.message}},
                               reply.status, {"x-should-retry": "false", "request-id": f"req_standin_{api._ids}"})
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.chunked = reply.chunked
                if reply.chunked:
                    self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                self.close_connection = True
                try:
                    self._stream(reply, body)
                except (BrokenPipeError, ConnectionResetError):
                    with api._lock:
                        api.disconnects += 1

            def _stream(self, reply: Reply, body: dict) -> None:
                tokens_in, tokens_out = reply.usage
                self._event("message_start", {"type": "message_start", "message": {
                    "id": f"msg_standin_{api._ids}", "type": "message", "role": "assistant",
                    "model": body.get("model", MODEL), "content": [], "stop_reason": None, "stop_sequence": None,
                    "usage": {"input_tokens": tokens_in, "output_tokens": 1}}})
                if reply.kind == "tool":
                    self._event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                        "type": "tool_use", "id": f"toolu_standin_{api._ids}", "name": reply.name, "input": {}}})
                    self._event("ping", {"type": "ping"})
                    raw = reply.raw_json if reply.raw_json is not None else json.dumps(reply.input)
                    for piece in _split(raw, reply.pieces):
                        self._event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                            "delta": {"type": "input_json_delta", "partial_json": piece}})
                    self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
                    self._finish(reply.stop_reason, tokens_out)
                    return
                self._event("content_block_start", {"type": "content_block_start", "index": 0,
                                                    "content_block": {"type": "text", "text": ""}})
                self._event("ping", {"type": "ping"})
                for number, chunk in enumerate(reply.chunks):
                    if reply.hold_after is not None and number == reply.hold_after:
                        api.holding.set()
                        while not api.release.wait(0.02):
                            if self._client_gone():
                                with api._lock:
                                    api.disconnects += 1
                                return
                    if reply.delay:
                        time.sleep(reply.delay)
                    self._event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                        "delta": {"type": "text_delta", "text": chunk}})
                if reply.kind == "stream_error":
                    self._event("error", {"type": "error", "error": {"type": reply.error_type,
                                                                     "message": reply.message}})
                    return
                if reply.kind == "dropped":  # closed here: a chunked body without its last chunk
                    return
                self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
                self._finish("end_turn", tokens_out)

            def _finish(self, stop_reason: str, tokens_out: int) -> None:
                self._event("message_delta", {"type": "message_delta",
                                              "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                              "usage": {"output_tokens": tokens_out}})
                self._event("message_stop", {"type": "message_stop"})

            def do_GET(self) -> None:  # noqa: N802
                self._json({"type": "error", "error": {"type": "not_found_error", "message": self.path}}, 404)

        return Handler
