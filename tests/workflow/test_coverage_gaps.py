"""Gaps in the workflow tests, each through a real agent app (tests/workflow/test_runner.py's
start_workflow_agent) with a stand-in Linear and the fake Claude CLI:

- agent.max_concurrent_agents_by_state holds an issue back while another of its state runs,
  though workers are free (the real WorkflowPolicyImpl.claimable, in the dispatcher's claims);
- a custom active state (not Symphony's defaults) is dispatched and kept active across turns;
- a failing before_remove hook is logged and ignored: the landed task stays completed and its
  workspace is removed anyway.

The Linear stand-in has no "Rework" state: the custom active state is "Backlog" (one of its
states that no default active_states names).
"""

from __future__ import annotations

import json
from pathlib import Path

from support import git, wait_for
from workflow.test_runner import front_matter, lin, stack, start_workflow_agent, workflow_text  # noqa: F401 - fixtures

WAIT = 120  # seconds: a generous deadline (the machine is shared)
HANDOFF = {"mcp": "tracker_update_state", "arguments": {"state": "In Review"}}  # front_matter's handoff state
FINISHED = ("completed", "failed", "cancelled")


def fake(steps: list[dict], *on_resume: list[dict]) -> str:
    """An issue description the fake CLI follows (the template renders it into the prompt)."""
    return "FAKE: " + json.dumps({"steps": steps, "on_resume": [{"steps": s} for s in on_resume]})


def claude_runtime(fake_cli) -> dict:
    return {"kind": "claudecode", "command": fake_cli.command}


def statuses(agent) -> dict[str, str]:
    """Each workflow task's status by its issue's identifier, as the agent's API lists them."""
    answer = agent.client.get("/agent/tasks")
    assert answer.status_code == 200, answer.text
    return {t["source"]["identifier"]: t["status"] for tasks in answer.json().values() for t in tasks
            if t.get("source")}


def finished(agent, task_id: str):
    return wait_for(lambda: (t := agent.store.get(task_id)).status.value in FINISHED and t,
                    timeout=WAIT, what=f"task {task_id} to end")


def test_max_concurrent_agents_by_state_holds_the_second_todo_issue_back(tmp_path, lin, stack, fake_cli):
    # Each run says its turn began (marker), then holds it until the test releases it.
    def scenario(name: str) -> str:
        return fake([{"marker": str(tmp_path / f"began-{name}")}, {"wait_for": str(tmp_path / f"go-{name}"),
                                                                    "seconds": 300},
                     {"write": f"{name}.txt", "text": f"{name}\n"}, {"commit": name}, HANDOFF])

    lin.admin.seed([{"title": "One", "state": "Todo", "description": scenario("ENG-1")},
                    {"title": "Two", "state": "Todo", "description": scenario("ENG-2")}])
    # No on_start: both issues stay in Todo while they run, so the per-state limit keeps applying.
    front = front_matter(lin, tmp_path / "ws", polling={"interval_ms": 1000}, agent_runtime=claude_runtime(fake_cli),
                         agent={"max_concurrent_agents": 3, "max_turns": 3,
                                "max_concurrent_agents_by_state": {"todo": 1}})
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front, "{{ issue.description }}"),
                                 config=fake_cli.config(), dispatch=True)
    tasks = {ident: agent.wait_task(ident, timeout=WAIT) for ident in ("ENG-1", "ENG-2")}

    first = wait_for(lambda: next((i for i, s in statuses(agent).items() if s == "in_progress"), None),
                     timeout=WAIT, what="one of the two tasks to start")
    second = "ENG-2" if first == "ENG-1" else "ENG-1"
    wait_for(lambda: (tmp_path / f"began-{first}").exists(), timeout=WAIT, what=f"{first}'s turn to begin")

    # Its turn is under way and workers are free: a claim round of the dispatcher now (the real
    # one, called here rather than waited for) must still leave the second Todo issue alone.
    assert agent.dispatcher.ctx.slots.limit == 3 and agent.dispatcher.busy() == 1
    assert agent.dispatcher.tick() == 0
    assert agent.dispatcher.tick() == 0
    assert statuses(agent) == {first: "in_progress", second: "pending"}
    assert not (tmp_path / f"began-{second}").exists()
    assert [c["env"]["TASK_ID"] for c in fake_cli.calls()] == [tasks[first].id]

    (tmp_path / f"go-{first}").touch()
    wait_for(lambda: (tmp_path / f"began-{second}").exists(), timeout=WAIT,
             what=f"{second} to start once {first} let go of the Todo slot")
    assert agent.store.get(tasks[second].id).status.value == "in_progress"
    (tmp_path / f"go-{second}").touch()
    for ident in (first, second):
        done = finished(agent, tasks[ident].id)
        assert done.status.value == "completed", (ident, done.error_reason, done.error_message)


