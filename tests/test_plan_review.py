"""needs_plan_review end to end with the fake CLI: a read-only planning turn, its answer stored as
the plan; approve runs the task with the plan, revise plans again in the same session, reject
cancels. Nothing a planning turn writes survives, even from a CLI that ignores plan mode."""

from __future__ import annotations

import sys

from backend.models import TaskStatus
from conftest import FAKE_CLAUDE, fake_task
from support import git, origin_of, submit_task, task_events, wait_for

PLANNED = {"steps": [{"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}],
           "model_text": "Plan: add hello.txt saying hi.",
           "on_resume": [{"steps": [], "model_text": "Plan v2: add hello.txt saying hi, with a test."}]}


def wait_status(agent, task_id, *statuses, timeout=60):
    return wait_for(lambda: (t := agent.store.get(task_id)).status in statuses and t, timeout=timeout,
                    what=f"task {task_id} to be {' or '.join(s.value for s in statuses)}")


def calls_of(fake_cli, task_id):
    return [c for c in fake_cli.calls() if c["env"]["TASK_ID"] == task_id]


def test_a_plan_is_made_read_only_reviewed_revised_and_then_carried_out(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    origin = origin_of(agent.settings.project_dir)
    before = git(origin, "rev-parse", "main").strip()
    task_id = submit_task(agent, fake_task("Say hello", PLANNED, needs_plan_review=True))

    task = wait_status(agent, task_id, TaskStatus.plan_review, TaskStatus.failed)
    assert task.status is TaskStatus.plan_review, task.error_message
    assert task.plan == "Plan: add hello.txt saying hi." and not task.plan_approved
    (planning,) = calls_of(fake_cli, task_id)
    argv = planning["argv"]
    assert argv[argv.index("--permission-mode") + 1] == "plan" and "--dangerously-skip-permissions" not in argv
    # The scenario's writes and commit were refused: nothing anywhere.
    assert git(origin, "rev-parse", "main").strip() == before
    assert git(agent.settings.project_dir, "branch", "--list", f"task/{task_id}").strip() == ""
    assert not (agent.settings.project_dir / "worktrees" / task_id).exists()
    assert any(e.get("subtype") == "permission_denied" for e in task_events(agent, task_id))

    revised = agent.client.post(f"/agent/tasks/{task_id}/request-changes", json={"text": "Add a test too."})
    assert revised.status_code == 200, revised.text
    wait_for(lambda: len(calls_of(fake_cli, task_id)) == 2, what="the revision turn")
    task = wait_status(agent, task_id, TaskStatus.plan_review, TaskStatus.failed)
    assert task.plan == "Plan v2: add hello.txt saying hi, with a test."
    revision = calls_of(fake_cli, task_id)[1]
    assert revision["argv"][revision["argv"].index("--resume") + 1] == planning_session(fake_cli, task_id)
    assert "plan" == revision["argv"][revision["argv"].index("--permission-mode") + 1]
    assert "Add a test too." in revision["prompt"]

    assert agent.client.post(f"/agent/tasks/{task_id}/approve", json={}).status_code == 200
    task = wait_status(agent, task_id, TaskStatus.completed, TaskStatus.failed)
    assert task.status is TaskStatus.completed, task.error_message
    work = calls_of(fake_cli, task_id)[2]
    assert "--resume" not in work["argv"] and "plan" not in work["argv"]
    assert "## The approved plan" in work["prompt"] and "Plan v2: add hello.txt" in work["prompt"]
    assert git(origin, "show", "main:hello.txt") == "hi\n"
    human = [e["subtype"] for e in task_events(agent, task_id) if e["kind"] == "human"]
    assert human == ["revise", "plan_approved"]


def planning_session(fake_cli, task_id):
    """The session id the first (planning) call started: the fake keeps one state file per session."""
    import json

    sessions = [json.loads(p.read_text()) | {"id": p.stem} for p in fake_cli.state.glob("*.json")]
    (first,) = [s for s in sessions if s["scenario"].get("model_text") == PLANNED["model_text"]]
    return first["id"]


def test_reject_a_plan_cancels_the_task(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    task_id = submit_task(agent, fake_task("Say hello", PLANNED, needs_plan_review=True))
    wait_status(agent, task_id, TaskStatus.plan_review, TaskStatus.failed)
    rejected = agent.client.post(f"/agent/tasks/{task_id}/reject", json={"reason": "out of scope"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "cancelled"
    assert rejected.json()["error_message"] == "plan rejected in review: out of scope"
    assert len(calls_of(fake_cli, task_id)) == 1


def test_writes_a_cli_let_through_in_planning_are_discarded(agent_factory, fake_cli, tmp_path):
    """Defence in depth: a CLI that ignores plan mode (here the fake with its permission flags
    stripped) writes and commits; Baton throws all of it away and says so."""
    sloppy = tmp_path / "bin" / "sloppy-claude"
    sloppy.write_text(f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
if "--permission-mode" in args:
    i = args.index("--permission-mode"); del args[i:i + 2]
if "--disallowedTools" in args:
    i = j = args.index("--disallowedTools")
    j += 1
    while j < len(args) and not args[j].startswith("-"):
        j += 1
    del args[i:j]
os.environ["IS_SANDBOX"] = "1"
os.execv({sys.executable!r}, [{sys.executable!r}, {str(FAKE_CLAUDE)!r}, "--dangerously-skip-permissions", *args])
""")
    sloppy.chmod(0o755)
    agent = agent_factory(config=fake_cli.config(claude_code={"command": str(sloppy)}), dispatch=True)
    origin = origin_of(agent.settings.project_dir)
    before = git(origin, "rev-parse", "main").strip()
    task_id = submit_task(agent, fake_task("Say hello", {
        "steps": [{"write": "hello.txt", "text": "hi\n"}, {"commit": "sneaky"}, {"write": "loose.txt", "text": "x"}],
        "model_text": "Plan: hello"}, needs_plan_review=True))
    task = wait_status(agent, task_id, TaskStatus.plan_review, TaskStatus.failed)
    assert task.status is TaskStatus.plan_review and task.plan == "Plan: hello", task.error_message
    assert git(agent.settings.project_dir, "branch", "--list", f"task/{task_id}").strip() == ""
    assert git(origin, "rev-parse", "main").strip() == before
    assert not (agent.settings.project_dir / "worktrees" / task_id).exists()
    said = "\n".join(e.get("text") or "" for e in task_events(agent, task_id))
    assert "changed the worktree although it ran read-only" in said
