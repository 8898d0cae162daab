"""The tracker tools' MCP server (backend/sources/mcp_server.py), run as the CLIs run it: a real
subprocess started by the official MCP client SDK with only the environment a CLI gives it, talking
to a real HTTP stand-in of the dashboard's gateway (tests/fakes/tools_gateway_standin.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from backend.dispatcher.trackertools import BATON_ROOT, tracker_server, write_token
from backend.models import TaskStatus, ToolGrant
from conftest import fake_task
from fakes.tools_gateway_standin import PATH, ToolsGateway
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from support import free_port, serve, submit_task, task_events, wait_task_done

TOKEN = "v1.tok3n-for-the-mcp-server-test"
TOOLS = {"tracker_get_issue": set(), "tracker_list_comments": set(), "tracker_add_comment": {"body"},
         "tracker_update_state": {"state"}}


@pytest.fixture
def gateway():
    gw = ToolsGateway(token=TOKEN)
    with serve(gw.app()) as base:
        gw.url = base + PATH
        yield gw


def session_with(env: dict[str, str], steps, stderr: Path):
    """Start the server exactly as the dispatcher describes it to a CLI, run `steps(session)`."""
    server = tracker_server(ToolGrant(url="http://127.0.0.1:1/x", token=TOKEN), Path("unused"), {})
    params = StdioServerParameters(command=server.command, args=server.args, env=env)

    async def main():
        with open(stderr, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await steps(session)

    return anyio.run(main)


def server_env(gateway_url: str, token_file: Path) -> dict[str, str]:
    return {"BATON_TOOLS_URL": gateway_url, "BATON_TOOLS_TOKEN_FILE": str(token_file), "PYTHONPATH": BATON_ROOT}


def text_of(result) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def test_the_four_tools_are_listed_with_descriptions_naming_the_tasks_own_issue(gateway, tmp_path):
    token_file = write_token(tmp_path / "scratch", TOKEN)

    async def steps(session):
        return (await session.list_tools()).tools

    tools = session_with(server_env(gateway.url, token_file), steps, tmp_path / "stderr.log")
    assert {t.name for t in tools} == set(TOOLS)
    for tool in tools:
        assert "this task's own tracker issue" in " ".join(tool.description.split()), tool.name
        assert set(tool.input_schema.get("properties", {})) == TOOLS[tool.name]  # no issue argument anywhere
    assert gateway.calls == []  # listing calls nobody


def test_each_tool_posts_its_call_with_the_bearer_token_and_returns_the_result(gateway, tmp_path):
    token_file = write_token(tmp_path / "scratch", TOKEN)

    async def steps(session):
        return [await session.call_tool("tracker_get_issue", {}),
                await session.call_tool("tracker_add_comment", {"body": "Working on it: \"quotes\" ünïcode"}),
                await session.call_tool("tracker_list_comments", {}),
                await session.call_tool("tracker_update_state", {"state": "In Review"})]

    issue, added, listed, moved = session_with(server_env(gateway.url, token_file), steps, tmp_path / "stderr.log")
    assert not any(r.is_error for r in (issue, added, listed, moved))
    assert json.loads(text_of(issue))["identifier"] == "ENG-7"
    assert json.loads(text_of(added)) == {"id": "c1", "body": "Working on it: \"quotes\" ünïcode"}
    assert json.loads(text_of(listed)) == [{"id": "c1", "body": "Working on it: \"quotes\" ünïcode"}]
    assert json.loads(text_of(moved))["state"] == "In Review"
    assert [c["body"] for c in gateway.calls] == [
        {"tool": "tracker_get_issue", "arguments": {}},
        {"tool": "tracker_add_comment", "arguments": {"body": "Working on it: \"quotes\" ünïcode"}},
        {"tool": "tracker_list_comments", "arguments": {}},
        {"tool": "tracker_update_state", "arguments": {"state": "In Review"}}]
    assert {c["authorization"] for c in gateway.calls} == {f"Bearer {TOKEN}"}


def test_a_gateway_error_is_a_tool_error_with_the_gateways_message(gateway, tmp_path):
    token_file = write_token(tmp_path / "scratch", TOKEN)
    gateway.fail["tracker_add_comment"] = (503, "tracker_unavailable", "Linear answered 503: try again later")

    async def steps(session):
        return [await session.call_tool("tracker_update_state", {"state": "Done"}),
                await session.call_tool("tracker_add_comment", {"body": "hi"})]

    refused, down = session_with(server_env(gateway.url, token_file), steps, tmp_path / "stderr.log")
    assert refused.is_error and "state 'Done' is not allowed for this project" in text_of(refused)
    assert "out_of_scope" in text_of(refused)
    assert down.is_error and "Linear answered 503: try again later" in text_of(down)


def test_a_wrong_token_is_refused_by_the_gateway_and_reported(gateway, tmp_path):
    token_file = write_token(tmp_path / "scratch", "v1.some-other-token-entirely")

    async def steps(session):
        return await session.call_tool("tracker_get_issue", {})

    result = session_with(server_env(gateway.url, token_file), steps, tmp_path / "stderr.log")
    assert result.is_error and "missing or invalid tool token" in text_of(result)


def test_the_token_is_read_at_each_call_and_a_missing_file_is_a_clear_error(gateway, tmp_path):
    token_file = write_token(tmp_path / "scratch", TOKEN)

    async def steps(session):
        first = await session.call_tool("tracker_get_issue", {})
        token_file.unlink()  # the run ended: the dispatcher removed the token
        return first, await session.call_tool("tracker_get_issue", {})

    stderr = tmp_path / "stderr.log"
    first, after = session_with(server_env(gateway.url, token_file), steps, stderr)
    assert not first.is_error
    assert after.is_error and "token file" in text_of(after) and "is gone" in text_of(after)
    assert len(gateway.calls) == 1  # nothing was sent without a token
    assert TOKEN not in stderr.read_text()  # the server's log never holds the token


def test_an_unreachable_gateway_is_a_tool_error(tmp_path):
    token_file = write_token(tmp_path / "scratch", TOKEN)
    url = f"http://127.0.0.1:{free_port()}{PATH}"

    async def steps(session):
        return await session.call_tool("tracker_list_comments", {})

    result = session_with(server_env(url, token_file), steps, tmp_path / "stderr.log")
    assert result.is_error and "cannot be reached" in text_of(result)


def test_without_its_variables_the_server_says_what_is_missing_on_stderr_only():
    proc = subprocess.run([sys.executable, "-m", "backend.sources.mcp_server"], capture_output=True, text=True,
                          env={"PYTHONPATH": BATON_ROOT}, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "BATON_TOOLS_URL and BATON_TOOLS_TOKEN_FILE must be set" in proc.stderr


def test_the_token_file_is_private_and_never_follows_a_planted_link(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = tmp_path / "elsewhere"
    (scratch / "tracker-token").symlink_to(target)
    path = write_token(scratch, TOKEN)
    assert not path.is_symlink() and path.read_text() == TOKEN and not target.exists()
    assert path.stat().st_mode & 0o777 == 0o600


# ----- through the dispatcher: a task with a tool grant -----------------------------------------

ISSUE = {"kind": "linear", "id": "9f1c2a7e-0b1d-4c55-8d2e-3a1b2c3d4e5f", "identifier": "ENG-7",
         "url": "https://linear.app/acme/issue/ENG-7/fix-the-login"}


def test_a_granted_task_calls_its_tracker_tools_with_its_token_and_the_token_goes_with_the_turn(
        agent_factory, fake_cli, gateway):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    grant = {"url": gateway.url, "token": TOKEN}
    landed = submit_task(agent, fake_task("Fix the login", {"steps": [
        {"mcp": "tracker_get_issue"}, {"mcp": "tracker_add_comment", "arguments": {"body": "Fixing it."}},
        {"write": "login.txt", "text": "fixed\n"}]}, source=ISSUE, tool_grant=grant))
    failed = submit_task(agent, fake_task("Breaks", {"steps": [{"mcp": "tracker_list_comments"}],
                                                     "result": "error_during_execution"},
                                          source={**ISSUE, "id": "other-issue", "identifier": "ENG-8"},
                                          tool_grant=grant))
    plain = submit_task(agent, fake_task("No tracker", {"steps": [{"write": "plain.txt", "text": "p\n"}]}))
    for task_id in (landed, failed, plain):
        wait_task_done(agent, task_id)
    assert agent.store.get(landed).status is TaskStatus.completed, agent.store.get(landed).error_message
    assert agent.store.get(failed).status is TaskStatus.failed

    assert [(c["tool"], c["arguments"]) for c in gateway.calls if c["tool"] != "tracker_list_comments"] == [
        ("tracker_get_issue", {}), ("tracker_add_comment", {"body": "Fixing it."})]
    assert len(gateway.calls_of("tracker_list_comments")) == 1
    assert {c["authorization"] for c in gateway.calls} == {f"Bearer {TOKEN}"}
    events = task_events(agent, landed)
    (result,) = [e for e in events if e["kind"] == "tool_result" and "ENG-7" in (e.get("text") or "")]
    assert result["ok"] is True

    calls = {c["prompt"].split("\n", 1)[0]: c for c in fake_cli.calls()}
    by_title = {title: next(c for p, c in calls.items() if title in p) for title in ("Fix the login", "No tracker")}
    assert set(by_title["Fix the login"]["mcp_servers"]) == {"baton_tracker"}
    assert by_title["No tracker"]["mcp_servers"] == {}
    # The failed task keeps its runtime folder (for a rerun), but not the token: it went with the turn.
    runtime_dir = agent.settings.project_dir / "logs" / f"{failed}.runtime"
    assert (runtime_dir / "mcp.json").exists() and not (runtime_dir / "tracker-token").exists()
    # The server carries the task's marker: a CLI may start it in a session of its own with only the
    # environment it names, and the task's end must still find and stop it.
    server_env = json.loads((runtime_dir / "mcp.json").read_text())["mcpServers"]["baton_tracker"]["env"]
    assert server_env["TASK_ID"] == failed and server_env["BATON_PROJECT"]
    # Never in argv, the task record, the transcripts or the logs.
    assert all(TOKEN not in " ".join(c["argv"]) for c in fake_cli.calls())
    project = agent.settings.project_dir
    for path in [*(project / "logs").rglob("*"), project / "data" / "dev-tasks.json"]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
