"""Correctness review of the unattended runner (issue 14, reviewer R2): races and edges between
the workflow's sync engine, its workspace cleanup, live reload and a task's run. Real agent app,
real git, the stand-in Linear process and the fake Claude CLI, as the other runner tests."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from backend.agent.settings import AgentSettings
from backend.dispatcher.dispatcher import Dispatcher
from backend.dispatcher.policy import IssueCheck, IssueStatus, PromptError
from backend.dispatcher.recovery import reconcile
from backend.mirrors import MirrorWriter
from backend.models import NewTask, Owner, TaskStatus
from backend.store import TaskStore
from support import git, task_events, wait_for, wait_task_done
from workflow.test_cleanup import add_worktree, new_task
from workflow.test_run import ACTIVE, FlowPolicy, issue_task
from workflow.test_runner import front_matter, lin, stack, start_workflow_agent, workflow_text, wrapper  # noqa: F401

TERMINAL = IssueCheck(IssueStatus.terminal, "Done", "MT-10 moved to Done in Linear")


def test_a_rerun_waits_while_its_workspace_is_being_removed(tmp_path, lin, stack, fake_cli):
    """The cleanup removes a cancelled task's workspace (its before_remove hook still running)
    when the task is rerun: the dispatcher does not claim it into the folder being removed; once
    the folder is gone the run makes it anew (after_create runs) from the kept branch."""
    (issue,) = lin.admin.seed([{"title": "Again", "state": "Todo", "description": "FAKE: " + json.dumps({"steps": []})}])
    root = tmp_path / "ws"
    gate, removing, created = tmp_path / "gate", tmp_path / "removing", tmp_path / "created.log"
    os.mkfifo(gate)
    hooks = {"before_remove": f"touch {removing}; cat {gate} > /dev/null",  # blocks until the test writes
             "after_create": f"echo created >> {created}"}
    ids: dict[str, str] = {}

    def prepare(project: Path, store: TaskStore) -> None:
        ids["task"] = new_task(store, issue, "Again")
        (add_worktree(project, root, issue, ids["task"]) / "notes.txt").write_text("kept\n")
        store.transition(ids["task"], TaskStatus.cancelled, cancel_reason="a person cancelled it")

    front = front_matter(lin, root, hooks=hooks, agent_runtime={"kind": "claudecode", "command": fake_cli.command})
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front), config=fake_cli.config(), prepare=prepare)
    task_id, folder = ids["task"], root / "ENG-1"
    wait_for(removing.exists, timeout=60, what="the cleanup's before_remove hook to start")

    agent.store.rerun(task_id)  # a person reruns it while its folder is being removed
    agent.dispatcher.start()
    agent.dispatcher.tick()
    assert agent.store.get(task_id).status is TaskStatus.pending  # not claimed into the folder going away
    assert not created.exists()

    with open(gate, "w") as opened:  # the hook goes on; the folder goes, then the task is claimed
        opened.write("go\n")
    wait_for(created.exists, timeout=60, what="the rerun to make its workspace anew (after_create)")
    wait_for(lambda: agent.store.get(task_id).status is not TaskStatus.pending, timeout=60, what="the claim")
    assert (folder / "notes.txt").read_text() == "kept\n"  # committed to the branch before removal
    assert git(agent.settings.project_dir, "show", f"task/{task_id}:notes.txt") == "kept\n"


@dataclass
class BadContinuation(FlowPolicy):
    """A workflow whose continuation template names a variable it does not have."""

    def continuation_prompt(self, task, turn, max_turns, state):
        raise PromptError("agent.continuation_prompt: line 1: 'nope' is undefined")


def test_a_continuation_template_error_fails_the_run_as_a_template_error(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=False)
    dispatcher = agent.app.state.dispatcher
    dispatcher.ctx.workflow = BadContinuation(root=tmp_path / "ws", statuses=[ACTIVE])
    dispatcher.start()
    task = wait_task_done(agent, issue_task(agent, "MT-1", {"steps": []}))
    assert task.status is TaskStatus.failed
    assert (task.error_reason, task.error_message) == ("template_error",
                                                        "agent.continuation_prompt: line 1: 'nope' is undefined")
    assert len(fake_cli.calls()) == 1  # the first turn ran; no continuation turn started


def engine_round(agent) -> None:
    """One poll and reconcile of the workflow's sync engine, on the agent's loop (where it lives)."""
    engine = agent.runner.engine

    async def round_() -> None:
        await engine.poll()
        await engine.reconcile()

    asyncio.run_coroutine_threadsafe(round_(), agent.runner.loop).result(timeout=60)


def test_a_handoff_state_written_in_other_case_is_a_handoff_for_the_engine_too(tmp_path, lin, stack, fake_cli):
    """States compare trimmed and case-folded (SPEC 4.2): the run takes "In Review" for the
    workflow's "in review" handoff and lands; the engine must not stop that run meanwhile as
    one whose issue left the active states."""
    flag = tmp_path / "go-on"
    scenario = {"steps": [{"write": "fix.txt", "text": "fixed\n"}, {"commit": "fix"},
                          {"wait_for": str(flag), "seconds": 120}]}
    lin.admin.seed([{"title": "Fix it", "state": "Todo", "description": "FAKE: " + json.dumps(scenario)}])
    front = front_matter(lin, tmp_path / "ws", agent_runtime={"kind": "claudecode", "command": fake_cli.command})
    front["tracker"]["handoff_states"] = ["in review"]
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front, "{{ issue.description }}"),
                                 config=fake_cli.config(), dispatch=True)
    task = agent.wait_task("ENG-1")
    wait_for(lambda: fake_cli.calls(), timeout=60, what="the agent's first turn to start")

    lin.admin.move("ENG-1", "In Review")  # a person hands it over while the agent still works
    engine_round(agent)  # the first may poll with a task list from before the task was made
    engine_round(agent)
    assert agent.runner.engine.issues[task.source.id].state == "In Review"
    current = agent.store.get(task.id)
    assert current.status is TaskStatus.in_progress and current.cancel_reason is None, current.cancel_reason

    flag.touch()
    done = wait_for(lambda: (t := agent.store.get(task.id)).status.value in ("completed", "failed", "cancelled") and t,
                    timeout=120, what="the task to end")
    assert done.status is TaskStatus.completed, (done.error_reason, done.error_message, done.cancel_reason)
    assert len(fake_cli.calls()) == 1  # handed over after the first turn: no continuation turn


def test_crash_recovery_keeps_a_workflow_tasks_workspace_for_its_next_run(repo, fake_cli, tmp_path):
    """After a crash a WORKFLOW.md task goes back to pending with its work committed, and its
    workspace stays (as a clean stop keeps it): the next run reuses it, after_create does not
    run again. A task of the project's own worktrees/ is removed as before."""
    settings = AgentSettings(project_dir=repo, config=fake_cli.config())
    store = TaskStore(settings.store_path, mirrors=MirrorWriter(settings.tasks_dir))
    store.initialize()
    dispatcher = Dispatcher(settings, store)
    try:
        dead = Owner(pid=999_999, host="crashed-host", instance="gone")
        workflow_task = store.create(NewTask(title="Issue work", source={"kind": "linear", "id": "uuid-1",
                                                                        "identifier": "ENG-1"}))
        plain_task = store.create(NewTask(title="Board work"))
        folders = {workflow_task.id: tmp_path / "ws" / "ENG-1", plain_task.id: repo / "worktrees" / plain_task.id}
        for task_id, folder in folders.items():
            store.claim(dead, 60, task_id=task_id)
            folder.parent.mkdir(parents=True, exist_ok=True)
            git(repo, "worktree", "add", "-q", "-b", f"task/{task_id}", str(folder), "origin/main")
            (folder / "half.txt").write_text("half done\n")
            store.update(task_id, worktree=str(folder), branch=f"task/{task_id}")

        reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
        for task_id, folder in folders.items():
            assert store.get(task_id).status is TaskStatus.pending
            assert git(repo, "show", f"task/{task_id}:half.txt") == "half done\n"  # the work is kept
        workspace = folders[workflow_task.id]
        assert (workspace / "half.txt").read_text() == "half done\n" and not git(workspace, "status", "--porcelain")
        assert str(workspace) in git(repo, "worktree", "list")
        assert not folders[plain_task.id].exists()
    finally:
        dispatcher.shutdown()


