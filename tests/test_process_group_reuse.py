"""A process group id is a pid: once the task's group is empty and its leader reaped, the
number can name another process's group (another task's agent, the user's shell job). Stopping
a task must never take such a group for the task's.

The reuse is made to happen, not waited for: as root, /proc/sys/kernel/ns_last_pid chooses the
pid the next process gets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backend.dispatcher import process
from backend.dispatcher.process import StopRequest, run_streaming, stop_processes, task_marker
from support import pid_alive, wait_for

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
DEAF = ["sh", "-c", "trap '' TERM; exec sleep 600"]  # ignores SIGTERM, so the stopping goes on


@pytest.fixture(autouse=True)
def _needs_ns_last_pid():
    if not os.access(NS_LAST_PID, os.W_OK):
        pytest.skip("choosing a pid needs a writable /proc/sys/kernel/ns_last_pid (root)")


def start_as(pid: int, argv: list[str]) -> subprocess.Popen | None:
    """Start `argv` in a session of its own as process `pid`; None if that pid is taken."""
    for _ in range(20):  # another process on the machine may take it first: try again
        NS_LAST_PID.write_text(str(pid - 1))
        proc = subprocess.Popen(argv, start_new_session=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
        if Path(f"/proc/{pid}").exists():
            return None  # in use (a zombie counts)
    return None


def start_tick(pid: int) -> int:
    """When `pid` started, in clock ticks since boot (what tells a reused pid from the first)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def now_tick() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK")


def deaf(env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(DEAF, start_new_session=True, env=env)
    wait_for(lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep", timeout=10,
             what="the trap to be set")
    return proc


def test_a_group_id_reused_after_the_group_emptied_is_not_the_tasks(tmp_path):
    """As in crash recovery: the recorded group empties while a marked process is still being
    stopped, and a stranger's new session gets the same number."""
    env = {**os.environ, **task_marker("t1", tmp_path)}
    leader = subprocess.Popen(["sleep", "600"], start_new_session=True, env=env)
    leader_started = start_tick(leader.pid)
    lingering = deaf(env)
    stopper = threading.Thread(target=stop_processes, args=(leader.pid, task_marker("t1", tmp_path)),
                               kwargs={"grace": 600})
    stranger = None
    try:
        stopper.start()
        leader.wait(timeout=10)  # SIGTERM ended it; reaped here, its group is gone
        # A pid reused within the same clock tick cannot be told apart by any means; in life a pid
        # comes round again much later. So the stranger starts at least one tick after the leader.
        wait_for(lambda: now_tick() >= leader_started + 2, timeout=5, what="the next clock tick")
        stranger = start_as(leader.pid, ["sleep", "600"])
        if stranger is None:
            pytest.skip(f"pid {leader.pid} was taken by another process")
        lingering.kill()  # lets the stopping end
        stopper.join(timeout=30)
        assert not stopper.is_alive()
        assert stranger.poll() is None, "a stranger whose group reused the task's group id was stopped"
    finally:
        for proc in (leader, lingering, stranger):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_run_streaming_keeps_the_group_id_reserved_while_it_stops_what_was_left(tmp_path, monkeypatch):
    """The child exits by itself leaving a marked process that ignores SIGTERM; while Baton
    stops that process, the child's pid (the group id it matches by) is not free for anyone."""
    monkeypatch.setattr(process, "EXIT_GRACE_SECONDS", 600.0)  # the stopping lasts until the test ends it
    marker = task_marker("t2", tmp_path)
    pidfile = tmp_path / "lingering.pid"
    code = (
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen({DEAF!r}, start_new_session=True)\n"
        "while open(f'/proc/{child.pid}/comm').read().strip() != 'sleep':\n"
        "    time.sleep(0.01)\n"
        "open(sys.argv[1] + '.tmp', 'w').write(str(child.pid))\n"
        "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    )
    started: list[int] = []
    outcome: list = []

    def run() -> None:
        outcome.append(run_streaming(
            [sys.executable, "-c", code, str(pidfile)], cwd=tmp_path, env={**os.environ, **marker},
            stdin_text=None, stdout_log=tmp_path / "out.log", stderr_log=None, on_line=None,
            wall_timeout=None, stall_timeout=None, stop=StopRequest(), on_start=started.append, marker=marker))

    runner = threading.Thread(target=run)
    runner.start()
    stranger = lingering = None
    try:
        wait_for(pidfile.exists, timeout=30, what="the lingering process")
        lingering = int(pidfile.read_text())
        leader = started[0]
        wait_for(lambda: not pid_alive(leader), timeout=30, what="the child to exit")
        assert pid_alive(lingering)  # still being stopped
        stranger = start_as(leader, ["sleep", "600"])  # None: the pid is still held, as it should be
        os.kill(lingering, signal.SIGKILL)
        runner.join(timeout=30)
        assert not runner.is_alive() and outcome[0].exit_code == 0
        assert stranger is None or stranger.poll() is None, "a stranger that got the group id was stopped"
    finally:
        if lingering is not None and pid_alive(lingering):
            os.kill(lingering, signal.SIGKILL)
        if stranger is not None:
            stranger.kill()
            stranger.wait()
