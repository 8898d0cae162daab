"""Every process a task started is gone when the task ends, however it detached.

The escaped process of these tests is what a confused agent or test suite starts:
`setsid sh -c "trap '' TERM; exec sleep 600"` — a new session (so not in the task's process
group), deaf to SIGTERM, and holding the output pipe of whoever started it. The 5 s deadlines
are the requirement itself ("gone within 5 s of cancel or timeout"), not a speed figure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.agent.settings import AgentSettings
from backend.dispatcher.dispatcher import Dispatcher
from backend.dispatcher.process import StopRequest, run_streaming, task_marker
from backend.dispatcher.recovery import reconcile
from backend.mirrors import MirrorWriter
from backend.models import NewTask, Owner, TaskStatus
from backend.store import TaskStore
from conftest import fake_task
from support import commit_and_push, pid_alive, wait_for
from support import submit_task as submit, wait_task_done as wait_done

REQUIRED = 5.0  # seconds: "gone within 5 s of cancel or timeout"
ESCAPE = ["setsid", "sh", "-c", "trap '' TERM; exec sleep 600"]
# Starts the escaped process, waits until it is deaf to SIGTERM, writes its pid to argv[1].
START_ESCAPED = (
    "import os, subprocess, sys, time\n"
    f"child = subprocess.Popen({ESCAPE!r})\n"
    "while open(f'/proc/{child.pid}/comm').read().strip() != 'sleep':\n"
    "    time.sleep(0.01)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(child.pid))\n"
    "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
)


@pytest.fixture
def escaped_pid():
    """Waits for an escaped process's pid file; whatever the test's outcome, the process is
    not left behind."""
    pids: list[int] = []

    def read(pidfile: Path) -> int:
        wait_for(pidfile.exists, timeout=30, what="the escaped process")
        pids.append(int(pidfile.read_text()))
        return pids[-1]

    yield read
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, 9)


def assert_gone(pid: int) -> None:
    wait_for(lambda: not pid_alive(pid), timeout=REQUIRED, what=f"escaped process {pid} to be gone")


# ----- the coding agent ------------------------------------------------------------------------


def test_cancel_stops_an_escaped_grandchild_and_answers_cancelled(agent_factory, fake_cli, tmp_path, escaped_pid):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    pidfile = tmp_path / "escaped.pid"
    task_id = submit(agent, fake_task("Escapes", {"steps": [
        {"write": "part.txt", "text": "part\n"}, {"escape": str(pidfile)}, {"sleep": 120}]}))
    pid = escaped_pid(pidfile)
    resp = agent.client.post(f"/agent/tasks/{task_id}/cancel")
    # Before the fix the reader waited on the pipe the escaped process held: the cancel took
    # longer than the dispatcher waits and answered 202 in_progress.
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text
    assert_gone(pid)


@pytest.mark.parametrize("limit", ["timeout", "stalled"])
def test_wall_and_stall_limits_stop_an_escaped_grandchild(agent_factory, fake_cli, tmp_path, limit, escaped_pid):
    pidfile = tmp_path / "escaped.pid"
    if limit == "timeout":
        claude = {"timeout": 2, "stall_timeout": 30}
        steps = [{"escape": str(pidfile)}, {"tick": 1000, "every": 0.1}]  # busy, never silent
    else:
        claude = {"timeout": 60, "stall_timeout": 1}
        steps = [{"escape": str(pidfile)}, {"sleep": 120}]
    agent = agent_factory(config=fake_cli.config(claude_code=claude), dispatch=True)
    task_id = submit(agent, fake_task("Escapes and hangs", {"steps": steps}))
    pid = escaped_pid(pidfile)
    task = wait_done(agent, task_id)
    assert task.status is TaskStatus.failed and task.error_reason == limit
    assert_gone(pid)


def test_an_agent_that_exits_normally_leaves_nothing_behind(agent_factory, fake_cli, tmp_path, escaped_pid):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    pidfile = tmp_path / "escaped.pid"
    task_id = submit(agent, fake_task("Escapes, then finishes", {"steps": [
        {"write": "done.txt", "text": "done\n"}, {"escape": str(pidfile)}]}))
    pid = escaped_pid(pidfile)
    assert wait_done(agent, task_id).status is TaskStatus.completed
    assert_gone(pid)


def test_an_escaped_process_of_the_test_command_is_stopped(agent_factory, fake_cli, repo, tmp_path, escaped_pid):
    pidfile = tmp_path / "test-escaped.pid"
    commit_and_push(repo, {"escaping_tests.py": START_ESCAPED}, "tests that leave a process behind")
    config = fake_cli.config(test_command=f"{sys.executable} escaping_tests.py {pidfile}")
    agent = agent_factory(config=config, project=repo, dispatch=True)
    task_id = submit(agent, fake_task("Tested", {"steps": [{"write": "t.txt", "text": "t\n"}]}))
    pid = escaped_pid(pidfile)
    assert wait_done(agent, task_id).status is TaskStatus.completed
    assert_gone(pid)


# ----- run_streaming and recovery directly ----------------------------------------------------


def test_run_streaming_stops_marked_processes_and_does_not_wait_on_their_pipe(tmp_path):
    """The escaped process holds stdout; the run still ends, keeps every line (the trailing
    partial one too) and the process is already gone when it returns."""
    pidfile = tmp_path / "escaped.pid"
    marker = task_marker("t1", tmp_path)
    code = START_ESCAPED + "sys.stdout.write('one\\ntwo\\npartial')\nsys.stdout.flush()\ntime.sleep(60)\n"
    stop = StopRequest()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:  # "partial" has no newline yet: it comes at the end
            stop.set("cancelled")

    outcome = run_streaming(
        [sys.executable, "-c", code, str(pidfile)], cwd=tmp_path, env={**os.environ, **marker}, stdin_text=None,
        stdout_log=tmp_path / "out.log", stderr_log=tmp_path / "err.log", on_line=on_line,
        wall_timeout=None, stall_timeout=None, stop=stop, marker=marker)
    pid = int(pidfile.read_text())
    try:
        assert outcome.stopped == "cancelled"
        assert not pid_alive(pid), "the escaped process outlived the run"
        assert lines == ["one\n", "two\n", "partial"]
        assert (tmp_path / "out.log").read_text() == "one\ntwo\npartial"
    finally:
        if pid_alive(pid):
            os.kill(pid, 9)


DEAD_OWNER = Owner(pid=999_999, host="crashed-host", instance="gone")


def test_recovery_stops_every_marked_process_of_the_task_and_nothing_else(repo, fake_cli, tmp_path):
    settings = AgentSettings(project_dir=repo, config=fake_cli.config())
    store = TaskStore(settings.store_path, mirrors=MirrorWriter(settings.tasks_dir))
    store.initialize()
    dispatcher = Dispatcher(settings, store)
    task = store.create(NewTask(title="crashed"))
    store.claim(DEAD_OWNER, 60, task_id=task.id)
    sleeper = ["sh", "-c", "trap '' TERM; exec sleep 600"]
    # Left by the crashed agent, in a session of its own (not the recorded group).
    escaped = subprocess.Popen(sleeper, start_new_session=True, env={**os.environ, **task_marker(task.id, repo)})
    # The same task id in another project: not ours to stop.
    other = subprocess.Popen(sleeper, start_new_session=True,
                             env={**os.environ, **task_marker(task.id, tmp_path / "elsewhere")})
    try:
        reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
        assert escaped.wait(timeout=REQUIRED) is not None
        assert other.poll() is None
        assert store.get(task.id).status is TaskStatus.pending
    finally:
        dispatcher.shutdown()
        for proc in (escaped, other):
            proc.kill()
            proc.wait()