def test_an_edited_workspace_root_moves_a_kept_workspace_for_the_next_run(agent_factory, fake_cli, tmp_path):
    """workspace.root edited while a failed task keeps its workspace under the old root: the
    rerun takes the same workspace to the new root (its files, no second after_create) rather
    than failing on a branch that is checked out in the old folder."""
    record = tmp_path / "created.log"
    agent = agent_factory(config=fake_cli.config(), dispatch=False)
    dispatcher = agent.app.state.dispatcher
    # Still active when the rerun starts: it gets a turn (a handed-off one would land without one).
    policy = FlowPolicy(root=tmp_path / "old-root", hooks={"after_create": f"echo created >> {record}; touch .setup"},
                        statuses=[ACTIVE, IssueCheck(IssueStatus.handoff, "Human Review")])
    dispatcher.ctx.workflow = policy
    dispatcher.start()
    task_id = issue_task(agent, "MT-9", {"steps": [{"write": "wip.txt", "text": "wip\n"}],
                                         "fail_once": str(tmp_path / "failed-once")})
    assert wait_task_done(agent, task_id).status is TaskStatus.failed
    assert (tmp_path / "old-root" / "MT-9" / ".setup").exists()

    policy.root = tmp_path / "new-root"  # the edit
    assert agent.client.post(f"/agent/tasks/{task_id}/rerun").status_code == 200
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, (task.error_reason, task.error_message)
    assert task.worktree == str(tmp_path / "new-root" / "MT-9")
    assert record.read_text() == "created\n"  # the same workspace, moved: after_create ran once
    assert fake_cli.calls()[-1]["cwd"] == str(tmp_path / "new-root" / "MT-9")
    assert not (tmp_path / "old-root" / "MT-9").exists()


