"""Attempt branches left on the origin by an earlier attempt (the project host crashed mid-turn,
or a lost worker came back and pushed) are never read, and go before the task's next remote turn."""

from __future__ import annotations

from backend.models import TaskStatus
from conftest import fake_task
from support import git, origin_of, submit_task, wait_task_done


def test_an_earlier_attempts_branch_is_dropped_and_never_landed(dask_cluster, dask_config, agent_factory):
    cluster = dask_cluster(workers=("box-a",))
    agent = agent_factory(config=dask_config(cluster))
    project = agent.settings.project_dir
    origin = origin_of(project)
    task_id = submit_task(agent, fake_task("Add new", {"steps": [
        {"write": "new.txt", "text": "new\n"}, {"commit": "feature: new"}]}))
    # What a crashed earlier attempt left: a branch of the task's with work nobody tested.
    git(project, "checkout", "-q", "-b", "stale")
    (project / "stale.txt").write_text("stale\n")
    git(project, "add", "stale.txt")
    git(project, "commit", "-q", "-m", "stale attempt")
    stale = f"baton/attempts/{task_id}/{task_id}-r1-0000dead"
    git(project, "push", "-q", "origin", f"HEAD:refs/heads/{stale}")
    git(project, "checkout", "-q", "main")

    agent.client.post("/agent/dispatcher/start").raise_for_status()
    task = wait_task_done(agent, task_id)

    assert task.status is TaskStatus.completed, task.error_message
    assert task.worker == "box-a"
    assert git(origin, "show", "main:new.txt") == "new\n"
    assert "stale.txt" not in git(origin, "ls-tree", "--name-only", "main")
    assert git(origin, "for-each-ref", "--format=%(refname)", "refs/heads/baton/").strip() == ""
