"""A planning turn with the real pinned CLIs, each pointed at a local stand-in model API whose
scripted model tries to write a file, edit one and run `echo x > f.txt`: the CLI's own
permission system refuses every write (Claude Code's plan mode, Codex's read-only sandbox,
OpenCode's deny rules), the worktree stays byte for byte as it was, and the model's final
answer is the turn's result. Run as Baton runs a turn: runtime.turn(...) and run_streaming."""

from __future__ import annotations

import json
import os
from pathlib import Path

from backend.runtimes.base import TurnRequest
from backend.runtimes.claude_code import ClaudeCodeConfig, ClaudeCodeRuntime
from backend.runtimes.codex import CodexConfig, CodexRuntime
from backend.runtimes.opencode import OpenCodeConfig, OpenCodeRuntime
from fakes.anthropic_standin import StandInMessagesAPI
from fakes.openai_standin import StandInChatCompletionsAPI, StandInResponsesAPI, _message_item, _since_last_user
from realcli import npm_cli
from runtimes.turns import run_turn, snapshot
from support import git, make_local_repo

PLAN = "PLAN: 1. add new.txt 2. reword the README 3. test it"
PATCH = ("*** Begin Patch\n*** Add File: new.txt\n+new\n*** Update File: README.md\n@@\n-# local\n+# changed\n"
         "*** End Patch\n")


def tool_results(messages: list) -> int:
    return sum(1 for m in messages if isinstance(m.get("content"), list)
               for c in m["content"] if isinstance(c, dict) and c.get("type") == "tool_result")


class ScriptedMessagesAPI(StandInMessagesAPI):
    """Claude's side: one tool call per request, in order, then the plan as the final answer."""

    def __init__(self, calls: list[tuple[str, dict]]) -> None:
        super().__init__("unused", {}, PLAN)
        self.calls = calls

    def reply_for(self, body: dict) -> tuple[list[dict], str]:
        if not body.get("tools"):
            return [{"type": "text", "text": "ok"}], "end_turn"
        done = tool_results(body.get("messages", []))
        if done >= len(self.calls):
            return [{"type": "text", "text": self.final_text}], "end_turn"
        name, tool_input = self.calls[done]
        return [{"type": "tool_use", "id": f"toolu_plan_{next(self._ids)}", "name": name, "input": tool_input}], \
            "tool_use"


class ScriptedResponsesAPI(StandInResponsesAPI):
    def __init__(self, calls: list[tuple[str, dict | str]]) -> None:
        super().__init__("unused", {}, PLAN)
        self.calls = calls

    def output_items(self, body: dict) -> list[dict]:
        n = self.next_id()
        outputs = [i for i in _since_last_user(body.get("input") or []) if isinstance(i, dict)
                   and i.get("type") in ("function_call_output", "custom_tool_call_output")]
        if not body.get("tools") or len(outputs) >= len(self.calls):
            return [_message_item(f"msg_plan_{n}", self.final_text if body.get("tools") else "ok")]
        name, args = self.calls[len(outputs)]
        if isinstance(args, str):
            return [{"type": "custom_tool_call", "id": f"ctc_plan_{n}", "call_id": f"call_plan_{n}", "name": name,
                     "input": args, "status": "completed"}]
        return [{"type": "function_call", "id": f"fc_plan_{n}", "call_id": f"call_plan_{n}", "name": name,
                 "arguments": json.dumps(args), "status": "completed"}]


