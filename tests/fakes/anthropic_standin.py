"""A local stand-in for the Anthropic Messages API, enough to drive the real Claude Code CLI.

It answers `POST /v1/messages` (streaming SSE and plain JSON) with a script: while the
conversation has no tool result yet, it asks for one tool call; once the tool result is back,
it ends the turn with text. Requests without tools (housekeeping calls) get a short text reply;
token counting gets a number. Every request is recorded for the test to inspect.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "claude-sonnet-4-5"


def _message_events(blocks: list[dict], stop_reason: str, ids: itertools.count) -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = [("message_start", {"type": "message_start", "message": {
        "id": f"msg_standin_{next(ids)}", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 25, "output_tokens": 1}}})]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    events += [
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                           "usage": {"output_tokens": 12}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


class StandInMessagesAPI:
    """Run with `with StandInMessagesAPI(tool_call) as api:`; `api.url` is the base URL."""

    def __init__(self, tool_name: str, tool_input: dict, final_text: str = "Done.", *, delay: float = 0.0) -> None:
        self.tool_name = tool_name
        self.delay = delay  # seconds before answering a request with tools (benchmarks: agents alive together)
        self.tool_input = tool_input
        self.final_text = final_text
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandInMessagesAPI:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply_for(self, body: dict) -> tuple[list[dict], str]:
        if not body.get("tools"):
            return [{"type": "text", "text": "ok"}], "end_turn"
        has_result = any(
            isinstance(m.get("content"), list) and any(c.get("type") == "tool_result" for c in m["content"])
            for m in body.get("messages", [])
        )
        if has_result:
            return [{"type": "text", "text": self.final_text}], "end_turn"
        tool = {"type": "tool_use", "id": f"toolu_standin_{next(self._ids)}", "name": self.tool_name,
                "input": self.tool_input}
        return [{"type": "text", "text": "I'll do that now."}, tool], "tool_use"

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, payload: dict, status: int = 200) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                api.requests.append({"path": self.path, "body": body})
                if "count_tokens" in self.path:
                    self._json({"input_tokens": 25})
                    return
                if not self.path.startswith("/v1/messages"):
                    self._json({"type": "error", "error": {"type": "not_found_error", "message": self.path}}, 404)
                    return
                if api.delay and body.get("tools"):
                    time.sleep(api.delay)
                blocks, stop = api.reply_for(body)
                if not body.get("stream"):
                    self._json({"id": "msg_standin", "type": "message", "role": "assistant", "model": MODEL,
                                "content": blocks, "stop_reason": stop, "stop_sequence": None,
                                "usage": {"input_tokens": 25, "output_tokens": 12}})
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.end_headers()
                for name, data in _message_events(blocks, stop, api._ids):
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()

            def do_GET(self) -> None:  # noqa: N802
                self._json({"type": "error", "error": {"type": "not_found_error", "message": self.path}}, 404)

        return Handler
