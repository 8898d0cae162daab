"""Workspaces of a workflow's tasks are removed once the tasks are done with them
(backend/workflow/cleanup.py, run by the runner): at start-up those of issues already terminal
(SPEC 8.6), and after a reconcile those whose issue left the active states. Before removal the
work left in a workspace is committed to the task's branch (kept) and `before_remove` runs.
Folders no task names, links and workspaces of active issues stay."""

from __future__ import annotations

import logging
from pathlib import Path

from backend.models import NewTask, Owner, TaskStatus
from backend.store import TaskStore
from backend.workflow.keys import workspace_key
from support import git, wait_for
from workflow.test_runner import front_matter, lin, stack, start_workflow_agent, workflow_text  # noqa: F401

NOTES = "what the agent left uncommitted\n"


def new_task(store: TaskStore, issue: dict, title: str) -> str:
    source = {"kind": "linear", "id": issue["id"], "identifier": issue["identifier"], "url": issue["url"]}
    return store.create(NewTask(title=title, source=source), f"source:linear:{issue['id']}").id


def add_worktree(project: Path, root: Path, issue: dict, task_id: str) -> Path:
    """The workspace a former run of the task left: a worktree on task/<id>."""
    path = root / workspace_key(issue["identifier"])
    root.mkdir(parents=True, exist_ok=True)
    git(project, "worktree", "add", "--quiet", "-b", f"task/{task_id}", str(path), "main")
    return path


def hook_front(lin, root: Path, log: Path, **sections) -> dict:
    script = f'echo "$BATON_ISSUE_IDENTIFIER: $(cat notes.txt 2>/dev/null)" >> {log}'
    return front_matter(lin, root, hooks={"before_remove": script}, **sections)


def test_at_start_the_workspaces_of_terminal_issues_go_and_the_rest_stay(tmp_path, lin, stack, caplog):
    caplog.set_level(logging.INFO, logger="backend.workflow.runner")
    done, active, linked = lin.admin.seed([{"title": "Shipped", "state": "Done"}, {"title": "Open", "state": "Todo"},
                                           {"title": "Linked", "state": "Canceled"}])
    root, log, outside = tmp_path / "ws", tmp_path / "removed.log", tmp_path / "outside"
    ids: dict[str, str] = {}

    def prepare(project: Path, store: TaskStore) -> None:
        for issue in (done, active, linked):
            ids[issue["identifier"]] = new_task(store, issue, issue["identifier"])
        (add_worktree(project, root, done, ids["ENG-1"]) / "notes.txt").write_text(NOTES)
        add_worktree(project, root, active, ids["ENG-2"])
        outside.mkdir()
        (outside / "keep.txt").write_text("not Baton's\n")
        (root / "ENG-3").symlink_to(outside)  # a link where a workspace would be: never followed
        (root / "stray").mkdir()
        (root / "stray" / "file.txt").write_text("no task names this folder\n")

    agent = start_workflow_agent(stack, tmp_path, workflow_text(hook_front(lin, root, log)), prepare=prepare)
    project = agent.settings.project_dir
    # Done while the agent started (before it served a request).
    assert not (root / "ENG-1").exists()
    assert log.read_text() == f"ENG-1: {NOTES}"  # before_remove ran in it, before it went
    branch = f"task/{ids['ENG-1']}"
    assert git(project, "show", f"{branch}:notes.txt") == NOTES  # the work is on the kept branch
    assert (root / "ENG-2" / "README.md").exists()
    assert (root / "ENG-3").is_symlink() and (outside / "keep.txt").read_text() == "not Baton's\n"
    assert (root / "stray" / "file.txt").exists()
    assert str(root / "ENG-1") not in git(project, "worktree", "list")
    # By the start-up cleanup itself (not a reconcile's, which would come later).
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("workflow start-up:")]
    assert len(started) == 1 and str(root / "ENG-1") in started[0], started


def test_a_workspace_goes_once_its_issue_leaves_the_active_states(tmp_path, lin, stack):
    leaving, failing = lin.admin.seed([{"title": "Leaving", "state": "Todo"}, {"title": "Retry me", "state": "Todo"}])
    root, log = tmp_path / "ws", tmp_path / "removed.log"
    ids: dict[str, str] = {}

    def prepare(project: Path, store: TaskStore) -> None:
        for issue in (leaving, failing):
            ids[issue["identifier"]] = new_task(store, issue, issue["identifier"])
            (add_worktree(project, root, issue, ids[issue["identifier"]]) / "notes.txt").write_text(NOTES)
        # A run of ENG-2 failed: its issue is still active, so it is retried in the same workspace.
        store.claim(Owner(pid=1, host="earlier", instance="earlier"), 60, ids["ENG-2"])
        store.transition(ids["ENG-2"], TaskStatus.failed, error_reason="agent_error", error_message="boom")

    agent = start_workflow_agent(stack, tmp_path, workflow_text(hook_front(lin, root, log)), prepare=prepare)
    assert (root / "ENG-1").exists() and (root / "ENG-2").exists()  # nothing terminal at start

    lin.admin.move("ENG-1", "Backlog")
    agent.runner.refresh()
    wait_for(lambda: not (root / "ENG-1").exists(), timeout=30, what="ENG-1's workspace to be removed")
    task = agent.store.get(ids["ENG-1"])
    assert task.status is TaskStatus.cancelled and "ENG-1 left the active states" in task.cancel_reason
    assert log.read_text() == f"ENG-1: {NOTES}"
    assert git(agent.settings.project_dir, "show", f"task/{ids['ENG-1']}:notes.txt") == NOTES
    assert (root / "ENG-2" / "notes.txt").read_text() == NOTES  # active: kept for its next run
