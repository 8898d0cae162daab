"""Every runtime gives its CLI the turn's MCP servers (TurnRequest.mcp_servers) in that CLI's own
way (Claude Code --mcp-config, Codex -c mcp_servers.*, OpenCode's config `mcp`), and the fake
CLIs, reading them exactly as the real ones do, start Baton's tracker-tools server with the MCP
client SDK and call it against a stand-in of the dashboard's gateway. The capability token is
only ever in its 0600 file: not in the CLI's arguments, its environment, the files the runtime
generates, nor the agent's own commands. A read-only (planning) turn gets no server at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backend.dispatcher.trackertools import tracker_server, write_token
from backend.models import ToolGrant
from backend.runtimes import build_configured
from backend.runtimes.base import EventKind, TurnRequest
from fakes.tools_gateway_standin import PATH, ToolsGateway
from runtimes.runtime_fakes import FAKES, make_fake
from runtimes.turns import run_turn
from support import make_local_repo, serve

TOKEN = "v1.runtime-contract-capability-token"
# How each CLI names the tracker's tool in the transcript.
TOOL_NAMES = {"claude_code": "mcp__baton_tracker__tracker_get_issue",
              "codex": "baton_tracker.tracker_get_issue",
              "opencode": "baton_tracker_tracker_get_issue"}


def env_probe(token_file: Path) -> dict:
    """A step counting the token (read from its file, so the scenario never holds it) in the
    environment of the CLI (the command's $PPID) and of the command the agent runs: 0, none."""
    return {"run": ["sh", "-c", f"cat /proc/$PPID/environ /proc/$$/environ | grep -cFf {token_file} || true"]}


@pytest.fixture
def gateway():
    gw = ToolsGateway(token=TOKEN)
    with serve(gw.app()) as base:
        gw.url = base + PATH
        yield gw


@pytest.fixture
def project(tmp_path) -> Path:
    return make_local_repo(tmp_path, "project")


def request_with_tools(project: Path, tmp_path: Path, gateway, scenario: dict, read_only: bool = False):
    scratch = tmp_path / "scratch"
    token_file = write_token(scratch, TOKEN)  # as the dispatcher does before the turn
    server = tracker_server(ToolGrant(url=gateway.url, token=TOKEN), token_file, {})
    prompt = f"# Task t1: Use the tracker\n\nFAKE: {json.dumps(scenario)}\n"
    return TurnRequest(prompt=prompt, cwd=project, env=dict(os.environ), scratch=scratch, read_only=read_only,
                       mcp_servers=[server])


def no_token_outside_its_file(scratch: Path) -> None:
    for path in scratch.rglob("*"):
        if path.is_file() and path.name != "tracker-token":
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("name", sorted(FAKES))
def test_a_turn_calls_the_tracker_tools_through_its_cli_with_the_token_only_in_its_file(
        name, project, tmp_path, monkeypatch, gateway):
    fake = make_fake(name, tmp_path, monkeypatch)
    runtime = build_configured(fake.config())[name]
    request = request_with_tools(project, tmp_path, gateway, {"steps": [
        {"mcp": "tracker_get_issue"}, {"mcp": "tracker_add_comment", "arguments": {"body": "On it."}},
        {"mcp": "tracker_update_state", "arguments": {"state": "Closed"}},
        env_probe(tmp_path / "scratch" / "tracker-token")]})
    inv = runtime.turn(request).invocation
    assert TOKEN not in " ".join(inv.argv) and TOKEN not in json.dumps(inv.env)
    summary, events, code = run_turn(runtime, request, tmp_path / "logs")
    assert code == 0 and summary.succeeded, [e.text for e in events]

    # The calls reached the gateway with the task's token, and their answers came back to the agent.
    assert [c["body"] for c in gateway.calls] == [
        {"tool": "tracker_get_issue", "arguments": {}},
        {"tool": "tracker_add_comment", "arguments": {"body": "On it."}},
        {"tool": "tracker_update_state", "arguments": {"state": "Closed"}}]
    assert {c["authorization"] for c in gateway.calls} == {f"Bearer {TOKEN}"}
    uses = [e for e in events if e.kind is EventKind.tool_use]
    results = {e.tool_use_id: e for e in events if e.kind is EventKind.tool_result}
    assert uses[0].tool_name == TOOL_NAMES[name]
    first, comment, refused, probe = (results[u.tool_use_id] for u in uses)
    assert first.ok and "ENG-7" in first.text
    assert comment.ok and "On it." in comment.text
    assert refused.ok is False and "not allowed for this project" in refused.text  # a gateway error: a tool error
    assert probe.ok and probe.text.strip() == "0"  # neither the CLI nor the agent's commands hold the token

    (call,) = fake.calls()
    assert set(call["mcp_servers"]) == {"baton_tracker"} and TOKEN not in json.dumps(call)
    no_token_outside_its_file(request.scratch)


@pytest.mark.parametrize("name", sorted(FAKES))
def test_a_read_only_turn_gets_no_mcp_server(name, project, tmp_path, monkeypatch, gateway):
    fake = make_fake(name, tmp_path, monkeypatch)
    runtime = build_configured(fake.config())[name]
    request = request_with_tools(project, tmp_path, gateway, {"steps": [{"mcp": "tracker_add_comment", "arguments": {
        "body": "from a plan"}}], "model_text": "PLAN: nothing"}, read_only=True)
    inv = runtime.turn(request).invocation
    assert "mcp" not in " ".join(inv.argv).replace("--disallowedTools", "")
    summary, _, _ = run_turn(runtime, request, tmp_path / "logs")
    assert summary.succeeded and summary.result.text == "PLAN: nothing"
    (call,) = fake.calls()
    assert call["mcp_servers"] == {}
    assert gateway.calls == []  # the tool was not there to call


def test_claude_code_allows_the_tracker_tools_when_it_runs_with_its_permission_prompts(
        project, tmp_path, monkeypatch, gateway):
    """Without skip_permissions, -p has nobody to approve a tool: the server is allowed whole."""
    fake = make_fake("claude_code", tmp_path, monkeypatch)
    runtime = build_configured(fake.config(section={"skip_permissions": False, "permission_mode": "acceptEdits",
                                                    "allowed_tools": ["Bash(git *)"]}))["claude_code"]
    request = request_with_tools(project, tmp_path, gateway, {"steps": [{"mcp": "tracker_get_issue"}]})
    argv = runtime.turn(request).invocation.argv
    assert argv[argv.index("--allowedTools") + 1].split() == ["Bash(git", "*)", "mcp__baton_tracker"]
    # The list flags take every word up to the next flag: each is followed by one.
    assert argv[argv.index("--mcp-config") + 2].startswith("-")
    config = Path(argv[argv.index("--mcp-config") + 1])
    assert config.parent == request.scratch and config.stat().st_mode & 0o777 == 0o600
    summary, events, _ = run_turn(runtime, request, tmp_path / "logs")
    assert summary.succeeded and len(gateway.calls) == 1
    assert [e for e in events if e.kind is EventKind.tool_result][0].ok


def test_claude_code_refuses_an_mcp_tool_nobody_allowed(project, tmp_path, monkeypatch, gateway):
    """The fake's side of the test above: a server given without its allow-list entry (here
    through extra_args, which the runtime does not touch) is refused, as -p refuses it."""
    server = request_with_tools(project, tmp_path, gateway, {}).mcp_servers[0]
    config = tmp_path / "user-mcp.json"
    config.write_text(json.dumps({"mcpServers": {"baton_tracker": {
        "type": "stdio", "command": server.command, "args": server.args, "env": server.env}}}))
    fake = make_fake("claude_code", tmp_path, monkeypatch)
    runtime = build_configured(fake.config(section={"skip_permissions": False,
                                                    "extra_args": ["--mcp-config", str(config)]}))["claude_code"]
    request = TurnRequest(prompt=f"FAKE: {json.dumps({'steps': [{'mcp': 'tracker_get_issue'}]})}\n", cwd=project,
                          env=dict(os.environ), scratch=tmp_path / "scratch")
    summary, events, _ = run_turn(runtime, request, tmp_path / "logs")
    (denied,) = [e for e in events if e.subtype == "permission_denied"]
    assert denied.tool_name == "mcp__baton_tracker__tracker_get_issue" and "haven't granted it" in denied.text
    assert gateway.calls == []