def test_an_issue_in_a_custom_active_state_is_dispatched_and_stays_active(tmp_path, lin, stack, fake_cli):
    # Turn 1 leaves the issue in Backlog: only if that counts as active does the same session get
    # a continuation turn (else the run would stop and the task be cancelled); turn 2 hands over.
    lin.admin.seed([{"title": "From the backlog", "state": "Backlog", "description": fake(
        [{"write": "backlog.txt", "text": "picked up\n"}, {"commit": "from the backlog"}], [HANDOFF])}])
    front = front_matter(lin, tmp_path / "ws", polling={"interval_ms": 1000}, agent_runtime=claude_runtime(fake_cli))
    front["tracker"]["active_states"] = ["Todo", "Backlog"]
    body = "State: {{ issue.state }}\n\n{{ issue.description }}"
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front, body), config=fake_cli.config(), dispatch=True)

    task = agent.wait_task("ENG-1", timeout=WAIT)
    assert task.runtime == "claude_code" and task.title == "From the backlog"
    done = finished(agent, task.id)
    assert done.status.value == "completed", (done.error_reason, done.error_message, done.cancel_reason)
    first, second = fake_cli.calls()
    assert first["prompt"].startswith("State: Backlog\n"), first["prompt"][:200]
    assert "--resume" not in first["argv"] and "--resume" in second["argv"]
    assert lin.admin.issue("ENG-1")["state"] == "In Review"
    assert git(agent.settings.project_dir, "show", "origin/main:backlog.txt") == "picked up\n"


def test_a_failing_before_remove_hook_is_ignored(tmp_path, lin, stack, fake_cli):
    lin.admin.seed([{"title": "Land it", "state": "Todo", "description": fake(
        [{"write": "landed.txt", "text": "landed\n"}, {"commit": "land it"}, HANDOFF])}])
    ws_root = tmp_path / "ws"
    front = front_matter(lin, ws_root, polling={"interval_ms": 1000}, agent_runtime=claude_runtime(fake_cli),
                         hooks={"before_remove": 'echo "before_remove of $BATON_ISSUE_IDENTIFIER"; exit 7'})
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front, "{{ issue.description }}"),
                                 config=fake_cli.config(), dispatch=True)

    task = agent.wait_task("ENG-1", timeout=WAIT)
    done = finished(agent, task.id)
    assert done.status.value == "completed", (done.error_reason, done.error_message)
    workspace = ws_root / "ENG-1"
    [call] = fake_cli.calls()
    assert Path(call["cwd"]).resolve() == workspace.resolve()  # it ran there
    wait_for(lambda: not workspace.exists(), timeout=WAIT, what="the landed task's workspace to be removed")

    hooks_log = Path(agent.runner.logs_dir) / f"{task.id}.hooks.log"
    text = hooks_log.read_text()
    assert "before_remove of ENG-1" in text, text
    assert "=== hook before_remove: failed (exit 7)" in text, text
    assert agent.store.get(task.id).status.value == "completed"  # the hook's failure changed nothing
    assert git(agent.settings.project_dir, "show", "origin/main:landed.txt") == "landed\n"
    assert str(workspace) not in git(agent.settings.project_dir, "worktree", "list")
