"""Fixes of issue 14's reviews (F-B2): a workspace path holding something Baton did not make, a
kept workspace used by a run without the workflow, a handed-off task interrupted while landing,
the gateway's hint for a refused state, and the failure comment's first line.

Real agent app, real git, the fake Claude CLI, the Linear stand-in as a process; `FlowPolicy`
(test_run.py) is the WorkflowPolicy with scripted issue states."""

from __future__ import annotations

import asyncio
import json

import pytest

from backend.models import NewTask, Owner, TaskStatus
from backend.sources.config import SourceConfig
from backend.sources.engine import SyncEngine, _first_line
from backend.sources.gateway import SOURCE_STATES_HINT, WORKFLOW_STATES_HINT, call_tool
from backend.sources.tools import ToolGate
from backend.trackers import make_tracker
from backend.web.errors import ApiError
from backend.workflow.taskside import StoreTaskSide
from conftest import fake_task
from support import git, origin_of, wait_for, wait_task_done
from workflow.test_run import ACTIVE, HANDOFF, baton_says, flow, issue_task, registered  # noqa: F401

OWNER = Owner(pid=1, host="test", instance="fix-b2")


# ----- 1. a workspace path holding something Baton did not make ----------------------------------


def _plain_folder(project, path) -> None:
    path.mkdir(parents=True)
    (path / "mine.txt").write_text("a person's file\n")


