"""Start-up reconciliation after a crash, against real repositories (no agent process needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.agent.settings import AgentSettings
from backend.dispatcher.dispatcher import Dispatcher
from backend.dispatcher.recovery import reconcile
from backend.mirrors import MirrorWriter
from backend.models import NewTask, Owner, TaskStatus
from backend.store import TaskStore
from support import git

DEAD_OWNER = Owner(pid=999_999, host="crashed-host", instance="gone")


@pytest.fixture
def setup(repo, fake_cli):
    settings = AgentSettings(project_dir=repo, config=fake_cli.config(max_attempts=3))
    store = TaskStore(settings.store_path, mirrors=MirrorWriter(settings.tasks_dir))
    store.initialize()
    dispatcher = Dispatcher(settings, store)
    yield settings, store, dispatcher
    dispatcher.shutdown()


def orphan(store: TaskStore, title: str = "orphan", **fields):
    task = store.create(NewTask(title=title))
    store.claim(DEAD_OWNER, 60, task_id=task.id)
    return store.update(task.id, **fields) if fields else store.get(task.id)


def failed_with_worktree(store: TaskStore, repo, error_reason: str):
    """An orphan that failed and left its worktree (on its own branch) behind."""
    task = orphan(store)
    store.transition(task.id, TaskStatus.failed, error_reason=error_reason, error_message="x")
    path = repo / "worktrees" / task.id
    git(repo, "worktree", "add", "-q", "-b", f"task/{task.id}", str(path), "origin/main")
    return task, path


def test_in_progress_task_of_a_dead_owner_goes_back_to_pending(setup):
    settings, store, dispatcher = setup
    task = orphan(store)
    done = reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    recovered = store.get(task.id)
    assert recovered.status is TaskStatus.pending
    assert recovered.owner is None and recovered.lease_expires_at is None and recovered.attempts == 1
    assert any(task.id in line and "back to pending" in line for line in done)


def test_task_interrupted_too_often_fails(setup):
    settings, store, dispatcher = setup
    task = orphan(store)
    for _ in range(2):  # three claims in all: attempts == max_attempts
        store.transition(task.id, TaskStatus.pending)
        store.claim(DEAD_OWNER, 60, task_id=task.id)
    assert store.get(task.id).attempts == 3
    reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    failed = store.get(task.id)
    assert failed.status is TaskStatus.failed and failed.error_reason == "internal"
    assert "interrupted 3 times" in failed.error_message


def test_task_that_landed_before_the_crash_is_completed(setup):
    settings, store, dispatcher = setup
    repo = settings.project_dir
    git(repo, "commit", "--allow-empty", "-m", "landed just before the crash")
    git(repo, "push", "origin", "main")
    sha = git(repo, "rev-parse", "HEAD").strip()
    task = orphan(store, commit_sha=sha)
    reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    done = store.get(task.id)
    assert done.status is TaskStatus.completed and done.commit_sha == sha


def test_unlanded_commit_sha_does_not_count_as_landed(setup):
    settings, store, dispatcher = setup
    repo = settings.project_dir
    git(repo, "checkout", "-q", "-b", "side")
    git(repo, "commit", "--allow-empty", "-m", "never pushed to main")
    sha = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    task = orphan(store, commit_sha=sha)
    reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    assert store.get(task.id).status is TaskStatus.pending


def test_orphaned_worktree_is_removed_and_its_work_kept_on_the_branch(setup):
    settings, store, dispatcher = setup
    repo = settings.project_dir
    task, path = failed_with_worktree(store, repo, "agent_error")
    (path / "unsaved.txt").write_text("precious\n")
    reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    assert not path.exists()
    assert git(repo, "show", f"task/{task.id}:unsaved.txt") == "precious\n"


def test_branch_of_a_completed_task_is_deleted_and_others_kept(setup):
    settings, store, dispatcher = setup
    repo = settings.project_dir
    done, failed = store.create(NewTask(title="done")), store.create(NewTask(title="failed"))
    for task, end in ((done, TaskStatus.completed), (failed, TaskStatus.failed)):
        store.claim(DEAD_OWNER, 60, task_id=task.id)
        store.transition(task.id, end)
        git(repo, "branch", f"task/{task.id}")
    reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    branches = git(repo, "branch", "--list", "task/*")
    assert f"task/{done.id}" not in branches and f"task/{failed.id}" in branches


def test_stale_index_lock_is_removed(setup):
    settings, store, dispatcher = setup
    lock = settings.project_dir / ".git" / "index.lock"
    lock.write_text("")
    done = reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    assert not lock.exists() and any("index.lock" in line for line in done)


def test_recovery_stops_a_leftover_agent_only_if_it_is_that_tasks(setup):
    settings, store, dispatcher = setup
    task, other = orphan(store, "mine"), orphan(store, "other")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    mine = subprocess.Popen(sleeper, start_new_session=True, env={**os.environ, "TASK_ID": task.id})
    stranger = subprocess.Popen(sleeper, start_new_session=True)  # e.g. a reused pid
    try:
        store.update(task.id, agent_pid=mine.pid)
        store.update(other.id, agent_pid=stranger.pid)
        reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
        assert mine.wait(timeout=10) is not None
        assert stranger.poll() is None
    finally:
        for proc in (mine, stranger):
            proc.kill()
            proc.wait()


def test_runtime_state_stays_out_of_the_projects_git_status(agent_factory):
    agent = agent_factory()
    agent.client.post("/agent/tasks", json={"title": "mirror me"})
    (agent.settings.project_dir / "logs").mkdir(exist_ok=True)
    (agent.settings.project_dir / "logs" / "x.jsonl").write_text("{}\n")
    assert git(agent.settings.project_dir, "status", "--porcelain").strip() == ""
    exclude = Path(agent.settings.project_dir / ".git" / "info" / "exclude").read_text()
    assert exclude.count("/worktrees/") == 1


def test_a_live_index_lock_is_left_alone(setup):
    settings, store, dispatcher = setup
    lock = settings.project_dir / ".git" / "index.lock"
    lock.write_text("")
    busy_git = subprocess.Popen(["git", "cat-file", "--batch"], cwd=settings.project_dir, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL)
    try:
        reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
        assert lock.exists()
    finally:
        busy_git.kill()
        busy_git.wait()


def test_recovery_runs_even_when_the_dispatcher_does_not_start(agent_factory, repo):
    store = TaskStore(repo / "data" / "dev-tasks.json")
    store.initialize()
    task = orphan(store)
    agent = agent_factory(project=repo, dispatch=False)
    assert agent.store.get(task.id).status is TaskStatus.pending
    assert agent.client.get("/agent/dispatcher").json()["state"] == "stopped"


def test_one_failing_recovery_step_does_not_stop_the_others(setup, tmp_path):
    settings, store, dispatcher = setup
    repo = settings.project_dir
    done = store.create(NewTask(title="done"))
    store.claim(DEAD_OWNER, 60, task_id=done.id)
    store.transition(done.id, TaskStatus.completed)
    git(repo, "worktree", "add", "-q", "-b", f"task/{done.id}", str(tmp_path / "users-own-worktree"))
    waiting = orphan(store, "still recoverable")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    lines = reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    assert any("pruning landed branches failed" in line for line in lines)
    assert store.get(waiting.id).status is TaskStatus.pending
    assert not lock.exists()


def test_a_users_folder_in_worktrees_is_left_alone(setup):
    settings, store, dispatcher = setup
    mine = settings.project_dir / "worktrees" / "notes"
    mine.mkdir(parents=True)
    (mine / "todo.txt").write_text("mine\n")
    reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    assert (mine / "todo.txt").read_text() == "mine\n"


def test_pruning_a_worktree_left_mid_landing_drops_test_leftovers(setup):
    # A worktree left by a crash during landing holds only the test run's files besides the
    # committed work: pruning it must not commit them (the "second commit per task").
    from backend.dispatcher.leftovers import LANDING_FLAG
    from backend.dispatcher.workspace import Workspace

    settings, store, dispatcher = setup
    repo = settings.project_dir
    task, path = failed_with_worktree(store, repo, "internal")
    (path / "work.txt").write_text("the agent's\n")
    git(path, "add", "work.txt")
    git(path, "commit", "-q", "-m", "the agent's commit")
    tip = git(repo, "rev-parse", f"task/{task.id}").strip()
    (Workspace(dispatcher.ctx.git, task.id).git_dir() / LANDING_FLAG).write_text("landing\n")
    (path / ".testcache").write_text("made by the test run\n")
    reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
    assert not path.exists()
    assert git(repo, "rev-parse", f"task/{task.id}").strip() == tip  # no wip commit of the leftovers
