"""baton-agent's own tracker tools gateway (backend/agent/routes/trackertools.py over
backend/sources/gateway.py), for the tracker its WORKFLOW.md names: a real agent with a token of
its own, the stand-in Linear, and the fake Claude CLI whose task holds its run until the test
releases it. The coding agent's MCP server reaches the agent's gateway with the task's grant;
the gateway needs no agent token, and checks the capability token, the issue, that its task is
running and the state asked for."""

from __future__ import annotations

import json

import httpx

from backend.models import TaskStatus
from backend.sources.tools import CALL_PATH, ToolGate
from support import wait_for
from workflow.test_runner import front_matter, lin, stack, start_workflow_agent, workflow_text  # noqa: F401

AGENT_TOKEN = "agent-token-0123456789abcdef"
AGENT_SAYS = "Hello from the coding agent"


def scenario(release, *first: dict) -> str:
    return "FAKE: " + json.dumps({"steps": [*first, {"wait_for": str(release), "seconds": 300}]})


def call(url: str, token: str | None, tool: str, arguments: dict | None = None, **body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(f"{url}{CALL_PATH}", json={"tool": tool, "arguments": arguments or {}, **body},
                      headers=headers, timeout=30)


def test_the_agents_gateway_serves_a_running_tasks_own_issue_only(tmp_path, lin, stack, fake_cli):
    release = tmp_path / "release"
    mine, other = lin.admin.seed([
        {"title": "Mine", "state": "Todo",
         "description": scenario(release, {"mcp": "tracker_add_comment", "arguments": {"body": AGENT_SAYS}})},
        {"title": "Other", "state": "Backlog"}])
    front = front_matter(lin, tmp_path / "ws", agent_runtime={"kind": "claudecode", "command": fake_cli.command})
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front, "{{ issue.description }}"),
                                 config=fake_cli.config(), dispatch=True, token=AGENT_TOKEN)
    task = wait_for(lambda: (t := agent.task_of("ENG-1")) is not None and t.status is TaskStatus.in_progress and t,
                    timeout=60, what="ENG-1's task to run")
    # The coding agent's own tool call went MCP server -> this agent's gateway -> the tracker.
    wait_for(lambda: any(c["body"] == AGENT_SAYS for c in lin.admin.issue("ENG-1")["comments"]), timeout=60,
             what="the agent's comment on ENG-1")

    grant = agent.store.grants.get(task.id)
    assert grant.url == f"{agent.url}{CALL_PATH}"
    answer = call(agent.url, grant.token, "tracker_get_issue")  # no agent token: the capability is enough
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["identifier"] == "ENG-1"
    assert httpx.get(f"{agent.url}/agent/tasks", timeout=30).status_code == 401  # the rest still needs the token

    for token in (None, "not-a-token", grant.token[:-2] + ("AA" if not grant.token.endswith("AA") else "BB")):
        refused = call(agent.url, token, "tracker_get_issue")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token", refused.text
    another = call(agent.url, grant.token, "tracker_get_issue", issue=other["id"])
    assert another.status_code == 403 and another.json()["error"]["code"] == "out_of_scope"
    # A genuine token (this agent's key) for an issue whose task is not running.
    gate = ToolGate(agent.settings.data_dir / "tool-key", "http://127.0.0.1:1")
    not_running = call(agent.url, gate.grant(agent.settings.project_id, "linear", other["id"]).token,
                       "tracker_get_issue")
    assert not_running.status_code == 403 and "not running" in not_running.json()["error"]["message"]
    backlog = call(agent.url, grant.token, "tracker_update_state", {"state": "Backlog"})
    assert backlog.status_code == 403 and backlog.json()["error"]["code"] == "out_of_scope"
    assert lin.admin.issue("ENG-1")["state"] == "Todo"
    moved = call(agent.url, grant.token, "tracker_update_state", {"state": "In Progress"})
    assert moved.status_code == 200 and moved.json()["result"]["state"] == "In Progress"

    # The token dies with its task's run.
    agent.client.post(f"/agent/tasks/{task.id}/cancel", json={"reason": "the test is done"})
    wait_for(lambda: agent.store.get(task.id).status is TaskStatus.cancelled, timeout=30, what="the cancel")
    after = call(agent.url, grant.token, "tracker_get_issue")
    assert after.status_code == 403 and after.json()["error"]["code"] == "out_of_scope"
    release.touch()


def test_an_agent_without_a_workflow_has_no_gateway(agent):
    assert call(agent.url, "bt1.x.y", "tracker_get_issue").status_code == 404
