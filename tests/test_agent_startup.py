"""Start-up of `baton-agent` and `baton-dashboard` as real processes: every failure is one line
naming the file (or option) and the problem, with a documented exit status, and changes nothing.

Exit statuses: 0 clean stop, 1 another agent runs for the repository, 2 usage / configuration /
store problem, 3 cannot listen on host:port.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.models import NewTask
from backend.store import TaskStore
from support import AGENT, ROOT, free_port, git, wait_for_http

DASHBOARD = [sys.executable, "-m", "backend.dashboard.cli"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """A start expected to be refused: a process that starts serving instead fails the test at
    the timeout (subprocess.run kills it)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    full_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def one_line(result: subprocess.CompletedProcess, prefix: str = "baton-agent: ") -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr  # no traceback, no noise
    assert "Traceback" not in result.stderr and result.stdout == ""
    return lines[0]


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` read-only for real (we run as root: chmod would not stop a write)."""
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"!!! SKIPPED LOUDLY: cannot bind-mount {folder} (needs CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"!!! SKIPPED LOUDLY: cannot remount {folder} read-only: {remount.stderr.strip()}")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----- (a) start-up failures: one line, exit 2, nothing touched ------------------------------------


def _store_with_a_task(repo: Path) -> Path:
    TaskStore(repo / "data" / "dev-tasks.json").create(NewTask(title="kept"))
    return repo / "data" / "dev-tasks.json"


def test_read_only_data_folder_is_one_line_exit_2(repo):
    store = _store_with_a_task(repo)
    before = files_under(repo / "data")
    with read_only(repo / "data"):
        result = run(AGENT + ["--port", str(free_port()), "--project-dir", str(repo)], repo)
    line = one_line(result)
    assert result.returncode == 2
    assert str(repo / "data") in line and "Read-only file system" in line
    assert files_under(repo / "data") == before and store.exists()


def test_read_only_git_folder_cannot_take_the_instance_lock(repo):
    with read_only(repo / ".git"):
        result = run(AGENT + ["--port", str(free_port()), "--project-dir", str(repo)], repo)
    line = one_line(result)
    assert result.returncode == 2
    assert str(repo / ".git" / "baton-agent.lock") in line and "Read-only file system" in line
    assert not (repo / "data").exists()


@pytest.mark.parametrize(
    "content",
    [
        b'{"schema_version": 1, "tasks": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",  # RecursionError
        b"\0" * 4096,  # NUL-filled, as after a crash on some filesystems
        b'{"schema_version": 1, "tasks": [{"id": "abc", "title": 5',
    ],
    ids=["deeply-nested", "nul-filled", "truncated"],
)
def test_refused_store_is_one_line_exit_2_and_untouched(repo, content):
    (repo / "data").mkdir()
    path = repo / "data" / "dev-tasks.json"
    path.write_bytes(content)
    result = run(AGENT + ["--port", str(free_port()), "--project-dir", str(repo)], repo)
    line = one_line(result)
    assert result.returncode == 2
    assert str(path) in line and "left untouched" in line
    assert path.read_bytes() == content
    assert sorted(p.name for p in (repo / "data").iterdir() if not p.name.endswith(".lock")) == ["dev-tasks.json"]


def test_unreadable_store_is_one_line_exit_2(repo):
    (repo / "data" / "dev-tasks.json").mkdir(parents=True)  # a folder where the file should be
    result = run(AGENT + ["--port", str(free_port()), "--project-dir", str(repo)], repo)
    line = one_line(result)
    assert result.returncode == 2
    assert str(repo / "data" / "dev-tasks.json") in line and "cannot be read" in line
    assert (repo / "data" / "dev-tasks.json").is_dir()


# ----- (b) bind first: a busy port claims nothing ----------------------------------------------------


@contextlib.contextmanager
def busy_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def test_busy_port_exits_3_before_claiming_or_starting_an_agent(repo, fake_cli):
    config = {"claude_code": {"command": fake_cli.command}, "test_command": "", "push_to_remote": False,
              "poll_interval_seconds": 0.2}
    (repo / "agent.yaml").write_text(json.dumps(config))
    task = TaskStore(repo / "data" / "dev-tasks.json").create(NewTask(title="must stay pending"))
    with busy_port() as port:
        result = run(AGENT + ["--port", str(port), "--project-dir", str(repo)], repo)
    line = one_line(result)
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in line
    after = TaskStore(repo / "data" / "dev-tasks.json").get(task.id)
    assert (after.status.value, after.attempts, after.started_at) == ("pending", 0, None)
    assert fake_cli.calls() == []  # no coding agent was started
    assert "task/" not in git(repo, "branch", "--list")
    assert not (repo / ".git" / "baton-agent.json").exists()  # the instance lock was let go


@pytest.mark.parametrize("reload", [False, True], ids=["plain", "reload"])
def test_dashboard_busy_port_exits_3(tmp_path, reload):
    with busy_port() as port:
        result = run(DASHBOARD + ["--config", str(tmp_path / "none.yaml"), "--port", str(port)]
                     + (["--reload"] if reload else []), tmp_path)
    line = one_line(result, "baton-dashboard: ")
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in line


def test_dashboard_reload_still_serves(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    proc = subprocess.Popen(DASHBOARD + ["--config", str(tmp_path / "none.yaml"), "--port", str(port), "--reload"],
                            cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/api/health", proc, timeout=60).json()["status"] == "ok"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # the reloader and the server it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_help_documents_exit_statuses():
    for cmd in (AGENT, DASHBOARD):
        out = run(cmd + ["--help"], ROOT).stdout
        assert "exit status" in out and "3 cannot listen" in " ".join(out.split())


# ----- (d) a token off loopback must be at least 16 non-blank characters ---------------------------


WEAK = ["", "   ", "x", "short-secret-15", "a b c d e f g h i j k l m n o"]


@pytest.mark.parametrize("token", WEAK, ids=["empty", "blank", "one-char", "15-chars", "15-non-blank"])
def test_agent_refuses_a_weak_token_off_loopback(repo, token):
    result = run(AGENT + ["--host", "0.0.0.0", "--port", str(free_port()), "--project-dir", str(repo)], repo,
                 env={"BATON_TOKEN": token})
    line = one_line(result)
    assert result.returncode == 2 and "non-loopback" in line
    if token.strip():
        assert token not in line  # never echoed
    assert not (repo / "data").exists()


def test_agent_refuses_a_weak_token_from_agent_yaml(repo):
    (repo / "agent.yaml").write_text("token: tiny-token\n")
    result = run(AGENT + ["--host", "0.0.0.0", "--port", str(free_port()), "--project-dir", str(repo)], repo)
    line = one_line(result)
    assert result.returncode == 2 and "16 non-blank characters" in line and "tiny-token" not in line


def test_agent_accepts_a_strong_token_off_loopback(repo, started):
    agent, url = started(repo, "--host", "0.0.0.0", env={"BATON_TOKEN": "s3cret-token-of-24-chars"})
    assert httpx.get(f"{url}/agent/tasks").status_code == 401
    assert agent.stop() == 0


@pytest.mark.parametrize("token", WEAK, ids=["empty", "blank", "one-char", "15-chars", "15-non-blank"])
def test_dashboard_refuses_a_weak_token_off_loopback(tmp_path, token):
    result = run(DASHBOARD + ["--config", str(tmp_path / "none.yaml"), "--host", "0.0.0.0",
                              "--port", str(free_port())], tmp_path, env={"BATON_DASHBOARD_TOKEN": token})
    line = one_line(result, "baton-dashboard: ")
    assert result.returncode == 2 and "non-loopback" in line
    if token.strip():
        assert token not in line


def test_dashboard_refuses_a_weak_token_from_its_config(tmp_path):
    (tmp_path / "projects.yaml").write_text("token: tiny-token\nprojects: []\n")
    result = run(DASHBOARD + ["--config", str(tmp_path / "projects.yaml"), "--host", "0.0.0.0",
                              "--port", str(free_port())], tmp_path)
    line = one_line(result, "baton-dashboard: ")
    assert result.returncode == 2 and "tiny-token" not in line


# ----- (f) one agent per repository, linked worktrees included --------------------------------------


def test_agent_in_a_linked_worktree_of_the_same_repository_is_refused(repo, started, tmp_path):
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "elsewhere", str(linked))
    (linked / "agent.yaml").write_text("base_branch: main\n")  # a valid start but for the lock
    first, url = started(repo)
    second = run(AGENT + ["--port", str(free_port()), "--project-dir", str(linked)], linked)
    line = one_line(second)
    assert second.returncode == 1
    assert f"pid {first.proc.pid}" in line and f"port {url.rsplit(':', 1)[1]}" in line
    assert f"project folder {repo}" in line
    assert not (linked / "data").exists()
    assert httpx.get(f"{url}/agent/health").status_code == 200  # the first one is unharmed
    assert first.stop() == 0
