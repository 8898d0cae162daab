"""Local stand-ins for OpenAI's two wire formats, enough to drive the real Codex and OpenCode CLIs.

`StandInResponsesAPI` answers `POST …/responses` (SSE) the way Codex 0.169 expects;
`StandInChatCompletionsAPI` answers `POST …/chat/completions` (SSE or JSON) the way OpenCode's
`@ai-sdk/openai-compatible` provider expects. Both follow one script: while the conversation has
no tool result yet, ask for one tool call; once the result is back, end the turn with text.
Requests without tools (titles, housekeeping) get a short text. Every request is recorded.

Two switches serve failure tests: `fail_status` answers every model request with that HTTP
status; `stall` holds a model response open (after its first event) until `release()`.
`delay` holds each request with tools that many seconds before answering (benchmarks).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "gpt-5.5"
# A stalled response is given up after this long, so a forgotten stall cannot hang a test run.
STALL_LIMIT = 300.0


class _StandIn:
    """The HTTP plumbing shared by both stand-ins; subclasses answer model requests."""

    model_path = ""

    def __init__(self, tool_name: str, tool_arguments: dict | str, final_text: str = "Done.", *,
                 fail_status: int | None = None, stall: bool = False, usage: dict | None = None,
                 delay: float = 0.0) -> None:
        self.tool_name = tool_name
        self.delay = delay  # seconds before answering a request with tools (benchmarks: agents alive together)
        self.tool_arguments = tool_arguments
        self.final_text = final_text
        self.fail_status = fail_status
        self.stall = stall
        self.usage = usage or {"input": 100, "cached": 20, "output": 10, "reasoning": 3}
        self.requests: list[dict[str, Any]] = []
        self.stalled = 0  # responses currently held open
        self._released = threading.Event()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def release(self) -> None:
        """End every stalled response (and stop stalling new ones)."""
        self.stall = False
        self._released.set()

    def model_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith(self.model_path)]

    def next_id(self) -> int:
        return next(self._ids)

    # Subclasses: the SSE events (name or None, payload) or JSON body for one request.
    def stream_events(self, body: dict) -> list[tuple[str | None, Any]]:
        raise NotImplementedError

    def json_reply(self, body: dict) -> dict:
        raise NotImplementedError

    def error_body(self, status: int) -> dict:
        kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_exceeded"}.get(
            status, "server_error")
        return {"error": {"message": f"stand-in answers {status}", "type": kind, "code": None}}

    def extra_get(self, path: str) -> dict | None:
        return None

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, payload: dict, status: int = 200) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, body: Any) -> None:
                api.requests.append({"method": self.command, "path": self.path, "body": body,
                                     "headers": dict(self.headers), "at": time.monotonic()})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                self._record(body)
                if not self.path.split("?")[0].endswith(api.model_path):
                    self._json({"error": {"message": f"no route {self.path}", "type": "not_found"}}, 404)
                    return
                if api.fail_status is not None:
                    self._json(api.error_body(api.fail_status), api.fail_status)
                    return
                if api.delay and body.get("tools"):
                    time.sleep(api.delay)
                if not body.get("stream"):
                    self._json(api.json_reply(body))
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                events = api.stream_events(body)
                for number, (name, data) in enumerate(events):
                    if number == 1 and api.stall:
                        api.stalled += 1
                        try:
                            api._released.wait(STALL_LIMIT)
                        finally:
                            api.stalled -= 1
                        return  # the client sees the stream end without a completion
                    line = "" if name is None else f"event: {name}\n"
                    payload = data if isinstance(data, str) else json.dumps(data)
                    try:
                        self.wfile.write(f"{line}data: {payload}\n\n".encode())
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        return

            def do_GET(self) -> None:  # noqa: N802
                self._record(None)
                reply = api.extra_get(self.path.split("?")[0])
                if reply is None:
                    self._json({"error": {"message": f"no route {self.path}", "type": "not_found"}}, 404)
                else:
                    self._json(reply)

        return Handler


class StandInResponsesAPI(_StandIn):
    """OpenAI Responses API for Codex: `with StandInResponsesAPI("exec_command", {...}) as api:`;
    point a provider's `base_url` at `api.url + "/v1"`. Tool results come back in `input` as
    `function_call_output` items."""

    model_path = "/responses"

    def _has_tool_result(self, body: dict) -> bool:
        items = body.get("input") or []
        if not isinstance(items, list):
            return False
        return any(isinstance(i, dict) and i.get("type") in ("function_call_output", "custom_tool_call_output")
                   for i in _since_last_user(items))

    def output_items(self, body: dict) -> list[dict]:
        n = self.next_id()
        if not body.get("tools") or self._has_tool_result(body):
            text = self.final_text if body.get("tools") else "ok"
            return [_message_item(f"msg_standin_{n}", text)]
        if isinstance(self.tool_arguments, str):  # a freeform tool such as Codex's apply_patch
            call = {"type": "custom_tool_call", "id": f"ctc_standin_{n}", "call_id": f"call_standin_{n}",
                    "name": self.tool_name, "input": self.tool_arguments, "status": "completed"}
        else:
            call = {"type": "function_call", "id": f"fc_standin_{n}", "call_id": f"call_standin_{n}",
                    "name": self.tool_name, "arguments": json.dumps(self.tool_arguments), "status": "completed"}
        return [_message_item(f"msg_standin_{n}", "I'll do that now."), call]

    def usage_body(self) -> dict:
        u = self.usage
        return {"input_tokens": u["input"], "input_tokens_details": {"cached_tokens": u["cached"]},
                "output_tokens": u["output"], "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
                "total_tokens": u["input"] + u["output"]}

    def _response(self, rid: str, status: str, output: list[dict], usage: dict | None) -> dict:
        return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
                "model": MODEL, "output": output, "usage": usage}

    def stream_events(self, body: dict) -> list[tuple[str | None, Any]]:
        rid = f"resp_standin_{self.next_id()}"
        items = self.output_items(body)
        seq = itertools.count()
        events: list[tuple[str | None, Any]] = [
            ("response.created", {"type": "response.created", "sequence_number": next(seq),
                                  "response": self._response(rid, "in_progress", [], None)})]
        for index, item in enumerate(items):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                events += [
                    ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": next(seq),
                                                    "output_index": index, "item": {**item, "status": "in_progress",
                                                                                    "content": []}}),
                    ("response.content_part.added", {"type": "response.content_part.added", "sequence_number": next(seq),
                                                     "item_id": item["id"], "output_index": index, "content_index": 0,
                                                     "part": {"type": "output_text", "text": "", "annotations": []}}),
                    ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": next(seq),
                                                    "item_id": item["id"], "output_index": index, "content_index": 0,
                                                    "delta": text}),
                    ("response.output_text.done", {"type": "response.output_text.done", "sequence_number": next(seq),
                                                   "item_id": item["id"], "output_index": index, "content_index": 0,
                                                   "text": text}),
                ]
            elif item["type"] == "custom_tool_call":
                events.append(("response.output_item.added", {
                    "type": "response.output_item.added", "sequence_number": next(seq), "output_index": index,
                    "item": {**item, "input": "", "status": "in_progress"}}))
            else:
                events += [
                    ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": next(seq),
                                                    "output_index": index, "item": {**item, "arguments": "",
                                                                                    "status": "in_progress"}}),
                    ("response.function_call_arguments.delta", {
                        "type": "response.function_call_arguments.delta", "sequence_number": next(seq),
                        "item_id": item["id"], "output_index": index, "delta": item["arguments"]}),
                    ("response.function_call_arguments.done", {
                        "type": "response.function_call_arguments.done", "sequence_number": next(seq),
                        "item_id": item["id"], "output_index": index, "arguments": item["arguments"]}),
                ]
            events.append(("response.output_item.done", {"type": "response.output_item.done",
                                                         "sequence_number": next(seq), "output_index": index,
                                                         "item": item}))
        events.append(("response.completed", {"type": "response.completed", "sequence_number": next(seq),
                                              "response": self._response(rid, "completed", items, self.usage_body())}))
        return events

    def json_reply(self, body: dict) -> dict:
        return self._response(f"resp_standin_{self.next_id()}", "completed", self.output_items(body),
                              self.usage_body())

    def extra_get(self, path: str) -> dict | None:
        if path.endswith("/models"):
            return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "standin"}],
                    "models": []}
        return None


def _since_last_user(items: list) -> list:
    """The current turn: a resumed conversation carries earlier turns' tool results too."""
    last = max((n for n, i in enumerate(items) if isinstance(i, dict) and i.get("role") == "user"), default=-1)
    return items[last + 1:]


