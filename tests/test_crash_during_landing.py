"""A `baton-agent` killed (SIGKILL) while a task's test command runs, then restarted: the test
processes are stopped, what the tests left in the worktree is not committed, and the task lands
exactly one commit."""

from __future__ import annotations

import os
import signal
import sys

import httpx

from backend.store import TaskStore
from conftest import fake_task
from support import commit_and_push, git, origin_of, pid_alive, wait_for

# The project's "tests": they leave an untracked artifact (like .pytest_cache), and on their
# first run only start a process in a session of its own that ignores SIGTERM, then block.
GATED_TESTS = (
    "import os, pathlib, subprocess, sys, time\n"
    "pathlib.Path('.testcache').mkdir(exist_ok=True)\n"
    "pathlib.Path('.testcache/state.txt').write_text('made by the test run\\n')\n"
    "flag = pathlib.Path(sys.argv[1])\n"
    "if not flag.exists():\n"
    "    child = subprocess.Popen(['setsid', 'sh', '-c', \"trap '' TERM; exec sleep 600\"])\n"
    "    while open(f'/proc/{child.pid}/comm').read().strip() != 'sleep':\n"
    "        time.sleep(0.01)\n"
    "    pathlib.Path(sys.argv[1] + '.tmp').write_text(f'{os.getpid()} {child.pid}')\n"
    "    os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "    time.sleep(600)\n"
)


def test_crash_while_tests_run_leaves_no_process_and_lands_one_commit(repo, started, fake_cli, tmp_path):
    flag = tmp_path / "tests-started"
    commit_and_push(repo, {"gated_tests.py": GATED_TESTS}, "tests that block on their first run")
    (repo / "agent.yaml").write_text(
        "poll_interval_seconds: 0.5\n"
        f"test_command: '{sys.executable} gated_tests.py {flag}'\n"
        "max_attempts: 3\n"
        f"claude_code:\n  command: {fake_cli.command}\n  timeout: 120\n  stall_timeout: 120\n"
    )
    agent, url = started(repo)
    task_id = httpx.post(f"{url}/agent/tasks", json=fake_task("Land once", {"steps": [
        {"write": "feature.txt", "text": "the feature\n"}]})).json()["id"]
    wait_for(flag.exists, timeout=30, what="the test command to start")
    tests_pid, escaped_pid = (int(pid) for pid in flag.read_text().split())

    agent.proc.kill()  # SIGKILL while landing: no cleanup at all
    agent.proc.wait()
    try:
        assert pid_alive(tests_pid) and pid_alive(escaped_pid)  # they outlive the killed agent

        second, url = started(repo)
        wait_for(lambda: not pid_alive(tests_pid) and not pid_alive(escaped_pid), timeout=15,
                 what="recovery to stop the test processes")
        store = TaskStore(repo / "data" / "dev-tasks.json")
        task = wait_for(lambda: (t := store.get(task_id)).status.value == "completed" and t, timeout=60,
                        what="the recovered task to land")
    finally:
        for pid in (tests_pid, escaped_pid):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)

    origin = origin_of(repo)
    subjects = git(origin, "log", "--format=%s", "main").splitlines()
    assert [s for s in subjects if task_id in s] == [f"feature({task_id}): Land once"], subjects
    assert git(origin, "show", "main:feature.txt") == "the feature\n"
    assert ".testcache/state.txt" not in git(origin, "ls-tree", "-r", "--name-only", "main").split("\n")
    assert task.commit_sha == git(origin, "rev-parse", "main").strip()
    assert second.stop(signal.SIGTERM) == 0