def test_a_stop_of_the_dispatcher_ends_a_cancelled_runs_before_remove_hook(agent_factory, fake_cli, tmp_path):
    """A run cancelled because its issue closed gives before_remove its whole timeout; a
    forced stop (as a shutdown) ends that hook, so it never holds the agent's exit."""
    gate, removing = tmp_path / "gate", tmp_path / "removing"
    os.mkfifo(gate)
    agent = agent_factory(config=fake_cli.config(), dispatch=False)
    dispatcher = agent.app.state.dispatcher
    dispatcher.ctx.workflow = FlowPolicy(root=tmp_path / "ws", statuses=[TERMINAL], hook_timeout=3600,
                                         hooks={"before_remove": f"touch {removing}; cat {gate} > /dev/null"})
    dispatcher.start()
    task_id = issue_task(agent, "MT-10", {"steps": [{"write": "wip.txt", "text": "wip\n"}]})
    wait_for(removing.exists, timeout=60, what="the cancelled run's before_remove hook to start")

    dispatcher.stop(force=True)  # waits for the runs it stops
    task = agent.store.get(task_id)
    assert task.status is TaskStatus.cancelled, task.status  # the run ended: the hook did not hold it
    assert "hook before_remove: stopped" in "\n".join(
        e.get("text", "") for e in task_events(agent, task_id) if e["kind"] == "baton")


def test_an_edited_runtime_applies_to_the_workflows_tasks_that_run_again(tmp_path, lin, stack):
    """A task records its runtime when it is made: an edit of agent_runtime.kind moves the
    workflow's tasks that may run again (here a failed one) to the new runtime, so a retry runs
    on what the workflow says now, not on a runtime it no longer configures."""
    lin.admin.seed([{"title": "Fix login", "state": "Todo"}])
    codex = wrapper(tmp_path / "bin", "codex", "fake_codex.py")
    opencode = wrapper(tmp_path / "bin", "opencode", "fake_opencode.py")
    front = front_matter(lin, tmp_path / "ws", agent_runtime={"kind": "codex", "command": f"{codex} app-server"})
    # OpenCode without a `permission` config asks nothing: a reload to it needs the flag (R1-M2).
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front), guardrails_flag=True)
    task = agent.wait_task("ENG-1")
    assert task.runtime == "codex"
    agent.store.claim(Owner(pid=1, host="earlier", instance="earlier"), 60, task.id)
    agent.store.transition(task.id, TaskStatus.failed, error_reason="agent_error", error_message="boom")

    agent.write(workflow_text({**front, "agent_runtime": {"kind": "opencode", "command": str(opencode)}}))
    wait_for(lambda: agent.runner.runtime_name == "opencode", what="the edit to apply")
    wait_for(lambda: agent.store.get(task.id).runtime == "opencode", what="the failed task to follow the runtime")
    assert "codex" not in agent.dispatcher.ctx.runtimes  # agent.yaml configures claude_code only


def test_the_start_move_never_undoes_a_handoff_made_before_it(tmp_path, lin, stack, fake_cli):
    """The engine moves a started task's issue to on_start once per run; should that come only
    after the issue was handed over (a tracker outage at the start, a slow round), the handoff
    stays: the issue is not moved back to In Progress."""
    flag = tmp_path / "go-on"
    scenario = {"steps": [{"write": "fix.txt", "text": "fixed\n"}, {"commit": "fix"},
                          {"wait_for": str(flag), "seconds": 120}]}
    lin.admin.seed([{"title": "Fix it", "state": "Todo", "description": "FAKE: " + json.dumps(scenario)}])
    front = front_matter(lin, tmp_path / "ws", agent_runtime={"kind": "claudecode", "command": fake_cli.command})
    front["tracker"]["on_start"] = "In Progress"
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front, "{{ issue.description }}"),
                                 config=fake_cli.config())
    task = agent.wait_task("ENG-1")
    # The runner's own rounds come hourly from now on: this test plays the late round itself.
    source = agent.runner.source
    source.reconcile_seconds = 3600
    wait_for(lambda: source._next_reconcile - time.monotonic() > 600, timeout=30,
             what="the runner's rounds to be hourly")
    agent.dispatcher.start()
    wait_for(lambda: fake_cli.calls(), timeout=60, what="the agent's first turn to start")

    lin.admin.move("ENG-1", "In Review")  # handed over before the engine's start move
    engine_round(agent)
    engine_round(agent)
    assert lin.admin.issue("ENG-1")["state"] == "In Review"
    flag.touch()
    done = wait_for(lambda: (t := agent.store.get(task.id)).status.value in ("completed", "failed", "cancelled") and t,
                    timeout=120, what="the task to end")
    assert done.status is TaskStatus.completed, (done.error_reason, done.error_message, done.cancel_reason)
