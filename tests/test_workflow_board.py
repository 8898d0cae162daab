"""The board shows a project whose baton-agent runs a WORKFLOW.md like a project with a `source:`
(issue 14: "its board shows it like any other project"). Real processes: the stand-in Linear, a
baton-agent started with the project's WORKFLOW.md (the fake Claude CLI as its runtime's command,
the guardrails flag on its command line) and the dashboard under uvicorn. The workflow polls once
an hour, so any newer poll of the stand-in can only come from "Sync now"."""

from __future__ import annotations

import json
import sys
import time

import httpx
import pytest

from conftest import FAKE_CLAUDE
from support import AgentProcess, free_port, make_repo, serve, wait_for, wait_for_http
from trackers_support import start_standin

from backend.dashboard.app import create_app
from backend.dashboard.config import DashboardConfig
from backend.dashboard.settings import DashboardSettings
from backend.guardrails import FLAG as GUARDRAILS_FLAG

WORKFLOW = """---
tracker:
  kind: linear
  endpoint: @URL@
  api_key: $LINEAR_API_KEY
  team: @TEAM@
  active_states: [Todo, In Progress]
  terminal_states: [Done, Canceled]
polling:
  interval_ms: 3600000
agent_runtime:
  kind: claudecode
  command: @COMMAND@
---
Work on {{ issue.identifier }}: {{ issue.title }}

{{ issue.description }}
"""

# An edit the agent must refuse: a key its `agent:` section does not have (named in the error).
INVALID = WORKFLOW.replace("polling:", "agent:\n  max_turnz: 3\npolling:")


def workflow_text(linear, template: str = WORKFLOW) -> str:
    return (template.replace("@URL@", linear.url).replace("@TEAM@", linear.team)
            .replace("@COMMAND@", f"{sys.executable} {FAKE_CLAUDE}"))


class World:
    def __init__(self, root) -> None:
        self.root = root
        self.linear = start_standin("linear", root / "linear")
        # An issue nobody works on: the sync reads it, no task is made (the agent stays idle).
        self.linear.admin.seed([{"title": "Someday", "state": "Backlog"}])
        self.repo = make_repo(root, "w")
        (self.repo / "agent.yaml").write_text("poll_interval_seconds: 0.5\ntest_command: ''\n")
        self.workflow = self.repo / "WORKFLOW.md"
        self.workflow.write_text(workflow_text(self.linear))
        port = free_port()
        self.agent = AgentProcess(["--port", str(port), "--project-dir", str(self.repo), GUARDRAILS_FLAG],
                                  self.repo, root / "agent-logs",
                                  {**self.linear.environ, "FAKE_CLAUDE_STATE": str(root / "fake-state")},
                                  guardrails_acknowledged=False)
        self.agent_url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{self.agent_url}/agent/health", self.agent.proc, timeout=60)
        except AssertionError as exc:
            self.linear.stop()
            raise AssertionError(f"{exc}\nthe agent said:\n{self.agent.output()}") from None
        config = DashboardConfig.model_validate({"agent_timeout_seconds": 10, "projects": [
            {"id": "w", "name": "Workflow", "agent_url": self.agent_url}]}).with_defaults()
        self._server = serve(create_app(DashboardSettings(config=config)))
        self.url = self._server.__enter__()

    def source(self) -> dict:
        answer = httpx.get(f"{self.url}/api/projects/w/source", timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def synced(self) -> dict:
        """The source once its sync has read the tracker."""
        return wait_for(lambda: (s := self.source())["state"] == "ok" and s["last_sync_at"] and s,
                        timeout=60, what="the workflow's tracker to sync")

    def close(self) -> None:
        self._server.__exit__(None, None, None)
        self.agent.stop()
        self.linear.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("workflow-board"))
    yield world
    world.close()


@pytest.fixture
def good_file(world):
    """Every test starts and ends with the good WORKFLOW.md in force."""
    world.workflow.write_text(workflow_text(world.linear))
    wait_for(lambda: world.source()["workflow"]["state"] == "ok", timeout=30, what="the good WORKFLOW.md")
    yield
    world.workflow.write_text(workflow_text(world.linear))
    wait_for(lambda: world.source()["workflow"]["state"] == "ok", timeout=30, what="the good WORKFLOW.md back")


