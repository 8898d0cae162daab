"""A `degraded` agent (it answers, but something keeps it from working) stays available on the
board, with its tasks, and the board carries its problems."""

from __future__ import annotations

from backend.config import AgentConfig, ClaudeCodeConfig
from backend.models import NewTask


def test_a_degraded_agent_stays_available_and_says_why(agent_factory, dashboard_factory, tmp_path):
    missing = str(tmp_path / "no-such-claude")
    agent = agent_factory(config=AgentConfig(project_id="deg", claude_code=ClaudeCodeConfig(command=missing)))
    agent.store.create(NewTask(title="waits for the CLI"))
    assert agent.client.get("/agent/health").json()["status"] == "degraded"
    client = dashboard_factory([{"id": "deg", "agent_url": agent.url}])
    entry = client.get("/api/board").json()["projects"][0]
    assert entry["healthy"] and entry["reason"] is None
    assert [t["title"] for t in entry["tasks"]["pending"]] == ["waits for the CLI"]
    [problem] = entry["problems"]
    assert problem["code"] == "runtime_unavailable" and missing in problem["message"]
    listed = client.get("/api/projects").json()["projects"][0]
    assert listed["healthy"] and listed["problems"] == entry["problems"]