def _message_item(item_id: str, text: str) -> dict:
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


class StandInChatCompletionsAPI(_StandIn):
    """OpenAI Chat Completions for OpenCode's `@ai-sdk/openai-compatible` provider:
    `with StandInChatCompletionsAPI("bash", {...}) as api:`; `options.baseURL` = `api.url + "/v1"`.
    Tool results come back as `{"role": "tool"}` messages."""

    model_path = "/chat/completions"

    def reply_for(self, body: dict) -> tuple[str, dict | None]:
        """(text, tool call or None) for one request."""
        if not body.get("tools"):
            return "Stand-in title", None
        if any(m.get("role") == "tool" for m in _since_last_user(body.get("messages", []))):
            return self.final_text, None
        call = {"id": f"call_standin_{self.next_id()}", "type": "function",
                "function": {"name": self.tool_name, "arguments": json.dumps(self.tool_arguments)}}
        return "I'll do that now.", call

    def usage_body(self) -> dict:
        u = self.usage
        return {"prompt_tokens": u["input"], "completion_tokens": u["output"],
                "total_tokens": u["input"] + u["output"],
                "prompt_tokens_details": {"cached_tokens": u["cached"]},
                "completion_tokens_details": {"reasoning_tokens": u["reasoning"]}}

    def stream_events(self, body: dict) -> list[tuple[str | None, Any]]:
        text, call = self.reply_for(body)
        cid = f"chatcmpl-standin-{self.next_id()}"

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        events: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant", "content": ""})),
                                                (None, chunk({"content": text}))]
        if call is not None:
            events += [
                (None, chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                              "function": {"name": call["function"]["name"], "arguments": ""}}]})),
                (None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]})),
            ]
        events.append((None, chunk({}, "tool_calls" if call else "stop")))
        events.append((None, {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                              "model": MODEL, "choices": [], "usage": self.usage_body()}))
        events.append((None, "[DONE]"))
        return events

    def json_reply(self, body: dict) -> dict:
        text, call = self.reply_for(body)
        message: dict = {"role": "assistant", "content": text}
        if call is not None:
            message["tool_calls"] = [call]
        return {"id": f"chatcmpl-standin-{self.next_id()}", "object": "chat.completion", "created": int(time.time()),
                "model": MODEL, "choices": [{"index": 0, "message": message,
                                             "finish_reason": "tool_calls" if call else "stop"}],
                "usage": self.usage_body()}

    def extra_get(self, path: str) -> dict | None:
        if path.endswith("/models"):
            return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "standin"}]}
        return None
