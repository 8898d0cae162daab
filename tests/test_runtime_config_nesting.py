"""agent.yaml nested too deeply for the YAML parser is a bad file like any other: a ConfigError
naming it (one line at start-up, 502 from the dashboard's store-only project), never a 500."""

from __future__ import annotations

import pytest

from backend.config import ConfigError, load_agent_config
from backend.store import TaskStore
from support import make_repo
from test_api import assert_error

DEEP = "opencode:\n  config: " + "[" * 5000 + "]" * 5000 + "\n"


def test_deeply_nested_agent_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(DEEP)
    with pytest.raises(ConfigError, match="agent.yaml: .*nested too deeply"):
        load_agent_config(path)


def test_the_dashboard_answers_a_clear_error_for_it(dashboard_factory, tmp_path):
    local = make_repo(tmp_path, "deep")
    (local / "agent.yaml").write_text(DEEP)
    TaskStore(local / "data" / "dev-tasks.json").initialize()
    client = dashboard_factory([{"id": "deep", "path": str(local)}], timeout=5)
    error = assert_error(client.get("/api/projects/deep/runtimes"), 502, "agent_unavailable")
    assert "nested too deeply" in error["message"]
    error = assert_error(client.post("/api/projects/deep/tasks", json={"title": "t", "runtime": "opencode"}),
                         502, "agent_unavailable")
    assert "nested too deeply" in error["message"]
