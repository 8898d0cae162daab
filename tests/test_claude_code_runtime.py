"""Claude Code's command line and the stream-json parser, against the protocol's real lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

from backend.config import ClaudeCodeConfig
from backend.runtimes.base import EventKind
from backend.runtimes.claude_code import ClaudeCodeRuntime

INIT = {"type": "system", "subtype": "init", "session_id": "4fd2", "cwd": "/w/t1", "model": "claude-sonnet-4-5",
        "tools": ["Bash"], "mcp_servers": [], "permissionMode": "bypassPermissions",
        "claude_code_version": "2.1.329"}
ASSISTANT = {"type": "assistant", "message": {"id": "msg_1", "role": "assistant", "model": "m", "content": [
    {"type": "text", "text": "I'll add the file."},
    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "echo hi > a.txt"}}],
    "usage": {"input_tokens": 1200, "output_tokens": 20}}, "session_id": "4fd2"}
TOOL_RESULT = {"type": "user", "message": {"role": "user", "content": [
    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "", "is_error": False}]}, "session_id": "4fd2"}
SUCCESS = {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 195, "num_turns": 2,
           "result": "Done.", "session_id": "4fd2", "total_cost_usd": 0.00795,
           "usage": {"input_tokens": 2400, "output_tokens": 50, "cache_read_input_tokens": 7,
                     "cache_creation_input_tokens": 3},
           "modelUsage": {"claude-sonnet-4-5": {"costUSD": 0.00795}}, "permission_denials": []}
MAX_TURNS = {"type": "result", "subtype": "error_max_turns", "is_error": True, "num_turns": 5,
             "session_id": "4fd2", "total_cost_usd": 0.1, "usage": {}, "errors": ["Reached maximum turns"]}


def parse(obj) -> list:
    runtime = ClaudeCodeRuntime(ClaudeCodeConfig())
    return runtime.parse_line(obj if isinstance(obj, str) else json.dumps(obj))


def test_init_starts_a_session():
    (ev,) = parse(INIT)
    assert (ev.kind, ev.session_id, ev.model) == (EventKind.session_started, "4fd2", "claude-sonnet-4-5")


def test_assistant_message_gives_text_and_tool_use():
    text, tool = parse(ASSISTANT)
    assert (text.kind, text.text) == (EventKind.assistant_text, "I'll add the file.")
    assert (tool.kind, tool.tool_name, tool.tool_input, tool.tool_use_id) == (
        EventKind.tool_use, "Bash", "echo hi > a.txt", "toolu_1")


def test_tool_result_ok_and_error():
    (ok,) = parse(TOOL_RESULT)
    assert ok.kind is EventKind.tool_result and ok.ok is True
    failing = json.loads(json.dumps(TOOL_RESULT))
    failing["message"]["content"][0].update(is_error=True, content=[{"type": "text", "text": "denied"}])
    (err,) = parse(failing)
    assert err.ok is False and err.text == "denied"


def test_success_result_carries_cost_tokens_and_turns():
    (ev,) = parse(SUCCESS)
    assert ev.kind is EventKind.result and ev.ok is True and ev.text == "Done."
    assert (ev.cost_usd, ev.num_turns, ev.duration_ms) == (0.00795, 2, 195)
    assert (ev.input_tokens, ev.output_tokens, ev.cache_read_tokens, ev.cache_creation_tokens) == (2400, 50, 7, 3)


def test_error_result_has_errors_and_no_text():
    (ev,) = parse(MAX_TURNS)
    assert ev.ok is False and ev.subtype == "error_max_turns" and ev.errors == ["Reached maximum turns"]
    assert ev.text is None


def test_permission_denied_is_shown():
    (ev,) = parse({"type": "system", "subtype": "permission_denied", "tool_name": "Bash"})
    assert ev.kind is EventKind.system and ev.subtype == "permission_denied"
    (said,) = parse({"type": "system", "subtype": "permission_denied", "tool_name": "Write",
                     "message": "Cannot write to /w/a.txt while in plan mode."})
    assert said.text == "Write refused: Cannot write to /w/a.txt while in plan mode." and said.tool_name == "Write"


def test_malformed_and_unknown_lines_become_unparsed_events():
    # Each of these is kept as exactly one `unparsed` event carrying the raw line: never dropped.
    malformed = ("not json at all", "[1, 2]", json.dumps({"type": "mystery"}),
                 json.dumps({"type": "assistant", "message": {"content": "not a list"}}),
                 json.dumps({"type": "assistant", "message": {"content": ["not a block"]}}),
                 json.dumps({"type": "assistant", "message": "not an object"}),
                 json.dumps({"type": "assistant"}),
                 json.dumps({"type": "user", "message": {"content": 7}}),
                 json.dumps({"type": "result", "usage": "weird", "subtype": 5}))
    for line in malformed:
        events = parse(line)
        assert [e.kind for e in events] == [EventKind.unparsed], line
        assert events[0].text == line
    assert parse("") == [] and parse("   \n") == []
    assert parse({"type": "stream_event", "event": {}}) == []
    # A plain-text user turn is of the documented shape: nothing to show, nothing unparsed.
    assert parse({"type": "user", "message": {"role": "user", "content": "the prompt"}}) == []


def test_long_tool_input_is_summarised():
    obj = json.loads(json.dumps(ASSISTANT))
    obj["message"]["content"][1]["input"] = {"command": "x" * 5000}
    tool = parse(obj)[1]
    assert len(tool.tool_input) == 200 and tool.tool_input.endswith("…")


def test_command_line_default_and_resume(tmp_path: Path):
    runtime = ClaudeCodeRuntime(ClaudeCodeConfig(command="/opt/claude", model="opus", max_turns=7,
                                                 append_system_prompt="be brief"))
    inv = runtime.invocation(prompt="do it", cwd=tmp_path, env={"A": "1"}, resume="sess-1")
    assert inv.argv == ["/opt/claude", "-p", "--output-format", "stream-json", "--verbose",
                        "--dangerously-skip-permissions", "--model", "opus", "--max-turns", "7",
                        "--append-system-prompt", "be brief", "--resume", "sess-1"]
    assert inv.stdin == "do it" and inv.cwd == tmp_path
    assert inv.env.get("IS_SANDBOX") == ("1" if os.geteuid() == 0 else None)


def test_command_line_with_permission_mode(tmp_path: Path):
    runtime = ClaudeCodeRuntime(ClaudeCodeConfig(skip_permissions=False, permission_mode="acceptEdits",
                                                 allowed_tools=["Bash(git *)", "Edit"]))
    inv = runtime.invocation(prompt="p", cwd=tmp_path, env={}, resume=None)
    assert "--dangerously-skip-permissions" not in inv.argv and "IS_SANDBOX" not in inv.env
    assert inv.argv[-4:] == ["--permission-mode", "acceptEdits", "--allowedTools", "Bash(git *) Edit"]
