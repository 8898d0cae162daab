"""Ids are matched whole: `abc\\n` (a trailing newline, which Python's `$` lets through) is never
a task id, a project id or a colour, on any route or in the store."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from backend.dashboard.config import DashboardConfig
from backend.models import NewTask, is_valid_task_id
from backend.store import StoreCorruptError, TaskStore
from support import make_repo
from test_api import assert_error


def test_is_valid_task_id_is_a_full_match():
    assert is_valid_task_id("abc123")
    for bad in ("abc\n", "abc\r\n", "\nabc", "abc ", "ABC", "a" * 33, ""):
        assert not is_valid_task_id(bad), repr(bad)


def test_agent_routes_refuse_an_id_with_a_trailing_newline(agent):
    task = agent.client.post("/agent/tasks", json={"title": "real"}).json()
    tid = task["id"]
    # The filename route used to serve the task for "<id>.md\n".
    assert_error(agent.client.get(f"/agent/tasks/pending/{tid}.md%0A"), 400, "invalid_filename")
    assert_error(agent.client.get(f"/agent/tasks/pending/{tid}%0A"), 400, "invalid_filename")
    assert_error(agent.client.post(f"/agent/tasks/{tid}%0A/rerun"), 400, "invalid_id")
    assert_error(agent.client.post(f"/agent/tasks/{tid}%0A/cancel"), 400, "invalid_id")
    assert_error(agent.client.get(f"/agent/tasks/{tid}%0A/events"), 400, "invalid_id")
    assert agent.store.get(tid).status.value == "pending"  # nothing happened to the real task


def test_store_refuses_an_id_with_a_trailing_newline(tmp_path):
    path = tmp_path / "data" / "dev-tasks.json"
    store = TaskStore(path)
    task = store.create(NewTask(title="x"))
    doc = json.loads(path.read_text())
    doc["tasks"][0]["id"] = task.id + "\n"
    path.write_text(json.dumps(doc))
    with pytest.raises(StoreCorruptError, match="id"):
        TaskStore(path).check()


def test_dashboard_routes_refuse_an_id_with_a_trailing_newline(dashboard_factory, agent, tmp_path):
    local_repo = make_repo(tmp_path, "localids")
    local = TaskStore(local_repo / "data" / "dev-tasks.json")
    local_id = local.create(NewTask(title="local")).id
    remote_id = agent.client.post("/agent/tasks", json={"title": "remote"}).json()["id"]
    client = dashboard_factory([{"id": "local", "path": str(local_repo)},
                                {"id": "http", "agent_url": agent.url,
                                 "agent_project_id": agent.settings.project_id}])
    for project, tid in (("local", local_id), ("http", remote_id)):
        base = f"/api/projects/{project}/tasks"
        assert_error(client.post(f"{base}/{tid}%0A/rerun"), 400, "invalid_id")
        assert_error(client.post(f"{base}/{tid}%0A/cancel"), 400, "invalid_id")
        assert_error(client.get(f"{base}/{tid}%0A/events"), 400, "invalid_id")
        for name in (f"{tid}%0A", f"{tid}%0A.md", f"{tid}.md%0A"):
            resp = client.get(f"{base}/pending/{name}")
            assert resp.status_code in (400, 404), resp.text
            assert_error(resp, resp.status_code, resp.json()["error"]["code"])
    assert local.get(local_id).status.value == "pending"


@pytest.mark.parametrize("project", [{"id": "alpha\n", "path": "/x"}, {"id": "alpha", "path": "/x", "color": "#fff\n"}])
def test_dashboard_config_ids_and_colours_are_full_matches(project):
    with pytest.raises(ValidationError):
        DashboardConfig.model_validate({"projects": [project]})