def _a_file(project, path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("a person's file\n")


def _other_branch(project, path) -> None:
    path.parent.mkdir(parents=True)
    git(project, "worktree", "add", "--quiet", "-b", "someone-else", str(path), "main")
    (path / "mine.txt").write_text("a person's file\n")


@pytest.mark.parametrize("make", [_plain_folder, _a_file, _other_branch], ids=["folder", "file", "other-worktree"])
def test_a_workspace_path_held_by_something_else_fails_the_run_and_is_left_alone(flow, fake_cli, make):
    agent, policy = flow()
    project, path = agent.settings.project_dir, policy.root / "MT-1"
    make(project, path)
    before = sorted(p.name for p in path.iterdir()) if path.is_dir() else None
    task = wait_task_done(agent, issue_task(agent, "MT-1", {"steps": [{"write": "x.txt", "text": "x\n"}]}))
    assert task.status is TaskStatus.failed and task.error_reason == "internal"
    assert task.error_message == f"{path} is in the way: a folder Baton did not make; move it away"
    assert fake_cli.calls() == []
    if path.is_dir():
        assert (path / "mine.txt").read_text() == "a person's file\n"
        assert sorted(p.name for p in path.iterdir()) == before  # nothing placed there, nothing removed
    else:
        assert path.read_text() == "a person's file\n"
    if make is _other_branch:
        assert registered(project, path)
        assert git(path, "symbolic-ref", "HEAD").strip() == "refs/heads/someone-else"
        assert git(path, "status", "--porcelain").strip() == "?? mine.txt"  # not committed by Baton


def test_the_default_worktree_path_is_still_made_anew_over_a_leftover(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=False)
    task = agent.store.create(NewTask(**fake_task("Plain", {"steps": [{"write": "p.txt", "text": "p\n"}]})))
    leftover = agent.settings.project_dir / "worktrees" / task.id
    leftover.mkdir(parents=True)
    (leftover / "junk.txt").write_text("junk\n")
    agent.app.state.dispatcher.start()
    done = wait_task_done(agent, task.id)
    assert done.status is TaskStatus.completed, done.error_message


# ----- 2. a kept WORKFLOW.md workspace, run without the workflow ---------------------------------


def test_a_run_without_the_workflow_reuses_the_tasks_kept_workspace(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=False)  # no policy: as --no-workflow
    project = agent.settings.project_dir
    task = agent.store.create(NewTask(**fake_task("Kept", {"steps": [{"write": "more.txt", "text": "more\n"}]},
                                                  source={"kind": "linear", "id": "uuid-MT-2",
                                                          "identifier": "MT-2"})))
    kept = tmp_path / "ws" / "MT-2"
    kept.parent.mkdir(parents=True)
    git(project, "worktree", "add", "--quiet", "-b", f"task/{task.id}", str(kept), "main")
    (kept / "earlier.txt").write_text("earlier\n")
    git(kept, "add", "earlier.txt")
    git(kept, "commit", "--quiet", "-m", "an earlier run")
    # As a workflow run left it: failed, its worktree recorded and kept.
    assert agent.store.claim(OWNER, 60, task_id=task.id) is not None
    agent.store.transition(task.id, TaskStatus.failed, branch=f"task/{task.id}", worktree=str(kept),
                           error_reason="max_turns", error_message="turns ran out")
    agent.store.rerun(task.id)
    agent.app.state.dispatcher.start()

    done = wait_task_done(agent, task.id)
    assert done.status is TaskStatus.completed, done.error_message
    (call,) = fake_cli.calls()
    assert call["cwd"] == str(kept)
    assert f"worktree {kept} on task/{task.id} (kept from an earlier run)" in baton_says(agent, task.id)
    landed = git(origin_of(project), "log", "--format=%s", "main")
    assert "an earlier run" in landed


# ----- 3. handed off, then interrupted: the next run lands -------------------------------------


def test_a_rerun_whose_issue_is_handed_off_already_lands_without_another_turn(flow, fake_cli, tmp_path):
    agent, policy = flow(statuses=[HANDOFF])
    task_id = issue_task(agent, "MT-3", {"steps": [{"write": "work.txt", "text": "w\n"}],
                                         "fail_once": str(tmp_path / "failed-once")})
    first = wait_task_done(agent, task_id)
    assert first.status is TaskStatus.failed and policy.checks == 0  # a first run asks after its turn only
    assert agent.client.post(f"/agent/tasks/{task_id}/rerun").status_code == 200
    done = wait_for(lambda: (t := agent.store.get(task_id)).status is TaskStatus.completed and t, timeout=60,
                    what="the rerun to land")
    assert len(fake_cli.calls()) == 1 and policy.checks == 1
    assert done.worktree == str(policy.root / "MT-3") and done.error_reason is None
    assert git(origin_of(agent.settings.project_dir), "show", "main:work.txt") == "w\n"
    assert "MT-3 is in Human Review already: landing its work without another turn" in baton_says(agent, done.id)


def test_a_rerun_whose_issue_is_still_active_gets_its_turns(flow, fake_cli, tmp_path):
    agent, policy = flow(statuses=[ACTIVE, HANDOFF])
    task_id = issue_task(agent, "MT-4", {"steps": [{"write": "work.txt", "text": "w\n"}],
                                         "fail_once": str(tmp_path / "failed-once")})
    assert wait_task_done(agent, task_id).status is TaskStatus.failed
    assert agent.client.post(f"/agent/tasks/{task_id}/rerun").status_code == 200
    wait_for(lambda: agent.store.get(task_id).status is TaskStatus.completed, timeout=60, what="the rerun to land")
    assert len(fake_cli.calls()) == 2 and policy.checks == 2  # asked at the start (active), after the turn


def test_the_engine_keeps_a_pending_task_that_ran_and_whose_issue_is_handed_off(agent_factory, fake_cli,
                                                                                  linear_standin):
    agent = agent_factory(config=fake_cli.config(), dispatch=False)
    lin = linear_standin
    ran, fresh = lin.admin.seed([{"title": "Interrupted", "state": "Todo"}, {"title": "Never ran", "state": "Todo"}])
    config = SourceConfig.model_validate(lin.source(tools=False, handoff_states=["In Review"]))
    engine = SyncEngine(config, make_tracker(config, environ=lin.environ),
                        StoreTaskSide(agent.store, agent.app.state.dispatcher), project_id="p", engine_id="e")

    async def rounds(count: int) -> None:
        try:
            for _ in range(count):
                await engine.poll()
                await engine.reconcile()
        finally:
            await engine.tracker.aclose()

    asyncio.run(rounds(2))
    tasks = {t.source.identifier: t for t in agent.store.list_tasks() if t.source is not None}
    assert set(tasks) == {ran["identifier"], fresh["identifier"]}
    interrupted = tasks[ran["identifier"]].id
    assert agent.store.claim(OWNER, 60, task_id=interrupted) is not None
    agent.store.transition(interrupted, TaskStatus.pending)  # Ctrl+C while it landed
    lin.admin.move(ran["identifier"], "In Review")
    lin.admin.move(fresh["identifier"], "In Review")
    engine.tracker = make_tracker(config, environ=lin.environ)
    asyncio.run(rounds(2))

    kept = agent.store.get(interrupted)
    assert kept.status is TaskStatus.pending and kept.cancel_reason is None
    # Never ran: nothing was handed over; its issue left the active states.
    assert agent.store.get(tasks[fresh["identifier"]].id).status is TaskStatus.cancelled


# ----- 4. the gateway's hint for a refused state --------------------------------------------------


class _Source:
    def __init__(self, config: SourceConfig) -> None:
        self.config, self.tracker, self.engine = config, None, None


@pytest.mark.parametrize("hint", [None, WORKFLOW_STATES_HINT], ids=["dashboard", "agent"])
def test_a_refused_state_says_where_states_are_named(tmp_path, hint):
    config = SourceConfig.model_validate({"kind": "linear", "api_key": "$LIN", "filter": {"team": "ENG"},
                                          "handoff_states": ["In Review"]})
    gate = ToolGate(tmp_path / "tool-key", "http://127.0.0.1:1")
    token = gate.grant("p", "linear", "uuid-1").token

    async def running(project_id: str, issue_id: str) -> dict:
        return {"source": {"identifier": "ENG-1"}}

    async def call() -> None:
        await call_tool(client="127.0.0.1", authorization=f"Bearer {token}",
                        body=json.dumps({"tool": "tracker_update_state", "arguments": {"state": "Backlog"}}).encode(),
                        gate=gate, source_for=lambda _: _Source(config), running_task=running,
                        **({"states_hint": hint} if hint else {}))

    with pytest.raises(ApiError) as refused:
        asyncio.run(call())
    message = refused.value.message
    assert refused.value.code == "out_of_scope" and "In Review" in message and "'Backlog'" in message
    assert (hint or SOURCE_STATES_HINT) in message
    assert (WORKFLOW_STATES_HINT in message) == (hint is not None)


# ----- 5. the failure comment's first line -------------------------------------------------------


def test_a_first_line_announcing_more_takes_the_next_line():
    text = "the tests failed. Its output ends:\n\n  FAILED tests/test_x.py::test_y - assert 1 == 2\nmore\n"
    assert _first_line(text, 200) == "the tests failed. Its output ends: FAILED tests/test_x.py::test_y - assert 1 == 2"
    long = "Its output ends:\n" + "y" * 400
    assert len(_first_line(long, 200)) == 200 and _first_line(long, 200).startswith("Its output ends: yyy")
    assert _first_line("boom\nTraceback:\n", 200) == "boom"
    assert _first_line("nothing after:\n\n", 200) == "nothing after:"