def test_the_projects_source_is_its_agents_workflow_sync(world, good_file):
    source = world.synced()
    assert source["origin"] == "workflow" and source["kind"] == "linear" and source["healthy"] is True
    workflow = source["workflow"]
    assert workflow["path"] == str(world.workflow) and workflow["state"] == "ok" and workflow["error"] is None
    assert workflow["loaded_at"]
    # The project list and the board's first read carry the same source.
    projects = httpx.get(f"{world.url}/api/projects", timeout=30).json()["projects"]
    assert projects[0]["source"]["origin"] == "workflow" and projects[0]["source"]["workflow"]["state"] == "ok"
    board = httpx.get(f"{world.url}/api/board", timeout=30).json()["projects"][0]
    assert board["source"]["origin"] == "workflow" and board["source"]["kind"] == "linear"


def test_sync_now_asks_the_agent_to_poll(world, good_file):
    before = world.synced()
    world.linear.admin.reset()
    answer = httpx.post(f"{world.url}/api/projects/w/source/sync", timeout=30)
    assert answer.status_code == 202, answer.text
    assert answer.json()["origin"] == "workflow"
    # The agent read the tracker: the stand-in saw it, and the sync's health moved on.
    wait_for(lambda: world.linear.admin.stats()["calls"] > 0, timeout=60, what="a poll of the stand-in")
    wait_for(lambda: world.source()["last_sync_at"] != before["last_sync_at"], timeout=60,
             what="the sync's health to move on")


def test_an_invalid_edit_shows_while_the_tracker_keeps_syncing(world, good_file):
    loaded = world.synced()["workflow"]["loaded_at"]
    world.workflow.write_text(workflow_text(world.linear, INVALID))
    source = wait_for(lambda: (s := world.source())["workflow"]["state"] == "invalid" and s, timeout=30,
                      what="the refused edit to show")
    error = source["workflow"]["error"]
    assert "max_turnz" in error["message"] and error["code"] and error["at"], error
    assert source["workflow"]["loaded_at"] == loaded  # still the version it loaded before
    assert source["state"] == "ok" and source["kind"] == "linear"
    # The last good workflow still runs: Sync now polls its tracker.
    before = source["last_sync_at"]
    world.linear.admin.reset()
    assert httpx.post(f"{world.url}/api/projects/w/source/sync", timeout=30).status_code == 202
    wait_for(lambda: world.linear.admin.stats()["calls"] > 0, timeout=60, what="a poll of the stand-in")
    after = wait_for(lambda: (s := world.source())["last_sync_at"] != before and s, timeout=60,
                     what="the sync's health to move on")
    assert after["state"] == "ok" and after["workflow"]["state"] == "invalid"
    # The board's stream says it too (a page opened now gets the project with it).
    board = httpx.get(f"{world.url}/api/board", timeout=30).json()["projects"][0]
    assert board["source"]["workflow"]["state"] == "invalid"
    assert "max_turnz" in board["source"]["workflow"]["error"]["message"]


def test_the_board_stream_follows_the_workflow(world, good_file):
    world.synced()
    seen: list[str] = []
    deadline = time.monotonic() + 60  # keep-alives come every 15 s: the loop gets to check this
    with httpx.stream("GET", f"{world.url}/api/board/stream", timeout=60) as stream:
        for line in stream.iter_lines():
            assert time.monotonic() < deadline, f"no project event with the refused edit; saw {seen}"
            if not line.startswith("data: "):
                continue
            data = json.loads(line.removeprefix("data: "))
            if data.get("id") != "w" or not data.get("source"):
                continue  # not a `project` event of this project
            assert data["source"]["origin"] == "workflow"
            seen.append(data["source"]["workflow"]["state"])
            if len(seen) == 1:
                world.workflow.write_text(workflow_text(world.linear, INVALID))
            elif seen[-1] == "invalid":
                break
    assert seen[0] == "ok" and seen[-1] == "invalid", seen
    assert "max_turnz" in data["source"]["workflow"]["error"]["message"]


def test_a_project_without_an_agent_cannot_sync_its_workflow(tmp_path, dashboard_factory):
    with_file = make_repo(tmp_path, "with-file")
    (with_file / "WORKFLOW.md").write_text("---\ntracker:\n  kind: linear\n---\nWork.\n")
    without = make_repo(tmp_path, "without")
    client = dashboard_factory([{"id": "f", "path": str(with_file)}, {"id": "n", "path": str(without)}])
    refused = client.post("/api/projects/f/source/sync")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "agent_not_running"
    assert "the agent is not running" in refused.json()["error"]["message"]
    # Nothing runs the file: no source to show.
    assert client.get("/api/projects/f/source").status_code == 404
    for response in (client.get("/api/projects/n/source"), client.post("/api/projects/n/source/sync")):
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", response.text
    assert [p["source"] for p in client.get("/api/projects").json()["projects"]] == [None, None]
