"""Choosing a runtime per task through the API: GET /agent/runtimes lists what the project
configures (and whether each CLI can start), creates refuse a runtime the project does not
configure, and the dashboard relays both, through an agent and through a store on disk."""

from __future__ import annotations

import pytest

from backend.config import AgentConfig, ClaudeCodeConfig, CodexConfig, OpenCodeConfig
from backend.store import TaskStore
from support import make_repo
from test_api import assert_error

MISSING_OPENCODE = "/nonexistent/bin/opencode"


def two_runtimes(fake_cli) -> AgentConfig:
    """claude_code (the fake CLI, with a model) by default, and opencode whose CLI is missing."""
    return AgentConfig(claude_code=ClaudeCodeConfig(command=fake_cli.command, model="claude-fake-1"),
                       opencode=OpenCodeConfig(command=MISSING_OPENCODE, model="local/qwen"))


NOT_CONFIGURED = "runtime 'codex' is not configured for this project; available: claude_code, opencode"


def test_runtimes_lists_the_configured_ones_default_first(agent_factory, fake_cli):
    agent = agent_factory(config=two_runtimes(fake_cli))
    resp = agent.client.get("/agent/runtimes")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["default"] == "claude_code"
    assert [r["name"] for r in body["runtimes"]] == ["claude_code", "opencode"]  # codex: no section
    claude, opencode = body["runtimes"]
    assert claude == {"name": "claude_code", "default": True, "model": "claude-fake-1", "available": True,
                      "problem": None, "cost": "reported"}
    assert opencode["default"] is False and opencode["model"] == "local/qwen" and opencode["cost"] == "reported"
    assert opencode["available"] is False and opencode["problem"]["code"] == "runtime_unavailable"


def test_runtimes_marks_estimated_costs_and_lists_only_the_default_without_sections(agent_factory):
    agent = agent_factory(config=AgentConfig(runtime="codex"))
    body = agent.client.get("/agent/runtimes").json()
    assert body["default"] == "codex"
    assert [(r["name"], r["default"], r["cost"], r["model"]) for r in body["runtimes"]] == [
        ("codex", True, "estimated", None)]


