"""The tracker tools gateway (POST /api/tracker-tools/call, backend/dashboard/routes/sources.py) and
its capability tokens (backend/sources/tools.py ToolGate), with real processes: the stand-in Linear,
a baton-agent running the fake CLI, and the dashboard whose source sync turns the stand-in's issues
into tasks (each with a tool grant) under uvicorn. The dashboard has a token of its own: the
gateway must not need it.

Each seeded issue's task holds its run open until the test writes its release file, so "the task
is running" is a fact the test controls.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from backend.dashboard.app import create_app, source_only_env
from backend.dashboard.config import DashboardConfig
from backend.dashboard.settings import DashboardSettings
from backend.sources.tools import ToolGate
from conftest import FAKE_CLAUDE
from support import AgentProcess, free_port, make_repo, serve, wait_for, wait_for_http
from trackers_support import start_linear_standin

DASHBOARD_TOKEN = "dashboard-token-0123456789abcdef"
CALL = "/api/tracker-tools/call"


@dataclass
class World:
    root: Path
    linear: object
    agent: AgentProcess
    agent_url: str
    repo: Path
    url: str
    app: object
    issues: dict[str, dict] = field(default_factory=dict)  # name -> {id, identifier, url}
    releases: dict[str, Path] = field(default_factory=dict)

    def tasks(self) -> list[dict]:
        grouped = httpx.get(f"{self.agent_url}/agent/tasks", timeout=30).json()
        return [task for tasks in grouped.values() for task in tasks]

    def task_of(self, name: str) -> dict | None:
        issue_id = self.issues[name]["id"]
        return next((t for t in self.tasks() if (t.get("source") or {}).get("id") == issue_id), None)

    def running(self, name: str) -> dict:
        """The task of issue `name`, once it runs and the sync moved its issue (on_start): from
        then on only the test changes the issue."""
        task = wait_for(lambda: (t := self.task_of(name)) is not None and t["status"] == "in_progress" and t,
                        timeout=90, what=f"the task of issue {name} to run")
        wait_for(lambda: self.standin_issue(name)["state"] == "In Progress", timeout=60,
                 what=f"the sync to move issue {name} to In Progress")
        return task

    def token(self, name: str) -> str:
        """The grant the sync gave the task of issue `name`, as the agent keeps it (0600)."""
        task = self.running(name)
        path = self.repo / "data" / "tool-grants" / f"{task['id']}.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        grant = json.loads(path.read_text())
        assert grant["url"] == f"{self.url}{CALL}"  # the dashboard's loopback address
        return grant["token"]

    def call(self, token: str | None, tool: str, arguments: dict | None = None, base: str | None = None,
             **body) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.post(f"{base or self.url}{CALL}", json={"tool": tool, "arguments": arguments or {}, **body},
                          headers=headers, timeout=30)

    def standin_issue(self, name: str) -> dict:
        return self.linear.admin.issue(self.issues[name]["identifier"])


AGENT_SAYS = "Hello from the coding agent"


def scenario(release: Path, *first: dict) -> str:
    """An issue description the fake CLI follows: `first` steps, then hold the run until
    `release` exists."""
    return "FAKE: " + json.dumps({"steps": [*first, {"wait_for": str(release), "seconds": 300}]})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gateway")
    linear = start_linear_standin(root / "linear")
    repo = make_repo(root, "p")
    wrapper = root / "bin" / "claude"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CLAUDE} \"$@\"\n")
    wrapper.chmod(0o755)
    (repo / "agent.yaml").write_text(f"poll_interval_seconds: 0.5\ntest_command: ''\nmax_parallel_workers: 5\n"
                                     f"claude_code:\n  command: {wrapper}\n")
    agent_port = free_port()
    agent = AgentProcess(["--port", str(agent_port), "--project-dir", str(repo)], repo, root / "agent-logs",
                         {"FAKE_CLAUDE_STATE": str(root / "fake-state")})
    agent_url = f"http://127.0.0.1:{agent_port}"
    wait_for_http(f"{agent_url}/agent/health", agent.proc)
    project_id = httpx.get(f"{agent_url}/agent/health").json()["project_id"]

    releases = {name: root / f"release-{name}" for name in ("a", "b", "c", "d")}
    # d's agent calls a tracker tool itself: the MCP server the CLI is given, then this gateway.
    first = {"d": [{"mcp": "tracker_add_comment", "arguments": {"body": AGENT_SAYS}}]}
    seeded = linear.admin.seed([{"title": f"Issue {name.upper()}", "state": "Todo",
                                 "description": scenario(path, *first.get(name, []))}
                                for name, path in releases.items()])
    issues = dict(zip(releases, seeded))

    os.environ[linear.var] = linear.api_key  # the dashboard reads its source's secret from its environment
    port = free_port()
    config = DashboardConfig.model_validate({"agent_timeout_seconds": 10, "projects": [{
        "id": "p", "agent_url": agent_url, "agent_project_id": project_id,
        "source": linear.source(poll_seconds=1, on_start="In Progress")}]}).with_defaults()
    app = create_app(DashboardSettings(config=config, port=port, token=DASHBOARD_TOKEN, data_dir=root / "data"))
    server = serve(app, port=port)
    url = server.__enter__()
    try:
        yield World(root, linear, agent, agent_url, repo, url, app, issues, releases)
    finally:
        for path in releases.values():
            path.touch()
        server.__exit__(None, None, None)
        os.environ.pop(linear.var, None)
        agent.stop()
        linear.stop()


# ----- scope -------------------------------------------------------------------------------

def test_a_token_for_one_issue_cannot_read_comment_on_or_move_another(world):
    token_a = world.token("a")
    world.running("b")
    b = world.issues["b"]
    before = world.standin_issue("b")
    for tool, arguments in (("tracker_get_issue", {}), ("tracker_list_comments", {}),
                            ("tracker_add_comment", {"body": "from A's task"}),
                            ("tracker_update_state", {"state": "Todo"})):
        refused = world.call(token_a, tool, arguments, issue=b["id"])
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "out_of_scope"
    # Nor by naming B in the tool's arguments: tools take no issue.
    smuggled = world.call(token_a, "tracker_add_comment", {"body": "x", "issue_id": b["id"]})
    assert smuggled.status_code == 422, smuggled.text
    after = world.standin_issue("b")
    assert after["comments"] == before["comments"] and after["state"] == before["state"]
    assert [h for h in after["history"] if h["by"] == "api"] == [h for h in before["history"] if h["by"] == "api"]
    # The same token does reach its own issue (and needs no dashboard token or session).
    own = world.call(token_a, "tracker_get_issue", issue=world.issues["a"]["id"])
    assert own.status_code == 200, own.text
    assert own.json()["result"]["identifier"] == world.issues["a"]["identifier"]
    assert set(own.json()["result"]) == {"id", "identifier", "title", "description", "state", "url", "labels",
                                        "priority"}
    comment = world.call(token_a, "tracker_add_comment", {"body": "Looking into it"})
    assert comment.status_code == 200, comment.text
    assert [c["body"] for c in world.standin_issue("a")["comments"]] == ["Looking into it"]
    listed = world.call(token_a, "tracker_list_comments").json()["result"]
    assert [c["body"] for c in listed] == ["Looking into it"] and set(listed[0]) == {"id", "body", "created_at"}


def test_a_coding_agents_tool_call_reaches_its_own_issue(world):
    task = world.running("d")
    try:
        wait_for(lambda: [c["body"] for c in world.standin_issue("d")["comments"]] == [AGENT_SAYS], timeout=120,
                 what="the agent's comment on its issue")
    except AssertionError:  # say what the agent saw (an MCP server that did not start, a tool error)
        events = httpx.get(f"{world.agent_url}/agent/tasks/{task['id']}/events", timeout=30).json()["events"]
        raise AssertionError(json.dumps(events[-8:], indent=1)[:4000]) from None
    assert all(AGENT_SAYS not in [c["body"] for c in world.standin_issue(name)["comments"]] for name in "abc")


def test_a_forged_or_altered_token_is_refused(world):
    token_a = world.token("a")
    version, payload, signature = token_a.split(".")
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other_issue = b64(json.dumps({**claims, "issue": world.issues["b"]["id"]}, separators=(",", ":")).encode())
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    foreign = ToolGate(world.root / "another" / "tool-key", world.url).grant("p", "linear", world.issues["b"]["id"])
    before = world.standin_issue("b")
    for token in (f"{version}.{other_issue}.{signature}",  # another issue under A's signature
                  f"{version}.{payload}.{flipped}",        # a signature changed
                  f"bt2.{payload}.{signature}",            # another version
                  token_a + "x", "nonsense",
                  foreign.token):                          # a well-made token of another key
        refused = world.call(token, "tracker_add_comment", {"body": "forged"})
        assert refused.status_code == 401, (token, refused.text)
        assert refused.json()["error"]["code"] == "invalid_token"
    missing = world.call(None, "tracker_get_issue")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_token"
    # The dashboard's own token is not a capability either.
    dashboards = world.call(DASHBOARD_TOKEN, "tracker_get_issue")
    assert dashboards.status_code == 401 and dashboards.json()["error"]["code"] == "invalid_token"
    assert world.standin_issue("b")["comments"] == before["comments"]
    assert all(c["body"] != "forged" for c in world.standin_issue("a")["comments"])


def test_a_state_the_source_does_not_name_is_refused(world):
    token_a = world.token("a")
    refused = world.call(token_a, "tracker_update_state", {"state": "Backlog"})
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "out_of_scope" and "Todo" in error["message"] and "Backlog" in error["message"]
    assert world.standin_issue("a")["state"] == "In Progress"  # where on_start put it, not Backlog
    # A named state is allowed: the issue moves (and back).
    moved = world.call(token_a, "tracker_update_state", {"state": "Todo"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["result"]["state"] == "Todo" and world.standin_issue("a")["state"] == "Todo"
    assert world.call(token_a, "tracker_update_state", {"state": "In Progress"}).status_code == 200


def test_the_token_dies_with_its_task(world):
    token_c = world.token("c")
    assert world.call(token_c, "tracker_get_issue").status_code == 200
    world.releases["c"].touch()  # the run ends; with no tests the task lands
    wait_for(lambda: world.task_of("c")["status"] not in ("pending", "in_progress"), timeout=90,
             what="the task of issue c to end")
    comments = len(world.standin_issue("c")["comments"])
    refused = world.call(token_c, "tracker_add_comment", {"body": "too late"})
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "out_of_scope" and "not running" in error["message"]
    assert world.issues["c"]["identifier"] in error["message"]
    assert all(c["body"] != "too late" for c in world.standin_issue("c")["comments"][comments:])


def test_bad_arguments_are_refused_before_the_tracker(world):
    token_a = world.token("a")
    before = world.standin_issue("a")
    for tool, arguments in (("tracker_add_comment", {"body": ""}), ("tracker_add_comment", {"body": "x" * 10_001}),
                            ("tracker_add_comment", {}), ("tracker_update_state", {"state": ""}),
                            ("tracker_delete_issue", {})):
        refused = world.call(token_a, tool, arguments)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "validation_error"
    after = world.standin_issue("a")
    assert after["comments"] == before["comments"] and after["state"] == before["state"]


def test_a_comment_carrying_batons_marker_is_refused(world):
    """The engine posts a side effect's comment only when none carries its marker line: an
    agent posting that line (either format, any spacing or case) could suppress it."""
    token_a = world.token("a")
    task = world.task_of("a")
    before = world.standin_issue("a")
    for body in (f"Done, I think.\n\n— Baton (task {task['id']}, done:1)",
                 f"baton task {task['id']} · done:1",
                 f"see BATON  task {task['id']} ·  failed:2 below",
                 "Baton (task zz9, review:3)", f"— Ba\u200bton (task {task['id']}, done:1)"):
        refused = world.call(token_a, "tracker_add_comment", {"body": body})
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"]["code"] == "reserved_marker"
    after = world.standin_issue("a")
    assert after["comments"] == before["comments"]
    # Talking about Baton is fine.
    fine = world.call(token_a, "tracker_add_comment", {"body": "Baton (the tool) ran task a1 for me"})
    assert fine.status_code == 200, fine.text


def test_tracker_failures_come_back_in_the_error_shape(world):
    token_a = world.token("a")
    headers = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    try:
        world.linear.admin.fail("outage", seconds=600)
        down = world.call(token_a, "tracker_add_comment", {"body": "while Linear is down"})
        assert down.status_code == 502, down.text
        assert down.json()["error"]["code"] == "tracker_error" and "Linear" in down.json()["error"]["message"]
        # Limited for longer than the client rides out (a few short waits): 503 with when to come back.
        world.linear.admin.fail("rate_limit", seconds=600, retry_after=2)
        limited = world.call(token_a, "tracker_get_issue")
        assert limited.status_code == 503, limited.text
        assert limited.json()["error"]["code"] == "rate_limited" and limited.headers["retry-after"] == "2"
        assert "Linear" in limited.json()["error"]["message"]
    finally:
        world.linear.admin.fail("none")
        # The sync backed off meanwhile: read the tracker again now, for the tests after this one.
        httpx.post(f"{world.url}/api/projects/p/source/sync", headers=headers).raise_for_status()
        wait_for(lambda: httpx.get(f"{world.url}/api/projects/p/source", headers=headers).json()["state"] == "ok",
                 timeout=60, what="the sync to recover")
    assert world.call(token_a, "tracker_get_issue").status_code == 200


def test_calls_are_logged_without_the_token_or_the_body(world, caplog):
    token_a = world.token("a")
    caplog.set_level(logging.INFO, logger="baton.sources.gateway")
    secret_words = "a comment body that stays out of the log"
    assert world.call(token_a, "tracker_add_comment", {"body": secret_words}).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "baton.sources.gateway"]
    assert any("tracker_add_comment" in line and world.issues["a"]["identifier"] in line for line in lines), lines
    assert not any(token_a in line or secret_words in line for line in lines)


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (from which a connection is not loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_a_client_that_is_not_on_loopback_is_refused(world):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    token_a = world.token("a")
    port = free_port()
    config = DashboardConfig.model_validate({"agent_timeout_seconds": 10, "allowed_hosts": [address], "projects": [{
        "id": "p", "agent_url": world.agent_url, "agent_project_id": "p"}]}).with_defaults()
    # The same key folder, so the token is one this dashboard made too; it listens on every address.
    app = create_app(DashboardSettings(config=config, host="0.0.0.0", port=port, token=DASHBOARD_TOKEN,
                                       data_dir=world.root / "data"))
    with serve(app, host="0.0.0.0", port=port):
        remote = world.call(token_a, "tracker_get_issue", base=f"http://{address}:{port}")
        assert remote.status_code == 403, remote.text
        assert remote.json()["error"]["code"] == "forbidden_client"
        # From loopback the same request gets past that check (to the project's scope: no source here).
        local = world.call(token_a, "tracker_get_issue", base=f"http://127.0.0.1:{port}")
        assert local.status_code == 403 and local.json()["error"]["code"] == "out_of_scope", local.text


# ----- the dashboard's side ----------------------------------------------------------------

def test_the_health_and_sync_now_routes(world):
    headers = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    health = httpx.get(f"{world.url}/api/projects/p/source", headers=headers).json()
    assert health["kind"] == "linear" and health["state"] == "ok" and health["healthy"]
    synced = httpx.post(f"{world.url}/api/projects/p/source/sync", headers=headers)
    assert synced.status_code == 202 and synced.json()["kind"] == "linear"
    projects = httpx.get(f"{world.url}/api/projects", headers=headers).json()["projects"]
    assert projects[0]["source"]["kind"] == "linear"
    # Still the dashboard's API: its token is needed there.
    assert httpx.get(f"{world.url}/api/projects/p/source").status_code == 401


def test_no_source_is_404(dashboard_factory, agent):
    client = dashboard_factory([{"id": "plain", "agent_url": agent.url, "agent_project_id": agent.settings.project_id}])
    for response in (client.get("/api/projects/plain/source"), client.post("/api/projects/plain/source/sync"),
                     client.get("/api/projects/nope/source")):
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.get("/api/projects").json()["projects"][0]["source"] is None


def test_the_agents_the_dashboard_starts_do_not_inherit_a_sources_secrets(tmp_path, dashboard_factory, monkeypatch):
    monkeypatch.setenv("BATON_TEST_LINEAR_KEY", "lin_secret_for_the_dashboard_alone")
    monkeypatch.setenv("BATON_TEST_OTHER_VARIABLE", "kept")
    repo = make_repo(tmp_path, "started")
    (repo / "agent.yaml").write_text("dispatcher_autostart: false\n")  # no coding-agent CLI needed
    port = free_port()
    client = dashboard_factory([{
        "id": "s", "path": str(repo), "agent_url": f"http://127.0.0.1:{port}", "start": True,
        # Nothing listens there: the sync fails, which does not matter here.
        "source": {"kind": "linear", "base_url": f"http://127.0.0.1:{free_port()}/graphql",
                   "api_key": "$BATON_TEST_LINEAR_KEY", "filter": {"team": "ENG"}, "poll_seconds": 60}}], timeout=5.0)

    def started():
        agent = client.get("/api/projects").json()["projects"][0]["agent"]
        return agent if agent["state"] == "running" and agent["pid"] else None

    pid = wait_for(started, timeout=60, what="the started agent")["pid"]
    environ = dict(entry.split(b"=", 1) for entry in
                   open(f"/proc/{pid}/environ", "rb").read().split(b"\0") if b"=" in entry)
    assert environ.get(b"BATON_TEST_OTHER_VARIABLE") == b"kept"  # the agent's environment, as read
    assert b"BATON_TEST_LINEAR_KEY" not in environ
    assert b"lin_secret_for_the_dashboard_alone" not in b"".join(environ.values())


def test_source_secrets_are_named_for_the_agents_to_drop():
    config = DashboardConfig.model_validate({"projects": [
        {"id": "l", "path": "/tmp/x", "source": {"kind": "linear", "api_key": "$LIN_KEY", "filter": {"team": "ENG"}}},
        {"id": "j", "path": "/tmp/y", "source": {"kind": "jira", "base_url": "https://x.atlassian.net",
                                                  "email": "$JIRA_EMAIL", "api_token": "$JIRA_TOKEN",
                                                  "filter": {"project": "SHOP"}}}]})
    assert set(source_only_env(config)) == {"LIN_KEY", "JIRA_EMAIL", "JIRA_TOKEN"}


# ----- ToolGate's key ----------------------------------------------------------------------

def test_the_key_is_made_private_on_first_use_and_kept(tmp_path):
    key_file = tmp_path / "data" / "tool-key"
    gate = ToolGate(key_file, "http://127.0.0.1:8888")
    assert not key_file.exists()  # nothing at construction
    grant = gate.grant("p", "jira", "10042")
    assert grant.url == "http://127.0.0.1:8888/api/tracker-tools/call" and grant.token.startswith("bt1.")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert ToolGate(key_file, "http://127.0.0.1:1").verify(grant.token) == ("p", "jira", "10042")  # a restart


def test_a_damaged_key_is_replaced_and_a_linked_one_refused(tmp_path):
    from backend.sources.tools import ToolKeyError

    key_file = tmp_path / "tool-key"
    old = ToolGate(key_file, "http://127.0.0.1:8888").grant("p", "linear", "x")
    key_file.write_text("not a key\n")
    gate = ToolGate(key_file, "http://127.0.0.1:8888")
    assert gate.verify(old.token) is None  # grants made with the lost key are worth nothing now
    assert gate.verify(gate.grant("p", "linear", "x").token) == ("p", "linear", "x")
    assert len(bytes.fromhex(key_file.read_text().strip())) == 32
    key_file.unlink()
    (tmp_path / "elsewhere").write_text("00" * 32)
    key_file.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ToolKeyError, match="symbolic link"):
        ToolGate(key_file, "http://127.0.0.1:8888").grant("p", "linear", "x")
    assert (tmp_path / "elsewhere").read_text() == "00" * 32  # never written through the link
