"""A task store written before tasks chose runtimes: its `model` was the model the agent
REPORTED (Claude Code's init line, any string). It must still load, and that model must not
turn into the task's own choice (a rerun would pass it to the CLI as `--model`)."""

from __future__ import annotations

import json

from backend.store import TaskStore

STAMP = "2026-11-20T10:00:00+00:00"


def old_task(task_id: str, **fields) -> dict:
    # Exactly the fields the earlier Task had (no runtime, agent_runtime, agent_model, cost_estimated).
    return {"id": task_id, "title": "Old task", "content": "", "task_type": "feature", "needs_plan_review": False,
            "priority": "medium", "status": "completed", "created_at": STAMP, "updated_at": STAMP, **fields}


def test_an_old_store_loads_and_its_reported_model_is_not_a_choice(tmp_path):
    path = tmp_path / "dev-tasks.json"
    path.write_text(json.dumps({"schema_version": 1, "tasks": [
        # A reported name the new `model` pattern refuses (Claude Code's 1M-context suffix).
        old_task("aaa1", session_id="4fd2", model="claude-sonnet-4-5-20250929[1m]", cost_usd=0.5),
        old_task("aaa2", session_id="4fd3", model="claude-sonnet-4-5"),
        old_task("aaa3"),
    ]}))
    store = TaskStore(path)
    store.initialize()
    first, second, third = (store.get(i) for i in ("aaa1", "aaa2", "aaa3"))
    assert (first.model, first.agent_model, first.agent_runtime) == (
        None, "claude-sonnet-4-5-20250929[1m]", "claude_code")
    assert (second.model, second.agent_model, second.agent_runtime) == (None, "claude-sonnet-4-5", "claude_code")
    assert (third.model, third.agent_model, third.agent_runtime) == (None, None, None)
    assert first.cost_usd == 0.5 and first.runtime is None


def test_a_new_task_keeps_its_chosen_model(tmp_path):
    from backend.models import NewTask
    store = TaskStore(tmp_path / "dev-tasks.json")
    store.initialize()
    task = store.create(NewTask(title="T", runtime="opencode", model="local/qwen"))
    again = TaskStore(tmp_path / "dev-tasks.json")
    again.initialize()
    got = again.get(task.id)
    assert (got.runtime, got.model, got.agent_model) == ("opencode", "local/qwen", None)