def test_runtimes_needs_the_token_and_is_documented(agent_factory):
    token = "t" * 24
    agent = agent_factory(token=token, config=AgentConfig(codex=CodexConfig(command="/nonexistent/codex")))
    assert_error(agent.client.get("/agent/runtimes"), 401, "unauthorized")
    auth = {"Authorization": f"Bearer {token}"}
    assert [r["name"] for r in agent.client.get("/agent/runtimes", headers=auth).json()["runtimes"]] == [
        "claude_code", "codex"]
    schema = agent.client.get("/openapi.json", headers=auth).json()
    answer = schema["paths"]["/agent/runtimes"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/RuntimeList")
    info = schema["components"]["schemas"]["RuntimeInfo"]["properties"]
    assert {"name", "default", "model", "available", "problem", "cost"} <= set(info)
    # A schema-valid create is one this agent accepts: the document names its runtimes.
    choice = schema["components"]["schemas"]["NewTask"]["properties"]["runtime"]["anyOf"]
    assert {"type": "string", "enum": ["claude_code", "codex"]} in choice


def test_create_refuses_an_unconfigured_runtime_and_stores_a_configured_one(agent_factory, fake_cli):
    agent = agent_factory(config=two_runtimes(fake_cli))
    error = assert_error(agent.client.post("/agent/tasks", json={"title": "t", "runtime": "codex"}),
                         422, "runtime_not_configured")
    assert error["message"] == NOT_CONFIGURED
    assert agent.store.snapshot().tasks == {}
    # A configured one is stored and returned.
    resp = agent.client.post("/agent/tasks", json={"title": "t", "runtime": "opencode", "model": "local/llama-3.3"})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert (created["runtime"], created["model"]) == ("opencode", "local/llama-3.3")
    stored = agent.store.get(created["id"])
    assert (stored.runtime, stored.model) == ("opencode", "local/llama-3.3")
    detail = agent.client.get(f"/agent/tasks/pending/{created['id']}.md").json()
    assert (detail["runtime"], detail["model"]) == ("opencode", "local/llama-3.3")
    # The default, named or not, is always configured.
    assert agent.client.post("/agent/tasks", json={"title": "d", "runtime": "claude_code"}).status_code == 201


def test_a_repeated_create_answers_its_task_even_after_its_runtime_was_dropped(agent_factory, fake_cli):
    before = agent_factory(config=two_runtimes(fake_cli))
    body, key = {"title": "t", "runtime": "opencode"}, {"Idempotency-Key": "create-1"}
    first = before.client.post("/agent/tasks", json=body, headers=key)
    assert first.status_code == 201, first.text
    # agent.yaml no longer configures opencode; the same project, another agent.
    after = agent_factory(config=fake_cli.config(), project=before.settings.project_dir)
    again = after.client.post("/agent/tasks", json=body, headers=key)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"], again.text
    assert_error(after.client.post("/agent/tasks", json=body, headers={"Idempotency-Key": "create-2"}),
                 422, "runtime_not_configured")


def test_bulk_is_all_or_nothing_and_names_the_item(agent_factory, fake_cli):
    agent = agent_factory(config=two_runtimes(fake_cli))
    tasks = [{"title": "a"}, {"title": "b", "runtime": "opencode"}, {"title": "c", "runtime": "codex"}]
    error = assert_error(agent.client.post("/agent/tasks/bulk", json={"tasks": tasks}), 422, "runtime_not_configured")
    assert error["message"] == f"tasks[2]: {NOT_CONFIGURED}"
    assert agent.store.snapshot().tasks == {}
    resp = agent.client.post("/agent/tasks/bulk", json={"tasks": tasks[:2]})
    assert resp.status_code == 201, resp.text
    assert [(t["runtime"], t["model"]) for t in resp.json()["tasks"]] == [(None, None), ("opencode", None)]


# ----- through the dashboard --------------------------------------------------------------


@pytest.fixture
def dashboard(agent_factory, dashboard_factory, fake_cli, tmp_path):
    """An agent with two runtimes, and a store-only project whose agent.yaml configures two."""
    agent = agent_factory(config=two_runtimes(fake_cli))
    agent.client.get("/agent/health").raise_for_status()  # its first health asks git: not in the budget
    local = make_repo(tmp_path, "localproject")
    (local / "agent.yaml").write_text(f"claude_code:\n  command: {fake_cli.command}\n"
                                      f"opencode:\n  command: {MISSING_OPENCODE}\n  model: local/qwen\n")
    store = TaskStore(local / "data" / "dev-tasks.json")
    store.initialize()
    client = dashboard_factory([
        {"id": "alpha", "agent_url": agent.url, "agent_project_id": agent.settings.project_id},
        {"id": "local", "path": str(local)},
    ], timeout=5)
    return client, agent, store


def test_dashboard_relays_the_runtimes_of_both_kinds_of_project(dashboard):
    client, agent, _ = dashboard
    resp = client.get("/api/projects/alpha/runtimes")
    assert resp.status_code == 200, resp.text
    assert resp.json() == agent.client.get("/agent/runtimes").json()
    local = client.get("/api/projects/local/runtimes").json()
    assert local["default"] == "claude_code"
    assert [(r["name"], r["available"], r["model"]) for r in local["runtimes"]] == [
        ("claude_code", True, None), ("opencode", False, "local/qwen")]
    assert_error(client.get("/api/projects/nope/runtimes"), 404, "not_found")


def test_dashboard_creates_pass_the_choice_and_relay_the_refusal(dashboard):
    client, agent, store = dashboard
    for project, tasks in (("alpha", lambda: agent.store.snapshot().tasks), ("local", lambda: store.snapshot().tasks)):
        error = assert_error(client.post(f"/api/projects/{project}/tasks", json={"title": "t", "runtime": "codex"}),
                             422, "runtime_not_configured")
        assert error["message"] == NOT_CONFIGURED, project
        bulk = [{"title": "a", "runtime": "opencode"}, {"title": "b", "runtime": "codex"}]
        error = assert_error(client.post(f"/api/projects/{project}/tasks/bulk", json={"tasks": bulk}),
                             422, "runtime_not_configured")
        assert error["message"] == f"tasks[1]: {NOT_CONFIGURED}", project
        assert tasks() == {}, project
        resp = client.post(f"/api/projects/{project}/tasks",
                           json={"title": "t", "runtime": "opencode", "model": "local/llama-3.3"})
        assert resp.status_code == 201, resp.text
        stored = tasks()[resp.json()["id"]]
        assert (stored.runtime, stored.model) == ("opencode", "local/llama-3.3"), project
