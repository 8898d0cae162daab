"""Issue #7: a coding agent reads the task list from its worktree but cannot damage the store."""

from __future__ import annotations

import json
import stat

from backend.models import TaskStatus
from backend.storeview import view_path, worktree_source
from conftest import fake_task
from support import wait_for

DONE = {TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled}


def test_an_agent_overwriting_the_store_in_its_worktree_reaches_only_a_read_only_copy(
    agent_factory, fake_cli, tmp_path
):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    earlier = agent.client.post("/agent/tasks", json={"title": "Earlier work"}).json()["id"]
    agent.client.post(f"/agent/tasks/{earlier}/cancel")
    seen, where = tmp_path / "seen.json", tmp_path / "where.txt"
    resp = agent.client.post("/agent/tasks", json=fake_task("Vandal", {"steps": [
        {"read": "data/dev-tasks.json", "into": str(seen)},
        {"run": ["sh", "-c", f"readlink -f data/dev-tasks.json > {where}"]},
        {"write": "data/dev-tasks.json", "text": "garbage"},
        {"write": "work.txt", "text": "real work\n"},
    ]}))
    assert resp.status_code == 201, resp.text
    task_id = resp.json()["id"]
    task = wait_for(lambda: (t := agent.store.get(task_id)).status in DONE and t, timeout=60, what="the task")

    assert task.status is TaskStatus.completed, task.error_message
    # The agent could read the task list: its own task and the others were in it.
    listed = {t["id"]: t["status"] for t in json.loads(seen.read_text())["tasks"]}
    assert listed[task_id] == "in_progress" and listed[earlier] == "cancelled"
    # What it wrote through the link never reached the live store: not damaged, nothing restored.
    view = view_path(agent.store.path)
    assert where.read_text().strip() == str(view)
    assert not list(agent.store.path.parent.glob("dev-tasks.json.damaged-*"))
    assert agent.client.get("/agent/tasks").status_code == 200
    assert {t.id for t in agent.store.check().tasks.values()} == {earlier, task_id}
    # The copy is Baton's, read-only, and fresh again after the task's own store writes.
    assert stat.S_IMODE(view.stat().st_mode) == 0o444
    wait_for(lambda: json.loads(view.read_bytes())["revision"] == json.loads(agent.store.path.read_bytes())["revision"],
             what="the read-only copy to catch up")


def test_the_read_only_copy_follows_store_writes(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=False)
    project = agent.settings.project_dir
    view = view_path(agent.store.path)
    assert worktree_source(project, "data/dev-tasks.json") == view  # what a task start links to
    assert worktree_source(project, "CLAUDE.md") == project / "CLAUDE.md"  # other files as they are
    task_id = agent.client.post("/agent/tasks", json={"title": "New"}).json()["id"]
    wait_for(lambda: view.exists() and task_id in view.read_text(), what="the copy to show the new task")
    assert stat.S_IMODE(view.stat().st_mode) == 0o444
