"""The dashboard starts its agents (`start: true`, `--start-agents`): real dashboard and agent
processes, a real SIGKILL, a real Ctrl+C (SIGINT)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.config import ConfigError
from backend.dashboard.config import load_dashboard_config
from support import ROOT, AgentProcess, free_port, make_repo, pid_alive, wait_for, wait_for_http


class Dashboard:
    def __init__(self, tmp_path: Path, config: str, *args: str) -> None:
        (tmp_path / "projects.yaml").write_text(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = open(tmp_path / "dashboard.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml",
                                      "--port", str(self.port), *args], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        wait_for_http(f"{self.url}/api/health", self.proc)

    def agent(self, project_id: str) -> dict | None:
        projects = httpx.get(f"{self.url}/api/projects", timeout=10).json()["projects"]
        return next(p for p in projects if p["id"] == project_id)["agent"]

    def wait_agent(self, project_id: str, what: str, check, timeout: float = 30) -> dict:
        return wait_for(lambda: (a := self.agent(project_id)) and check(a) and a, timeout=timeout,
                        interval=0.05, what=f"{project_id}'s agent: {what}")

    def log(self, project_id: str, **params) -> httpx.Response:
        return httpx.get(f"{self.url}/api/projects/{project_id}/agent-log", params=params, timeout=10)

    def stop(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.out.close()


def agent_repo(tmp_path: Path, name: str, agent_yaml: str = "dispatcher_autostart: false\n") -> Path:
    repo = make_repo(tmp_path, name)
    (repo / "agent.yaml").write_text(agent_yaml)  # no dispatcher: no coding-agent CLI needed
    return repo


def agent_health(port: int) -> dict | None:
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}/agent/health", timeout=2)
    except httpx.TransportError:
        return None
    return resp.json() if resp.status_code == 200 else None


def nobody_listens(port: int) -> bool:
    # Not a bind test: the agent's closed connections may hold the port in TIME_WAIT for a while.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def dashboards():
    started: list[Dashboard] = []
    yield lambda *a: started.append(Dashboard(*a)) or started[-1]
    for dashboard in started:  # a failed test must not leave agents behind either
        dashboard.stop(signal.SIGTERM)


def test_a_start_true_agent_is_started_restarted_after_sigkill_and_stopped_by_one_ctrl_c(tmp_path, dashboards):
    repo = agent_repo(tmp_path, "p")
    port = free_port()
    dash = dashboards(tmp_path, f"projects:\n  - id: p\n    path: {repo}\n    agent_url: http://127.0.0.1:{port}\n"
                                f"    start: true\n")
    first = dash.wait_agent("p", "running", lambda a: a["state"] == "running")
    assert wait_for(lambda: agent_health(port), timeout=30, what="the agent's health")["project_id"] == "p"
    assert first["restarts"] == 0 and first["pid"]

    os.kill(first["pid"], signal.SIGKILL)
    seen = []

    def back_again(agent: dict) -> bool:
        seen.append(agent)
        return agent["state"] == "running" and agent["restarts"] == 1

    again = dash.wait_agent("p", "running again after a restart", back_again)
    restarting = [a for a in seen if a["state"] == "restarting"]
    assert restarting, [a["state"] for a in seen]
    assert restarting[0]["last_exit_code"] == -signal.SIGKILL
    assert restarting[0]["message"].startswith("agent restarting in ")
    assert "(killed by SIGKILL)" in restarting[0]["message"]
    assert again["pid"] != first["pid"]
    assert wait_for(lambda: agent_health(port), timeout=30, what="the restarted agent's health")

    lines = dash.log("p").json()["lines"]
    assert sum("starting baton-agent" in line for line in lines) == 2
    assert any("baton-agent stopped (killed by SIGKILL)" in line for line in lines)
    assert dash.log("p", lines=1).json()["lines"] == lines[-1:]
    assert dash.log("p", lines=0).status_code == 422 and dash.log("p", lines=2001).status_code == 422
    assert dash.log("nope").status_code == 404

    assert dash.stop(signal.SIGINT) == 0  # the one Ctrl+C of a terminal reaches only the dashboard
    assert not pid_alive(again["pid"])
    assert agent_health(port) is None and nobody_listens(port)


def test_agents_that_cannot_run_fail_with_the_reason_and_are_not_restarted(tmp_path, dashboards):
    bad = agent_repo(tmp_path, "bad", "dispatcher_autostart: false\ncolour: red\n")  # exit 2
    held = agent_repo(tmp_path, "held")  # exit 1: another agent runs for it
    other_port = free_port()
    other = AgentProcess(["--project-dir", str(held), "--port", str(other_port)], tmp_path, tmp_path / "other")
    try:
        wait_for_http(f"http://127.0.0.1:{other_port}/agent/health", other.proc)
        plain = make_repo(tmp_path, "plain")
        dash = dashboards(tmp_path, "projects:\n"
                          f"  - id: bad\n    path: {bad}\n    agent_url: http://127.0.0.1:{free_port()}\n    start: true\n"
                          f"  - id: held\n    path: {held}\n    agent_url: http://127.0.0.1:{free_port()}\n    start: true\n"
                          f"  - id: plain\n    path: {plain}\n"
                          f"  - id: gone\n    path: {tmp_path / 'gone'}\n    agent_url: http://127.0.0.1:{free_port()}\n"
                          f"    start: true\n")
        gone = dash.wait_agent("gone", "failed", lambda a: a["state"] == "failed")
        assert gone["reason"] == f"project folder {tmp_path / 'gone'} does not exist" and gone["last_exit_code"] is None
        assert not (tmp_path / "gone").exists()  # a typo in `path` creates nothing
        failed = dash.wait_agent("bad", "failed", lambda a: a["state"] == "failed")
        assert failed["last_exit_code"] == 2 and failed["restarts"] == 0 and failed["next_attempt_at"] is None
        assert failed["reason"].startswith("configuration or start-up problem: ")
        assert "colour" in failed["reason"] and "not restarted" in failed["message"]
        held_agent = dash.wait_agent("held", "failed", lambda a: a["state"] == "failed")
        assert held_agent["last_exit_code"] == 1 and held_agent["restarts"] == 0
        assert held_agent["reason"].startswith("another baton-agent already runs for this repository")
        lines = dash.log("bad").json()["lines"]
        assert sum("starting baton-agent" in line for line in lines) == 1
        assert any("not restarted" in line for line in lines)
        assert dash.agent("plain") is None and dash.log("plain").status_code == 404
        assert dash.stop(signal.SIGINT) == 0
        assert other.proc.poll() is None  # not the dashboard's to stop
    finally:
        other.stop()


def test_start_agents_flag_starts_every_startable_project_and_sigterm_stops_it(tmp_path, dashboards):
    repo = agent_repo(tmp_path, "q")
    port = free_port()
    plain = make_repo(tmp_path, "plain")
    dash = dashboards(tmp_path, f"projects:\n  - id: q\n    path: {repo}\n    agent_url: http://127.0.0.1:{port}\n"
                                f"  - id: plain\n    path: {plain}\n", "--start-agents")
    running = dash.wait_agent("q", "running", lambda a: a["state"] == "running")
    assert wait_for(lambda: agent_health(port), timeout=30, what="the agent's health")["project_id"] == "q"
    assert dash.agent("plain") is None
    assert dash.stop(signal.SIGTERM) == 0
    assert not pid_alive(running["pid"]) and nobody_listens(port)


@pytest.mark.parametrize(("entry", "expected"), [
    ("agent_url: http://127.0.0.1:9100\n    start: true\n", "start: true needs path"),
    ("path: /x\n    start: true\n", "start: true needs agent_url"),
    ("path: /x\n    agent_url: http://example.com:9100\n    start: true\n",
     "start: true needs agent_url on a loopback host (127.0.0.1, ::1 or localhost), not 'example.com'"),
    ("path: /x\n    agent_url: http://127.0.0.1\n    start: true\n", "start: true needs an explicit port in agent_url"),
    ("path: /x\n    agent_url: https://127.0.0.1:9100\n    start: true\n", "start: true needs an http:// agent_url"),
    ("path: /x\n    start: yes please\n", "start: Input should be a valid boolean"),
])
def test_start_needs_a_path_and_a_loopback_agent_url_with_a_port(tmp_path, entry, expected):
    path = tmp_path / "projects.yaml"
    path.write_text(f"projects:\n  - id: a\n    {entry}")
    with pytest.raises(ConfigError) as info:
        load_dashboard_config(path)
    assert str(info.value).startswith(f"{path}: projects[0] (id 'a'): ")
    assert expected in str(info.value)


def test_a_bad_start_entry_stops_the_dashboard_with_exit_2(tmp_path):
    (tmp_path / "projects.yaml").write_text("projects:\n  - id: a\n    path: /x\n    start: true\n")
    result = subprocess.run([sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml", "--port",
                             str(free_port())], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "projects[0] (id 'a'): start: true needs agent_url" in result.stderr


def test_start_agents_marks_only_projects_it_can_start(tmp_path):
    path = tmp_path / "projects.yaml"
    path.write_text("projects:\n  - id: a\n    path: /x\n    agent_url: http://127.0.0.1:9100\n"
                    "  - id: b\n    path: /y\n  - id: c\n    agent_url: http://127.0.0.1:9101\n"
                    "  - id: d\n    path: /z\n    agent_url: http://10.1.2.3:9100\n")
    assert [p.start for p in load_dashboard_config(path).start_all().projects] == [True, False, False, False]


def test_a_second_ctrl_c_while_uvicorn_waits_for_connections_still_stops_the_agent(tmp_path, dashboards):
    # uvicorn answers a second SIGINT ("CTRL+C to force quit") by skipping the app's shutdown,
    # where the agents are stopped; an open event stream makes it wait, inviting that second one.
    repo = agent_repo(tmp_path, "p")
    port = free_port()
    dash = dashboards(tmp_path, f"projects:\n  - id: p\n    path: {repo}\n    agent_url: http://127.0.0.1:{port}\n"
                                f"    start: true\n")
    pid = dash.wait_agent("p", "running", lambda a: a["state"] == "running")["pid"]
    wait_for(lambda: next(p for p in httpx.get(f"{dash.url}/api/projects", timeout=10).json()["projects"]
                          if p["id"] == "p")["healthy"], timeout=30, what="the board to reach the agent")
    created = httpx.post(f"{dash.url}/api/projects/p/tasks", json={"title": "a task", "content": "to stream"}, timeout=10)
    assert created.status_code == 201, created.text
    task = created.json()
    stream = socket.create_connection(("127.0.0.1", dash.port), timeout=30)
    try:
        stream.sendall(f"GET /api/projects/p/tasks/{task['id']}/stream HTTP/1.1\r\n"
                       f"Host: 127.0.0.1:{dash.port}\r\n\r\n".encode())
        assert stream.recv(64).startswith(b"HTTP/1.1 200")
        dash.proc.send_signal(signal.SIGINT)
        wait_for(lambda: "Waiting for connections to close" in (tmp_path / "dashboard.log").read_text(),
                 timeout=30, what="uvicorn to wait for the open stream")
        dash.proc.send_signal(signal.SIGINT)
        dash.proc.wait(timeout=60)
        alive = pid_alive(pid)
    finally:
        stream.close()
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)  # the bug's leftover must not outlive the test
    assert not alive


def test_a_closed_terminal_sighup_stops_the_agents_too(tmp_path, dashboards):
    repo = agent_repo(tmp_path, "p")
    port = free_port()
    dash = dashboards(tmp_path, f"projects:\n  - id: p\n    path: {repo}\n    agent_url: http://127.0.0.1:{port}\n"
                                f"    start: true\n")
    pid = dash.wait_agent("p", "running", lambda a: a["state"] == "running")["pid"]
    try:
        dash.proc.send_signal(signal.SIGHUP)
        dash.proc.wait(timeout=60)
        alive = pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    assert not alive
