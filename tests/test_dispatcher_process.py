"""Crash safety with `baton-agent` as a real process: SIGKILL mid-run, and SIGINT shutdown."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from backend.store import TaskStore
from conftest import fake_task
from support import git, origin_of, pid_alive, wait_for


def write_agent_yaml(repo: Path, command: str) -> None:
    (repo / "agent.yaml").write_text(
        "poll_interval_seconds: 0.5\n"
        "test_command: ''\n"
        "max_attempts: 3\n"
        f"claude_code:\n  command: {command}\n  timeout: 120\n  stall_timeout: 120\n"
    )


def task_status(repo: Path, task_id: str):
    return TaskStore(repo / "data" / "dev-tasks.json").get(task_id)


def test_sigkill_mid_run_then_restart_recovers_and_lands(repo, started, fake_cli, tmp_path):
    write_agent_yaml(repo, fake_cli.command)
    agent, url = started(repo)
    marker = tmp_path / "blocked"
    task_id = httpx.post(f"{url}/agent/tasks", json=fake_task("Survive a crash", {"steps": [
        {"write": "before.txt", "text": "written before the crash\n"},
        {"block_once": str(marker), "seconds": 300},
        {"write": "after.txt", "text": "written after\n"}]})).json()["id"]
    wait_for(marker.exists, timeout=30, what="the agent to start")
    orphan = int(marker.read_text())

    agent.proc.kill()  # SIGKILL: no cleanup at all
    agent.proc.wait()
    assert pid_alive(orphan), "the coding agent outlives a killed baton-agent (own session)"
    assert task_status(repo, task_id).status.value == "in_progress"

    second, url = started(repo)
    wait_for(lambda: not pid_alive(orphan), timeout=15, what="recovery to stop the orphaned agent")
    task = wait_for(lambda: (t := task_status(repo, task_id)).status.value == "completed" and t, timeout=60,
                    what="the recovered task to land")
    assert task.attempts == 2
    origin = origin_of(repo)
    assert git(origin, "show", "main:before.txt") == "written before the crash\n"  # nothing lost
    assert git(origin, "show", "main:after.txt") == "written after\n"
    wait_for(lambda: not (repo / "worktrees" / task_id).exists(), what="worktree removal")
    assert second.stop(signal.SIGTERM) == 0


def test_sigint_returns_running_tasks_to_pending_and_exits_cleanly(repo, started, fake_cli, tmp_path):
    write_agent_yaml(repo, fake_cli.command)
    agent, url = started(repo)
    marker = tmp_path / "running"
    task_id = httpx.post(f"{url}/agent/tasks", json=fake_task("Interrupted by Ctrl-C", {"steps": [
        {"write": "part.txt", "text": "part\n"}, {"marker": str(marker)}, {"sleep": 300}]})).json()["id"]
    wait_for(marker.exists, timeout=30, what="the agent to start")
    coding_agent = int(marker.read_text())

    assert agent.stop(signal.SIGINT, timeout=30) == 0
    assert not pid_alive(coding_agent)
    tasks = TaskStore(repo / "data" / "dev-tasks.json").list_tasks()
    assert [t.status.value for t in tasks] == ["pending"]  # nothing left in_progress
    assert tasks[0].owner is None
    assert git(repo, "show", f"task/{task_id}:part.txt") == "part\n"  # the work is on its branch
    assert not (repo / "worktrees" / task_id).exists()
