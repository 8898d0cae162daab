"""The OpenAI-format stand-ins answer a scripted conversation correctly (without any CLI), so the
end-to-end tests of the real Codex and OpenCode CLIs cannot rot silently behind them."""

from __future__ import annotations

import json
import threading

import httpx

from fakes.openai_standin import StandInChatCompletionsAPI, StandInResponsesAPI
from support import wait_for

SHELL = {"cmd": "printf 'hello\\n' > hello.txt"}
TOOLS = [{"type": "function", "name": "exec_command", "parameters": {}}]


def _sse(response: httpx.Response) -> list[tuple[str | None, object]]:
    """(event name, data) for each SSE event; data is parsed JSON, or the raw text ([DONE])."""
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        data = fields["data"]
        events.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return events


def _responses(url: str, body: dict) -> list[tuple[str | None, dict]]:
    resp = httpx.post(f"{url}/v1/responses", json={"model": "gpt-5.5", "stream": True, **body}, timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
    return _sse(resp)


def test_responses_standin_asks_for_the_tool_then_ends_with_text():
    with StandInResponsesAPI("exec_command", SHELL, final_text="All done.") as api:
        user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Create hello.txt"}]}
        first = _responses(api.url, {"input": [user], "tools": TOOLS})
        names = [name for name, _ in first]
        assert names[0] == "response.created" and names[-1] == "response.completed"
        done = [data["item"] for name, data in first if name == "response.output_item.done"]
        call = next(item for item in done if item["type"] == "function_call")
        assert call["name"] == "exec_command" and json.loads(call["arguments"]) == SHELL
        usage = first[-1][1]["response"]["usage"]
        assert usage == {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 20}, "output_tokens": 10,
                         "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 110}

        result = {"type": "function_call_output", "call_id": call["call_id"], "output": "exit 0"}
        second = _responses(api.url, {"input": [user, call, result], "tools": TOOLS})
        done = [data["item"] for name, data in second if name == "response.output_item.done"]
        assert [item["type"] for item in done] == ["message"]
        assert done[0]["content"][0]["text"] == "All done."
        assert "".join(d["delta"] for n, d in second if n == "response.output_text.delta") == "All done."

        # A resumed thread carries the earlier turn's tool result: a new user message starts over.
        again = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Once more"}]}
        third = _responses(api.url, {"input": [user, call, result, again], "tools": TOOLS})
        assert any(d["item"]["type"] == "function_call" for n, d in third if n == "response.output_item.done")

        assert [r["path"] for r in api.model_requests()] == ["/v1/responses"] * 3
        assert api.requests[1]["body"]["input"][-1] == result


def test_responses_standin_calls_a_freeform_tool_and_answers_housekeeping_and_models():
    patch = "*** Begin Patch\n*** Add File: a.txt\n+a\n*** End Patch\n"
    with StandInResponsesAPI("apply_patch", patch) as api:
        events = _responses(api.url, {"input": [{"type": "message", "role": "user", "content": "x"}], "tools": TOOLS})
        call = [d["item"] for n, d in events if n == "response.output_item.done"][-1]
        assert call["type"] == "custom_tool_call" and call["name"] == "apply_patch" and call["input"] == patch
        plain = _responses(api.url, {"input": [{"type": "message", "role": "user", "content": "title?"}]})
        assert [d["item"]["type"] for n, d in plain if n == "response.output_item.done"] == ["message"]
        models = httpx.get(f"{api.url}/v1/models", timeout=10)
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "gpt-5.5"
        assert [r["method"] for r in api.requests] == ["POST", "POST", "GET"]


def _chat(url: str, body: dict) -> list[dict]:
    resp = httpx.post(f"{url}/v1/chat/completions", json={"model": "gpt-5.5", "stream": True, **body}, timeout=10)
    assert resp.status_code == 200
    events = _sse(resp)
    assert events[-1] == (None, "[DONE]")
    return [data for _, data in events[:-1]]


def test_chat_completions_standin_asks_for_bash_then_ends_with_text():
    bash = {"command": "printf 'hello\\n' > hello.txt", "description": "write hello.txt"}
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]
    with StandInChatCompletionsAPI("bash", bash, final_text="All done.") as api:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Create hello.txt"}]
        chunks = _chat(api.url, {"messages": messages, "tools": tools})
        deltas = [c["choices"][0] for c in chunks if c["choices"]]
        calls = [t for d in deltas for t in d["delta"].get("tool_calls", [])]
        assert calls[0]["function"]["name"] == "bash" and calls[0]["id"]
        assert json.loads("".join(t["function"]["arguments"] for t in calls)) == bash
        assert deltas[-1]["finish_reason"] == "tool_calls"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 100
        assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 20}

        messages += [{"role": "assistant", "content": "", "tool_calls": [{"id": calls[0]["id"], "type": "function",
                                                                          "function": {"name": "bash",
                                                                                       "arguments": "{}"}}]},
                     {"role": "tool", "tool_call_id": calls[0]["id"], "content": "(no output)"}]
        chunks = _chat(api.url, {"messages": messages, "tools": tools})
        deltas = [c["choices"][0] for c in chunks if c["choices"]]
        assert "".join(d["delta"].get("content") or "" for d in deltas) == "All done."
        assert deltas[-1]["finish_reason"] == "stop" and not any("tool_calls" in d["delta"] for d in deltas)

        # The title request has no tools; a non-streaming request gets one JSON body.
        title = _chat(api.url, {"messages": [{"role": "user", "content": "Generate a title"}]})
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in title if c["choices"])
        plain = httpx.post(f"{api.url}/v1/chat/completions", json={"messages": messages[:2], "tools": tools},
                           timeout=10).json()
        assert plain["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "bash"
        assert len(api.model_requests()) == 4 and api.requests[1]["body"]["messages"][-1]["role"] == "tool"


def test_fail_status_answers_every_model_request_with_that_status():
    with StandInChatCompletionsAPI("bash", {}, fail_status=400) as api:
        resp = httpx.post(f"{api.url}/v1/chat/completions", json={"stream": True, "messages": []}, timeout=10)
        # OpenCode retries any error whose body says "server_error", whatever the status: keep 4xx typed.
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    with StandInResponsesAPI("exec_command", SHELL, fail_status=500) as api:
        resp = httpx.post(f"{api.url}/v1/responses", json={"stream": True, "input": []}, timeout=10)
        assert resp.status_code == 500 and resp.json()["error"]["type"] == "server_error"
        assert len(api.requests) == 1


def test_stall_holds_the_response_open_until_released():
    with StandInResponsesAPI("exec_command", SHELL, stall=True) as api:
        got: dict = {}

        def ask() -> None:
            got["resp"] = httpx.post(f"{api.url}/v1/responses", json={"stream": True, "input": [], "tools": TOOLS},
                                     timeout=30)

        thread = threading.Thread(target=ask)
        thread.start()
        wait_for(lambda: api.stalled == 1, timeout=10, what="the stand-in to stall a response")
        assert "resp" not in got
        api.release()
        thread.join(timeout=10)
        names = [name for name, _ in _sse(got["resp"])]
        assert names == ["response.created"]  # the stream ended without response.completed
        assert api.stalled == 0
