"""A planning turn (`TurnRequest.read_only`) is read-only because each CLI's own permission
system refuses writes, not because the prompt asks: the fake CLIs refuse them exactly as the
real ones do (Claude Code's plan mode, Codex's read-only sandbox, OpenCode's deny rules), so a
scenario that writes a file, edits one and runs a shell command that writes leaves the worktree
byte for byte as it was, and the agent's final answer comes back as the turn's result."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backend.runtimes import RUNTIMES, build_configured
from backend.runtimes.base import TurnRequest
from backend.runtimes.demo import DemoConfig, DemoRuntime
from runtimes.runtime_fakes import FAKES, make_fake
from runtimes.turns import run_turn, snapshot
from support import git, make_local_repo

PLAN = "PLAN: 1. add new.txt 2. reword the README 3. test it"
# Rules in the repository itself that would re-allow everything for OpenCode's default agent.
PROJECT_OPENCODE = {"permission": {"*": "allow", "bash": "allow", "edit": "allow"},
                    "agent": {"build": {"permission": {"bash": "allow", "edit": "allow", "*": "allow"}}}}
WRITES = [{"write": "new.txt", "text": "new\n"},
          {"edit": "README.md", "old": "# local", "new": "# changed"},
          {"run": ["sh", "-c", "echo x > shell.txt"]},
          {"run": ["ls"]}]
# Each runtime's most permissive settings: a planning turn must not inherit them.
LOOSE = {
    "claude_code": {"skip_permissions": True,
                    "extra_args": ["--dangerously-skip-permissions", "--allowedTools", "Write", "Bash", "Edit"]},
    "codex": {"sandbox": "danger-full-access", "approval_policy": "on-request", "approve": ["command", "file_change"]},
    "opencode": {"config": {"permission": {"bash": {"*": "allow"}, "*": "allow", "edit": "allow"}}},
}


@pytest.fixture
def project(tmp_path) -> Path:
    repo = make_local_repo(tmp_path, "project")
    (repo / "opencode.json").write_text(json.dumps(PROJECT_OPENCODE))
    git(repo, "add", "opencode.json")
    git(repo, "commit", "-q", "-m", "project config")
    return repo


def fake_runtime(name: str, tmp_path: Path, monkeypatch, section: dict | None = None):
    fake = make_fake(name, tmp_path, monkeypatch)
    return build_configured(fake.config(section=section))[name], fake


def plan_request(project: Path, tmp_path: Path, scenario: dict, resume: str | None = None) -> TurnRequest:
    prompt = f"# Plan task t1: Plan it\n\nFAKE: {json.dumps(scenario)}\nDEMO: {json.dumps(scenario)}\n"
    return TurnRequest(prompt=prompt, cwd=project, env=dict(os.environ), resume=resume, scratch=tmp_path / "scratch",
                       read_only=True)


@pytest.mark.parametrize("name", sorted(FAKES))
def test_a_read_only_turn_that_tries_to_write_changes_nothing_and_answers(name, project, tmp_path, monkeypatch):
    runtime, _ = fake_runtime(name, tmp_path, monkeypatch, LOOSE[name])
    before = snapshot(project)
    summary, events, code = run_turn(runtime, plan_request(project, tmp_path, {"steps": WRITES, "model_text": PLAN}),
                                     tmp_path / "logs")
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    assert snapshot(project) == before
    assert code == 0 and summary.failure is None
    assert summary.succeeded and summary.result.text == PLAN
    # The refusals came from the CLI (its own shapes), and reading still worked.
    texts = " ".join(e.text or "" for e in events)
    if name == "claude_code":
        assert [e.subtype for e in events if e.subtype == "permission_denied"] == ["permission_denied"]  # Bash
        assert "No such tool available: Write" in texts and "No such tool available: Edit" in texts
    elif name == "opencode":
        assert "Model tried to call unavailable tool 'write'" in texts
        assert "Model tried to call unavailable tool 'bash'" in texts
    else:  # codex: refused inside the sandbox, no item at all; `ls` ran
        (ran,) = [e.tool_input for e in events if e.kind.value == "tool_use"]
        assert ran.endswith('"ls"')


@pytest.mark.parametrize("name", sorted(FAKES))
def test_the_same_scenario_writes_when_the_turn_is_not_read_only(name, project, tmp_path, monkeypatch):
    """The other side of the test above: the fakes do write, so its clean worktree means something."""
    runtime, _ = fake_runtime(name, tmp_path, monkeypatch, LOOSE[name] if name != "codex" else {})
    request = plan_request(project, tmp_path, {"steps": WRITES, "model_text": PLAN})
    request.read_only = False
    summary, _, _ = run_turn(runtime, request, tmp_path / "logs")
    assert summary.succeeded
    assert (project / "new.txt").read_text() == "new\n" and (project / "shell.txt").read_text() == "x\n"
    assert (project / "README.md").read_text() == "# changed\n"


def test_the_demo_runtime_plans_without_writing(project, tmp_path):
    runtime = DemoRuntime(DemoConfig(pace=0))
    before = snapshot(project)
    scenario = {"steps": [{"write": "new.txt", "text": "new\n"}, {"append": "README.md", "text": "more\n"},
                          {"commit": "demo change"}]}
    summary, _, code = run_turn(runtime, plan_request(project, tmp_path, scenario), tmp_path / "logs")
    assert code == 0 and summary.succeeded
    assert snapshot(project) == before and git(project, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(project, "log", "--format=%s", "-1").strip() == "project config"
    assert summary.result.text.startswith("Plan") and "write new.txt" in summary.result.text
    assert "append to README.md" in summary.result.text and "commit the work" in summary.result.text
    # A revision (resumed, read-only) plans the session's script again, still writing nothing.
    again, _, _ = run_turn(runtime, TurnRequest(prompt="Make it shorter.", cwd=project, env=dict(os.environ),
                                                resume=summary.session_id, scratch=tmp_path / "scratch",
                                                read_only=True), tmp_path / "logs")
    assert again.succeeded and "write new.txt" in again.result.text and snapshot(project) == before


def test_every_runtime_honours_read_only():
    """A runtime added later must be covered here too (by a fake above or a test of its own)."""
    assert set(RUNTIMES) == {*FAKES, "demo"}


# ----- what each runtime asks its CLI for --------------------------------------------------


def test_claude_code_plans_in_plan_mode_without_any_loosening_flag(project, tmp_path, monkeypatch):
    monkeypatch.setenv("IS_SANDBOX", "1")
    runtime, fake = fake_runtime("claude_code", tmp_path, monkeypatch, {
        **LOOSE["claude_code"], "extra_args": [
            "--permission-mode=bypassPermissions", "--allowedTools", "Bash(*)", "Write", "--max-turns", "7",
            "--allow-dangerously-skip-permissions", "--dangerously-skip-permissions"]})
    argv = runtime.turn(plan_request(project, tmp_path, {"steps": []})).invocation.argv
    env = runtime.turn(plan_request(project, tmp_path, {"steps": []})).invocation.env
    assert argv[argv.index("--permission-mode") + 1] == "plan" and argv.count("--permission-mode") == 1
    assert argv[argv.index("--disallowedTools") + 1].split() == ["Write", "Edit", "MultiEdit", "NotebookEdit"]
    assert not [a for a in argv if "skip-permissions" in a or "allowedTools" in a.replace("disallowedTools", "")
                or "bypass" in a or a in ("Bash(*)", "Write")]
    assert argv[-2:] == ["--max-turns", "7"]  # other extra_args stay
    assert "IS_SANDBOX" not in env
    work = runtime.turn(TurnRequest(prompt="x", cwd=project, env=dict(os.environ))).invocation.argv
    assert "--dangerously-skip-permissions" in work and "plan" not in work  # a work turn is as configured
    # A resumed planning session (a revised plan) stays in plan mode.
    summary, _, _ = run_turn(runtime, plan_request(project, tmp_path, {"steps": [], "model_text": PLAN}),
                             tmp_path / "logs")
    resumed = runtime.turn(plan_request(project, tmp_path, {"steps": []}, resume=summary.session_id)).invocation.argv
    assert "--resume" in resumed and resumed[resumed.index("--permission-mode") + 1] == "plan"
    assert fake.calls()[-1]["argv"].count("plan") == 1


def test_codex_plans_in_a_read_only_sandbox_and_declines_every_approval(project, tmp_path, monkeypatch):
    runtime, fake = fake_runtime("codex", tmp_path, monkeypatch, LOOSE["codex"])
    before = snapshot(project)
    summary, events, _ = run_turn(runtime, plan_request(project, tmp_path, {
        "approval": "command", "steps": [], "model_text": PLAN}), tmp_path / "logs")
    # An approval request in a planning turn is declined, the turn goes on and answers.
    assert summary.failure is None and summary.succeeded and summary.result.text == PLAN
    assert [e.subtype for e in events if e.subtype in ("declined", "approved", "approval_required")] == ["declined"]
    assert snapshot(project) == before
    received = [e["received"] for e in fake.entries() if "received" in e]
    (start,) = [m["params"] for m in received if m.get("method") == "thread/start"]
    assert start["sandbox"] == "read-only" and start["approvalPolicy"] == "never"
    (answer,) = [m for m in received if "result" in m and "decision" in (m["result"] or {})]
    assert answer["result"]["decision"] == "decline"
    # A revision resumes the thread, read-only again.
    run_turn(runtime, plan_request(project, tmp_path, {"steps": WRITES}, resume=summary.session_id), tmp_path / "l2")
    resumes = [m["params"] for e in fake.entries() if "received" in e
               for m in [e["received"]] if m.get("method") == "thread/resume"]
    assert resumes and resumes[-1]["sandbox"] == "read-only" and resumes[-1]["approvalPolicy"] == "never"
    assert snapshot(project) == before


def test_codex_declines_a_permissions_request_in_a_planning_turn(tmp_path):
    from backend.runtimes.codex import CodexConfig, CodexRuntime

    turn = CodexRuntime(CodexConfig()).turn(TurnRequest(prompt="p", cwd=tmp_path, env={}, read_only=True))
    reply = turn.on_line(json.dumps({"id": 7, "method": "item/permissions/requestApproval", "params": {}}))
    assert reply.fail is None and json.loads(reply.send[0]) == {"id": 7, "result": {"permissions": {}}}


def test_opencode_plans_with_edit_and_bash_denied_last_and_no_project_config(project, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCODE_CONFIG_CONTENT", json.dumps({"permission": "allow"}))
    section = {"config": {"permission": {"bash": {"git *": "allow"}, "*": "allow"},
                          "agent": {"build": {"permission": {"edit": "allow", "*": "allow"}}}},
               "env": {"OPENCODE_CONFIG_CONTENT": "$OPENCODE_CONFIG_CONTENT",
                       "OPENCODE_PERMISSION": '{"bash": "allow"}'}}
    runtime, fake = fake_runtime("opencode", tmp_path, monkeypatch, section)
    inv = runtime.turn(plan_request(project, tmp_path, {"steps": []})).invocation
    config = json.loads(Path(inv.env["OPENCODE_CONFIG"]).read_text())
    # Last match wins: the denials come after every rule of the user's, globally and for the agent.
    assert list(config["permission"].items()) == [("*", "allow"), ("edit", "deny"), ("bash", "deny")]
    assert list(config["agent"]["build"]["permission"].items()) == [("*", "allow"), ("edit", "deny"), ("bash", "deny")]
    assert inv.env["OPENCODE_DISABLE_PROJECT_CONFIG"] == "1" and "OPENCODE_CONFIG_CONTENT" not in inv.env
    assert json.loads(inv.env["OPENCODE_PERMISSION"]) == {"edit": "deny", "bash": "deny"}
    work = runtime.turn(TurnRequest(prompt="x", cwd=project, env=dict(os.environ), scratch=tmp_path / "w"))
    assert json.loads(Path(work.invocation.env["OPENCODE_CONFIG"]).read_text())["permission"] == \
        section["config"]["permission"]  # a work turn is as configured
