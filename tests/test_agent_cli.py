"""`baton-agent` as a real process: start, serve, refuse bad setups, stop cleanly."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import httpx

from support import AgentProcess, free_port, make_repo, run_agent, wait_for_http

def test_start_serve_and_stop_cleanly(repo, started):
    (repo / "agent.yaml").write_text("dispatcher_autostart: false\n")  # the task must stay pending
    agent, url = started(repo)
    health = httpx.get(f"{url}/agent/health").json()
    assert health["project"] == repo.name
    assert {p["code"] for p in health["problems"]} <= {"runtime_unavailable"}  # no `claude` here
    created = httpx.post(f"{url}/agent/tasks", json={"title": "From a real process"})
    assert created.status_code == 201
    task_id = created.json()["id"]
    info = json.loads((repo / ".git" / "baton-agent.json").read_text())  # the repository's lock
    assert info["pid"] == agent.proc.pid and info["project_dir"] == str(repo)

    assert agent.stop(signal.SIGTERM) == 0
    assert not (repo / ".git" / "baton-agent.json").exists()
    doc = json.loads((repo / "data" / "dev-tasks.json").read_text())
    assert [t["id"] for t in doc["tasks"]] == [task_id]
    assert (repo / "tasks" / "pending" / f"{task_id}.md").exists()


def test_second_agent_on_same_project_is_refused(repo, started):
    first, url = started(repo)
    second = run_agent(["--port", str(free_port()), "--project-dir", str(repo)], repo)
    assert second.returncode == 1
    assert f"pid {first.proc.pid}" in second.stderr
    assert f"port {url.rsplit(':', 1)[1]}" in second.stderr
    assert httpx.get(f"{url}/agent/health").status_code == 200  # the first one is unharmed
    assert first.stop(signal.SIGINT) == 0


def test_restart_after_kill_is_allowed(repo, started):
    first, _ = started(repo)
    first.proc.kill()
    first.proc.wait()
    second, url = started(repo)
    assert httpx.get(f"{url}/agent/health").status_code == 200
    assert second.stop() == 0


def test_invalid_config_exits_non_zero_and_writes_nothing(repo):
    (repo / "agent.yaml").write_text("max_parallel_workers: 0\nclaude_code:\n  timeout: -5\n  colour: red\n")
    result = run_agent(["--port", str(free_port())], repo)
    assert result.returncode == 2
    config = str(repo / "agent.yaml")
    assert f"{config}: max_parallel_workers: Input should be greater than 0" in result.stderr
    assert f"{config}: claude_code.timeout: Input should be greater than 0" in result.stderr
    assert f"{config}: claude_code.colour: unknown key" in result.stderr
    assert not (repo / "data").exists() and not (repo / "tasks").exists()


def test_not_a_git_repository(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run_agent(["--project-dir", str(plain)], tmp_path)
    assert result.returncode == 2
    assert f"{plain} is not a git repository" in result.stderr
    assert list(plain.iterdir()) == []


def test_non_loopback_bind_without_token_is_refused(repo):
    result = run_agent(["--host", "0.0.0.0", "--port", str(free_port())], repo)
    assert result.returncode == 2
    assert "without a token" in result.stderr
    assert not (repo / "data").exists()


def test_corrupt_store_is_refused_and_untouched(repo):
    (repo / "data").mkdir()
    content = b'{"schema_version": 1, "tasks": [{"id": "abc", "title": 5'
    (repo / "data" / "dev-tasks.json").write_bytes(content)
    result = run_agent(["--port", str(free_port())], repo)
    assert result.returncode == 2
    assert str(repo / "data" / "dev-tasks.json") in result.stderr
    assert "not valid JSON" in result.stderr
    assert (repo / "data" / "dev-tasks.json").read_bytes() == content


def test_token_is_enforced_and_never_logged(repo, started):
    token = "tok-7f3c9a1e5b"
    agent, url = started(repo, env={"BATON_TOKEN": token})
    assert httpx.get(f"{url}/agent/tasks").status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/agent/tasks", headers=auth).status_code == 200
    httpx.get(f"{url}/agent/tasks?token={token[:3]}", headers={"Authorization": "Bearer wrong"})
    assert agent.stop() == 0
    assert token not in agent.output()
    assert "auth on" in agent.output()


def test_project_dir_from_environment_then_cwd(repo, tmp_path, started):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    agent = AgentProcess(["--port", str(port)], elsewhere, tmp_path / "envlogs", {"BATON_PROJECT_DIR": str(repo)})
    try:
        health = wait_for_http(f"http://127.0.0.1:{port}/agent/health", agent.proc).json()
        assert health["project"] == repo.name
    finally:
        assert agent.stop() == 0

    sub = repo / "src"
    sub.mkdir()
    port = free_port()
    agent = AgentProcess(["--port", str(port)], sub, tmp_path / "cwdlogs")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/agent/health", agent.proc)
        assert (repo / "data" / "dev-tasks.json").exists()  # the repository's top, not the subfolder
        assert not (sub / "data").exists()
    finally:
        assert agent.stop() == 0


def test_console_script_is_installed():
    exe = shutil.which("baton-agent")
    assert exe, "baton-agent is not on PATH: install the package (see README)"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("baton-agent ")


def test_missing_agent_yaml_means_defaults(tmp_path, started):
    repo = make_repo(tmp_path, "nocfg")
    assert not (repo / "agent.yaml").exists()
    agent, url = started(repo)
    health = httpx.get(f"{url}/agent/health").json()
    # Only the missing `claude` CLI (none on a test machine's PATH) may make it degraded.
    assert {p["code"] for p in health["problems"]} <= {"runtime_unavailable"}
    assert agent.stop() == 0
