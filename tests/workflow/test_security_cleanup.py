"""Security review (issue 14, R1): the workspace cleanup removes only what Baton made there.

Baton only ever makes git worktrees under workspace.root. A plain folder where a task's
workspace would be (a Symphony workspace of the same issue, or files of the person's own once
workspace.root was edited to point at them) is not Baton's: the cleanup leaves it, and does not
run the repository's before_remove hook in it. Real agent app, real git, the stand-in Linear."""

from __future__ import annotations

import logging
from pathlib import Path

from backend.models import TaskStatus
from backend.store import TaskStore
from support import wait_for
from workflow.test_cleanup import hook_front, new_task
from workflow.test_runner import lin, stack, start_workflow_agent, workflow_text  # noqa: F401


def test_a_plain_folder_where_a_workspace_would_be_is_left_alone(tmp_path, lin, stack, caplog):
    caplog.set_level(logging.INFO, logger="backend.workflow.runner")
    (done,) = lin.admin.seed([{"title": "Shipped", "state": "Done"}])
    root, log = tmp_path / "ws", tmp_path / "removed.log"

    def prepare(project: Path, store: TaskStore) -> None:
        task_id = new_task(store, done, "Shipped")
        # Cancelled: every later cleanup round (after each reconcile) is done with it too.
        store.transition(task_id, TaskStatus.cancelled, cancel_reason="a person cancelled it")
        (root / "ENG-1").mkdir(parents=True)  # not a worktree: nothing Baton made
        (root / "ENG-1" / "mine.txt").write_text("the person's own work\n")

    agent = start_workflow_agent(stack, tmp_path, workflow_text(hook_front(lin, root, log)), prepare=prepare)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("workflow start-up:")]
    assert len(lines) == 1 and "left" in lines[0] and "git knows no worktree there" in lines[0], lines
    assert (root / "ENG-1" / "mine.txt").read_text() == "the person's own work\n"
    assert not log.exists()  # the repository's before_remove hook never ran in it

    # Nor does a later round (after a reconcile) remove it, or say so again.
    earlier = agent.runner._cleaning  # the round after the start's first poll, if it came yet
    agent.runner.refresh()
    wait_for(lambda: (now := agent.runner._cleaning) is not None and now is not earlier and now.done(),
             timeout=30, what="a cleanup round after a later reconcile")
    assert (root / "ENG-1" / "mine.txt").exists() and not log.exists()
    said = [r.getMessage() for r in caplog.records if "git knows no worktree there" in r.getMessage()]
    assert len(said) == 1, said