class ScriptedChatCompletionsAPI(StandInChatCompletionsAPI):
    def __init__(self, calls: list[tuple[str, dict]]) -> None:
        super().__init__("unused", {}, PLAN)
        self.calls = calls

    def reply_for(self, body: dict) -> tuple[str, dict | None]:
        if not body.get("tools"):
            return "Stand-in title", None
        done = sum(1 for m in _since_last_user(body.get("messages", [])) if m.get("role") == "tool")
        if done >= len(self.calls):
            return self.final_text, None
        name, args = self.calls[done]
        return "", {"id": f"call_plan_{self.next_id()}", "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)}}


def project_with_config(tmp_path: Path) -> Path:
    """A repository whose own opencode.json would allow everything (it must not count)."""
    repo = make_local_repo(tmp_path, "project")
    (repo / "opencode.json").write_text(json.dumps({
        "permission": {"*": "allow", "bash": "allow", "edit": "allow"},
        "agent": {"build": {"permission": {"bash": "allow", "edit": "allow", "*": "allow"}}}}))
    git(repo, "add", "opencode.json")
    git(repo, "commit", "-q", "-m", "project config")
    return repo


def planning_turn(runtime, repo: Path, tmp_path: Path, env: dict[str, str]):
    before = snapshot(repo)
    request = TurnRequest(prompt="# Plan task t1: Plan it\n\nWrite the plan.\n", cwd=repo, env=env,
                          scratch=tmp_path / "scratch", read_only=True)
    summary, events, code = run_turn(runtime, request, tmp_path / "logs")
    stderr = (tmp_path / "logs" / "stderr.log").read_text()[-3000:]
    assert code == 0 and summary.succeeded, stderr
    assert summary.result.text == PLAN
    assert snapshot(repo) == before
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    return events


def test_real_claude_code_plans_in_plan_mode_and_writes_nothing(tmp_path):
    claude = npm_cli("@anthropic-ai/claude-code", "2.1.329", "claude")
    repo = project_with_config(tmp_path)
    calls = [("Write", {"file_path": str(repo / "new.txt"), "content": "new\n"}),
             ("Edit", {"file_path": str(repo / "README.md"), "old_string": "# local", "new_string": "# changed"}),
             ("Bash", {"command": "echo x > f.txt", "description": "write f.txt"})]
    home = tmp_path / "home"
    home.mkdir()
    with ScriptedMessagesAPI(calls) as api:
        env = {**os.environ, "HOME": str(home), "ANTHROPIC_BASE_URL": api.url,
               "ANTHROPIC_API_KEY": "sk-ant-test-not-real", "DISABLE_AUTOUPDATER": "1",
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        env.pop("IS_SANDBOX", None)
        # The most permissive section: the planning turn must not inherit any of it.
        runtime = ClaudeCodeRuntime(ClaudeCodeConfig(command=str(claude), skip_permissions=True, timeout=180,
                                                     extra_args=["--allowedTools", "Bash", "Write", "Edit"]))
        events = planning_turn(runtime, repo, tmp_path, env)
    assert [e.session_id for e in events if e.kind.value == "session_started"]
    denied = [e.text for e in events if e.subtype == "permission_denied"]
    assert len(denied) == 1 and denied[0].startswith("Bash refused: ")
    errors = [e.text or "" for e in events if e.kind.value == "tool_result" and e.ok is False]
    assert len(errors) == 3 and "No such tool available: Write" in errors[0] and "Edit" in errors[1]
    offered = {t["name"] for r in api.requests if r["body"].get("tools") for t in r["body"]["tools"]}
    assert "Read" in offered and not offered & {"Write", "Edit", "NotebookEdit"}


def test_real_codex_plans_in_a_read_only_sandbox_and_writes_nothing(tmp_path):
    codex = npm_cli("@openai/codex", "0.169.0", "codex")
    repo = project_with_config(tmp_path)
    calls = [("exec_command", {"cmd": "echo x > f.txt"}), ("apply_patch", PATCH), ("exec_command", {"cmd": "ls"})]
    home = tmp_path / "home"
    home.mkdir()
    with ScriptedResponsesAPI(calls) as api:
        env = {k: v for k, v in os.environ.items() if k not in ("CODEX_HOME", "OPENAI_API_KEY", "OPENAI_BASE_URL")}
        env["HOME"] = str(home)
        runtime = CodexRuntime(CodexConfig(
            command=str(codex), model="gpt-5.5", isolated_home=True, timeout=180,
            sandbox="danger-full-access", approval_policy="on-request", approve=["command", "file_change"],
            config={"model_provider": "standin", "model_providers.standin.name": "standin",
                    "model_providers.standin.base_url": api.url + "/v1",
                    "model_providers.standin.wire_api": "responses",
                    "model_providers.standin.request_max_retries": 0, "model_providers.standin.stream_max_retries": 0,
                    "sandbox_mode": "danger-full-access"}))
        events = planning_turn(runtime, repo, tmp_path, env)
        outputs = [str(i.get("output")) for i in api.model_requests()[-1]["body"]["input"]
                   if isinstance(i, dict) and i.get("type") in ("function_call_output", "custom_tool_call_output")]
    assert len(outputs) == 3
    assert "Read-only file system" in outputs[0] and "read-only sandbox" in outputs[1] and "README.md" in outputs[2]
    assert not [e for e in events if e.subtype in ("approved", "declined", "approval_required")]


def test_real_opencode_plans_with_edits_and_bash_denied_and_writes_nothing(tmp_path):
    opencode = npm_cli("opencode-ai", "1.18.33", "opencode")
    repo = project_with_config(tmp_path)
    calls = [("write", {"filePath": str(repo / "new.txt"), "content": "new\n"}),
             ("edit", {"filePath": str(repo / "README.md"), "oldString": "# local", "newString": "# changed"}),
             ("bash", {"command": "echo x > f.txt", "description": "write f.txt"})]
    home = tmp_path / "home"
    home.mkdir()
    with ScriptedChatCompletionsAPI(calls) as api:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE", "XDG_"))}
        env["HOME"] = str(home)
        runtime = OpenCodeRuntime(OpenCodeConfig(
            command=str(opencode), model="standin/gpt-5.5", isolated_state=True, timeout=180,
            config={"provider": {"standin": {"npm": "@ai-sdk/openai-compatible", "name": "standin",
                                             "options": {"baseURL": api.url + "/v1", "apiKey": "not-real"},
                                             "models": {"gpt-5.5": {"tool_call": True,
                                                                    "limit": {"context": 200000, "output": 8192}}}}},
                    "small_model": "standin/gpt-5.5",
                    "permission": {"bash": {"*": "allow"}, "*": "allow", "edit": "allow"}}))
        events = planning_turn(runtime, repo, tmp_path, env)
        offered = {t["function"]["name"] for r in api.model_requests() if r["body"].get("tools")
                   for t in r["body"]["tools"]}
    assert "read" in offered and not offered & {"write", "edit", "bash", "apply_patch"}
    refused = [e.text or "" for e in events if e.kind.value == "tool_result"]
    assert len(refused) == 3 and all("Model tried to call unavailable tool" in t for t in refused)
