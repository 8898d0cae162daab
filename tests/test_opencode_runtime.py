"""OpenCode's runtime on its own: how `opencode run --format json` is started, and how each
kind of line it prints becomes Baton's events (the dispatch tests run it through an agent)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backend.runtimes.base import EventKind, TurnRequest
from backend.runtimes.opencode import OpenCodeConfig, OpenCodeRuntime
from backend.runtimes.opencode.events import TurnParser

FAKE = Path(__file__).parent / "fakes" / "fake_opencode.py"
SID = "ses_0123456789abcdef0123456789"


def line(kind: str, **fields) -> str:
    return json.dumps({"type": kind, "timestamp": 1760000000000, "sessionID": SID, **fields})


def step_finish(reason: str, cost: float = 0.01, inp: int = 100, out: int = 10, reasoning: int = 2,
                read: int = 50, write: int = 5) -> str:
    return line("step_finish", part={"type": "step-finish", "reason": reason, "cost": cost, "tokens": {
        "input": inp, "output": out, "reasoning": reasoning, "cache": {"read": read, "write": write}}})


def tool_line(status: str = "completed", exit_code: int | None = 0, tool: str = "bash") -> str:
    state = {"status": status, "input": {"command": "echo hi > a.txt", "description": "write a"}}
    if status == "completed":
        state |= {"output": "ok\n", "metadata": {} if exit_code is None else {"exit": exit_code}}
    else:
        state |= {"error": "tool blew up"}
    return line("tool_use", part={"type": "tool", "tool": tool, "callID": "call_1", "state": state})


def request(tmp_path: Path, **fields) -> TurnRequest:
    worktree = tmp_path / "worktree"
    worktree.mkdir(exist_ok=True)
    values = dict(prompt="do it", cwd=worktree, env={"TASK_ID": "t1", "PWD": "/somewhere/else", "PATH": "/bin"},
                  scratch=tmp_path / "t1.runtime")
    return TurnRequest(**{**values, **fields})


# ----- parsing ---------------------------------------------------------------------------------


def test_first_line_starts_the_session_with_the_chosen_model():
    parser = TurnParser(model="local/m1")
    first = parser.parse_line(line("step_start", part={"type": "step-start"}))
    assert [e.kind for e in first] == [EventKind.session_started]
    assert first[0].session_id == SID and first[0].model == "local/m1"
    assert parser.parse_line(line("step_start", part={"type": "step-start"})) == []  # once per turn


def test_text_is_assistant_text_and_blank_text_is_dropped():
    parser = TurnParser()
    parser.parse_line(line("step_start", part={}))
    (ev,) = parser.parse_line(line("text", part={"type": "text", "text": "I'll add the file."}))
    assert ev.kind is EventKind.assistant_text and ev.text == "I'll add the file."
    assert parser.parse_line(line("text", part={"type": "text", "text": "  \n"})) == []


def test_a_completed_tool_is_a_tool_use_and_an_ok_result():
    parser = TurnParser()
    parser.parse_line(line("step_start", part={}))
    use, result = parser.parse_line(tool_line())
    assert use.kind is EventKind.tool_use and use.tool_name == "bash" and use.tool_use_id == "call_1"
    assert use.tool_input == "echo hi > a.txt"
    assert result.kind is EventKind.tool_result and result.ok is True and result.tool_use_id == "call_1"
    assert result.text == "ok"


@pytest.mark.parametrize("status, exit_code", [("completed", 2), ("error", None)])
def test_a_failed_command_or_a_tool_error_is_a_failed_tool_result(status, exit_code):
    parser = TurnParser()
    parser.parse_line(line("step_start", part={}))
    _, result = parser.parse_line(tool_line(status, exit_code))
    assert result.ok is False
    assert result.text == ("ok" if status == "completed" else "tool blew up")


def test_tool_input_summary_uses_opencodes_field_names():
    parser = TurnParser()
    parser.parse_line(line("step_start", part={}))
    use, _ = parser.parse_line(line("tool_use", part={"tool": "write", "callID": "c2", "state": {
        "status": "completed", "input": {"filePath": "/w/a.txt", "content": "x" * 5000}, "output": ""}}))
    assert use.tool_name == "write" and use.tool_input == "/w/a.txt"


def test_steps_sum_tokens_and_cost_into_one_result_at_the_final_step():
    parser = TurnParser(model="p/m")
    parser.parse_line(line("step_start", part={}))
    assert parser.parse_line(step_finish("tool-calls", cost=0.01)) == []  # the loop goes on
    parser.parse_line(tool_line())
    parser.parse_line(line("text", part={"text": "Done."}))
    (result,) = parser.parse_line(step_finish("stop", cost=0.02, inp=200, out=20, reasoning=3, read=60, write=6))
    assert result.kind is EventKind.result and result.ok is True and result.subtype == "success"
    assert result.cost_usd == pytest.approx(0.03) and result.cost_estimated is False
    assert (result.input_tokens, result.output_tokens) == (300, 10 + 2 + 20 + 3)  # reasoning is output
    assert (result.cache_read_tokens, result.cache_creation_tokens) == (110, 11)
    assert result.num_turns == 2 and result.text == "Done." and result.session_id == SID


def test_an_unknown_finish_reason_does_not_end_the_turn_but_length_fails_it():
    parser = TurnParser()
    assert [e.kind for e in parser.parse_line(step_finish("unknown"))] == [EventKind.session_started]
    (result,) = parser.parse_line(step_finish("length"))
    assert result.ok is False and result.subtype == "length" and result.input_tokens == 200


def test_no_cost_reported_stays_unknown():
    parser = TurnParser()
    parser.parse_line(line("step_start", part={}))
    (result,) = parser.parse_line(line("step_finish", part={"reason": "stop", "tokens": {"input": 5, "output": 1}}))
    assert result.ok is True and result.cost_usd is None and result.input_tokens == 5


def test_an_error_is_a_system_event_and_a_failed_result_with_the_providers_message():
    parser = TurnParser()
    parser.parse_line(line("step_start", part={}))
    parser.parse_line(step_finish("tool-calls", cost=0.5))
    note, result = parser.parse_line(line("error", error={
        "name": "APIError", "data": {"message": "Invalid API key", "statusCode": 401, "isRetryable": False}}))
    assert note.kind is EventKind.system and note.subtype == "error" and "Invalid API key" in note.text
    assert result.kind is EventKind.result and result.ok is False and result.subtype == "APIError"
    assert result.errors == ["Invalid API key (HTTP 401)"]
    assert result.cost_usd == pytest.approx(0.5)  # what was spent before the error still counts


def test_a_later_successful_step_recovers_from_an_error():
    parser = TurnParser()
    parser.parse_line(line("error", error={"name": "UnknownError", "data": {"message": "flaky"}}))
    (result,) = parser.parse_line(step_finish("stop"))
    assert result.ok is True and result.errors is None


def test_a_done_line_adds_a_result_only_when_something_changed():
    parser = TurnParser()
    parser.parse_line(line("step_start", part={}))
    assert parser.parse_line(line("done")) != []  # nothing reported yet: the end is a result
    parser.parse_line(step_finish("stop"))
    assert parser.parse_line(line("done")) == []  # the last step already said it all


@pytest.mark.parametrize("raw", [
    "this is not JSON",
    "[1, 2]",
    json.dumps({"type": "mystery", "sessionID": SID}),
    json.dumps({"type": "tool_use", "sessionID": SID, "part": "not an object"}),
    json.dumps({"type": "text", "sessionID": SID, "part": {"text": "x"}})[:-5],
])
def test_malformed_lines_are_unparsed_events_never_exceptions(raw):
    events = TurnParser().parse_line(raw)
    assert [e.kind for e in events] == [EventKind.unparsed] and events[0].text == raw.strip()


def test_reasoning_and_step_start_are_kept_in_the_raw_log_only():
    parser = TurnParser()
    parser.parse_line(line("step_start", part={}))
    assert parser.parse_line(line("reasoning", part={"text": "hmm"})) == []
    assert parser.parse_line(line("step_start", part={})) == []


# ----- invocation ------------------------------------------------------------------------------


def test_invocation_argv_env_and_stdin(tmp_path):
    runtime = OpenCodeRuntime(OpenCodeConfig(command="opencode", model="local/m1", agent="build",
                                             extra_args=["--print-logs"], env={"PROVIDER_KEY": "$MY_KEY", "X": "1"}))
    req = request(tmp_path, resume="ses_abc", env={"TASK_ID": "t1", "PWD": "/else", "MY_KEY": "k"})
    inv = runtime.turn(req).invocation
    assert inv.argv == ["opencode", "run", "--format", "json", "--dir", str(req.cwd), "-m", "local/m1",
                        "--agent", "build", "-s", "ses_abc", "--print-logs"]
    assert inv.stdin == "do it" and inv.cwd == req.cwd
    assert inv.env["PWD"] == str(req.cwd)  # never the inherited one: OpenCode's tools run in $PWD
    assert inv.env["OPENCODE_CONFIG"] == str(req.scratch / "opencode.json")
    assert inv.env["PROVIDER_KEY"] == "k" and inv.env["X"] == "1" and inv.env["TASK_ID"] == "t1"
    for name in ("OPENCODE_DISABLE_AUTOUPDATE", "OPENCODE_DISABLE_MODELS_FETCH", "OPENCODE_DISABLE_LSP_DOWNLOAD"):
        assert inv.env[name] == "1"
    assert "XDG_DATA_HOME" not in inv.env  # the user's own state unless isolated_state


def test_inherited_opencode_variables_cannot_override_the_pins(tmp_path):
    runtime = OpenCodeRuntime(OpenCodeConfig(env={"OPENCODE_EXPERIMENTAL": "1"}))
    inherited = {"OPENCODE_PERMISSION": '{"*":"ask"}', "OPENCODE_CONFIG_CONTENT": "{}", "OPENCODE_CONFIG": "/x.json"}
    env = runtime.turn(request(tmp_path, env=inherited)).invocation.env
    assert "OPENCODE_PERMISSION" not in env and "OPENCODE_CONFIG_CONTENT" not in env
    assert env["OPENCODE_CONFIG"] != "/x.json" and env["OPENCODE_EXPERIMENTAL"] == "1"  # opencode.env may set them


def test_the_tasks_model_wins_and_no_model_means_no_flag(tmp_path):
    runtime = OpenCodeRuntime(OpenCodeConfig(model="local/m1"))
    assert runtime.turn(request(tmp_path, model="other/m2")).invocation.argv[6:8] == ["-m", "other/m2"]
    bare = OpenCodeRuntime(OpenCodeConfig()).turn(request(tmp_path)).invocation.argv
    assert "-m" not in bare and "-s" not in bare and "--agent" not in bare


def test_isolated_state_puts_every_xdg_folder_in_the_tasks_scratch(tmp_path):
    req = request(tmp_path)
    env = OpenCodeRuntime(OpenCodeConfig(isolated_state=True)).turn(req).invocation.env
    for name, folder in [("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache"),
                         ("XDG_STATE_HOME", "state")]:
        assert env[name] == str(req.scratch / folder) and (req.scratch / folder).is_dir()


def test_generated_config_has_the_pins_and_keeps_the_users_settings(tmp_path):
    provider = {"local": {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": "http://127.0.0.1:1/v1",
                                                                          "apiKey": "{env:PROVIDER_KEY}"}}}
    user = {"provider": provider, "model": "local/m1", "share": "auto", "autoupdate": True}
    req = request(tmp_path)
    runtime = OpenCodeRuntime(OpenCodeConfig(config=user))
    runtime.turn(req)
    path = req.scratch / "opencode.json"
    written = json.loads(path.read_text())
    assert written == {"provider": provider, "model": "local/m1", "share": "disabled", "autoupdate": False,
                       "permission": {"*": "allow"}, "snapshot": False}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it may hold provider settings
    assert list(req.scratch.iterdir()) == [path]  # no temporary file left behind
    assert not any(req.cwd.iterdir())  # nothing in the worktree
    # The config's model is OpenCode's to use (no -m), but Baton's events name it.
    assert "-m" not in runtime.turn(req).invocation.argv and runtime.model_for(None) == "local/m1"


def test_the_users_permission_rules_are_kept_as_written(tmp_path):
    req = request(tmp_path)
    rules = {"bash": {"git push *": "deny", "*": "allow"}, "edit": "allow"}
    OpenCodeRuntime(OpenCodeConfig(config={"permission": rules})).turn(req)
    assert json.loads((req.scratch / "opencode.json").read_text())["permission"] == rules


def test_check_names_the_key_and_the_install_hint(tmp_path):
    problem = OpenCodeRuntime(OpenCodeConfig(command=str(tmp_path / "nope"))).check()
    assert problem["code"] == "runtime_unavailable"
    assert "opencode.command" in problem["message"] and "npm install -g opencode-ai" in problem["message"]
    assert OpenCodeRuntime(OpenCodeConfig(command=sys.executable)).check() is None


def test_stall_hint_names_the_silent_retries_and_what_to_check():
    hint = OpenCodeRuntime(OpenCodeConfig()).stall_hint
    assert "retries" in hint and "silently" in hint and "opencode.config" in hint and "log" in hint
    assert OpenCodeRuntime.resume_after_restart is False


def test_the_fake_reads_the_prompt_from_stdin_as_is_like_the_real_cli(tmp_path):
    """The invocation's stdin reaches the fake (which reads it the way run.ts does) unquoted."""
    req = request(tmp_path, prompt='say "hi there"\nFAKE: {"steps": []}', env={**os.environ, "PWD": "/"})
    inv = OpenCodeRuntime(OpenCodeConfig(command=str(FAKE))).turn(req).invocation
    log = tmp_path / "calls.jsonl"
    proc = subprocess.run([sys.executable, *inv.argv], input=inv.stdin, cwd=inv.cwd, capture_output=True, text=True,
                          env={**inv.env, "FAKE_CLI_LOG": str(log), "FAKE_CLI_STATE": str(tmp_path / "state")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(log.read_text())["prompt"] == req.prompt
    parser = TurnParser()
    events = [e for raw in proc.stdout.splitlines() for e in parser.parse_line(raw)]
    assert events[-1].kind is EventKind.result and events[-1].ok is True and events[-1].text == "Done."
