"""The demo runtime (backend/runtimes/demo/): its scripted agent run through a real agent, real
git and the real test command, like any other runtime; and it is never configured unless asked."""

from __future__ import annotations

import json
import sys

from backend.config import AgentConfig
from backend.models import TaskStatus
from support import add_status_check, git, make_repo, origin_of, submit_task, task_events, wait_task_done

UNITTEST = f"{sys.executable} -m unittest -q"


def demo_config(test_command: str = UNITTEST) -> AgentConfig:
    return AgentConfig.model_validate({
        "runtime": "demo", "demo": {"pace": 0, "timeout": 60, "stall_timeout": 30},
        "test_command": test_command, "poll_interval_seconds": 0.5, "max_parallel_workers": 2})


def demo_task(title: str, script: dict) -> dict:
    return {"title": title, "content": f"Scripted.\n\nDEMO: {json.dumps(script)}\n"}


def test_a_scripted_task_makes_real_edits_passes_the_tests_and_lands_at_no_cost(agent_factory):
    agent = agent_factory(config=demo_config(), dispatch=True)
    task_id = submit_task(agent, demo_task("Add shout()", {"steps": [
        {"say": "Adding shout()."},
        {"write": "shout.py", "text": "def shout(text):\n    return text.upper() + '!'\n"},
        {"write": "tests/__init__.py", "text": ""},
        {"write": "tests/test_shout.py", "text": "import unittest\nfrom shout import shout\n\n\n"
                                                 "class T(unittest.TestCase):\n    def test_it(self):\n"
                                                 "        self.assertEqual(shout('hi'), 'HI!')\n"},
        {"test": True},
        {"commit": True}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    origin = origin_of(agent.settings.project_dir)
    assert "return text.upper()" in git(origin, "show", "main:shout.py")
    # The commit message the prompt suggested, as a coding agent would use it.
    assert git(origin, "log", "-1", "--format=%s", "main").strip() == f"feature({task_id}): Add shout()"
    assert task.agent_runtime == "demo" and task.agent_model == "demo-script" and task.session_id
    assert task.cost_usd == 0 and task.input_tokens == 0 and task.output_tokens == 0
    events = task_events(agent, task_id)
    texts = [e["text"] for e in events if e["kind"] == "assistant_text"]
    assert texts[0].startswith("Demo runtime: a scripted agent, no model, no key")
    tests_run = [e for e in events if e["kind"] == "tool_result" and "Ran 1 test" in (e.get("text") or "")]
    assert tests_run and tests_run[0]["ok"] is True


def test_a_task_that_breaks_the_tests_lands_after_its_scripted_fix_in_one_feedback_turn(agent_factory, tmp_path):
    project = make_repo(tmp_path, "demo-project")
    agent = agent_factory(config=demo_config(add_status_check(project)), project=project, dispatch=True)
    task_id = submit_task(agent, demo_task("Break then fix", {
        "steps": [{"write": "status.txt", "text": "broken\n"}, {"commit": True}],
        "fix": [{"say": "Fixing."}, {"write": "status.txt", "text": "fixed\n"}, {"commit": "fix it"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    events = task_events(agent, task_id)
    sessions = [e["session_id"] for e in events if e["kind"] == "session_started"]
    assert len(sessions) == 2 and sessions[0] == sessions[1] == task.session_id
    assert sum(1 for e in events if e["kind"] == "baton" and "feedback turn 1" in (e.get("text") or "")) == 1
    origin = origin_of(project)
    assert git(origin, "show", "main:status.txt") == "fixed\n"
    subjects = git(origin, "log", "-2", "--format=%s", "main").splitlines()
    assert subjects == ["fix it", f"feature({task_id}): Break then fix"]


def test_a_task_typed_without_a_script_appends_a_line_to_notes_and_lands(agent_factory):
    agent = agent_factory(config=demo_config(test_command=""), dispatch=True)
    task_id = submit_task(agent, {"title": "Tidy the docs", "content": "Please tidy the docs."})
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    notes = git(origin_of(agent.settings.project_dir), "show", "main:NOTES.md")
    assert notes == f"- {task_id}: Tidy the docs\n"


def test_a_script_that_leaves_the_worktree_fails_the_task_and_writes_nothing_there(agent_factory, tmp_path):
    agent = agent_factory(config=demo_config(test_command=""), dispatch=True)
    outside = tmp_path / "outside.txt"
    task_id = submit_task(agent, demo_task("Escape", {"steps": [{"write": str(outside), "text": "x"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.failed and task.error_reason == "agent_error"
    assert "outside the worktree" in task.error_message
    assert not outside.exists()


def test_a_malformed_script_fails_the_task_saying_why(agent_factory):
    agent = agent_factory(config=demo_config(test_command=""), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, {"title": "Bad", "content": "DEMO: {not json"}))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_error"
    assert "the DEMO line is not valid JSON" in task.error_message


def test_the_demo_runtime_is_configured_only_when_asked_for():
    assert "demo" not in AgentConfig().configured_runtimes
    assert AgentConfig.model_validate({"demo": {}}).configured_runtimes == ["claude_code", "demo"]
    assert AgentConfig.model_validate({"runtime": "demo"}).configured_runtimes == ["demo"]
