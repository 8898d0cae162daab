"""The dashboard never creates a project folder: writes to a local project whose `path` does
not exist are refused (502 in the error shape, naming the folder) and nothing appears on disk."""

from __future__ import annotations

import pytest

from backend.models import NewTask
from backend.store import TaskStore
from test_api import assert_error


def test_writes_to_a_missing_project_folder_are_refused(dashboard_factory, tmp_path):
    missing = tmp_path / "not-cloned-yet"
    client = dashboard_factory([{"id": "ghost", "path": str(missing)}])
    attempts = [
        client.post("/api/projects/ghost/tasks", json={"title": "Would create the folder"}),
        client.post("/api/projects/ghost/tasks/bulk", json={"tasks": [{"title": "one"}]}),
        client.post("/api/projects/ghost/tasks/abc123/rerun"),
        client.post("/api/projects/ghost/tasks/abc123/cancel"),
    ]
    for resp in attempts:
        error = assert_error(resp, 502, "agent_unavailable")
        assert str(missing) in error["message"] and "does not exist" in error["message"]
    assert not missing.exists()
    overview = client.get("/api/projects").json()["projects"][0]
    assert not overview["healthy"] and str(missing) in overview["reason"]


def test_store_creates_data_but_never_the_project_folder(tmp_path):
    missing = tmp_path / "gone"
    with pytest.raises(FileNotFoundError):
        TaskStore(missing / "data" / "dev-tasks.json").create(NewTask(title="x"))
    assert not missing.exists()
    (tmp_path / "here").mkdir()
    TaskStore(tmp_path / "here" / "data" / "dev-tasks.json").create(NewTask(title="x"))  # data/ is fine
    assert (tmp_path / "here" / "data" / "dev-tasks.json").exists()
