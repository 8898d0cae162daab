"""projects.yaml `unattended: true`: the dashboard starts a project's baton-agent with the
guardrails flag, which a repository's WORKFLOW.md whose runtime bypasses its permission prompts
needs (README "Unattended: a repository's `WORKFLOW.md`"). Real dashboard and agent processes,
a stand-in Linear, the fake Claude CLI behind an executable wrapper."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.config import ConfigError
from backend.dashboard.config import load_dashboard_config
from backend.guardrails import ACK_NAME, FLAG
from conftest import FAKE_CLAUDE
from support import ROOT, AgentProcess, free_port, make_repo, pid_alive, wait_for, wait_for_http
from trackers_support import start_standin

WAIT = 90  # seconds: a generous deadline for what the processes do (the machine is shared)


# ----- the key's validation ----------------------------------------------------------------------


def load(tmp_path: Path, project: str) -> object:
    path = tmp_path / "projects.yaml"
    path.write_text(f"projects:\n  - id: p\n    path: {tmp_path}\n    agent_url: http://127.0.0.1:9100\n{project}")
    return load_dashboard_config(path)


def test_unattended_is_only_for_agents_the_dashboard_starts(tmp_path):
    assert load(tmp_path, "").projects[0].unattended is False  # the default
    assert load(tmp_path, "    start: true\n    unattended: true\n").projects[0].unattended is True
    for without_start in ("    unattended: true\n", "    start: false\n    unattended: true\n"):
        with pytest.raises(ConfigError) as err:
            load(tmp_path, without_start)
        assert str(err.value) == (f"{tmp_path / 'projects.yaml'}: projects[0] (id 'p'): unattended: true only for "
                                  "agents the dashboard starts (start: true); an agent you start yourself takes "
                                  "the guardrails flag on its own command line")
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "    start: true\n    unattended: yes please\n")
    assert "projects[0] (id 'p'): unattended: " in str(err.value)


# ----- a real dashboard starting real agents ---------------------------------------------------


class Dashboard:
    def __init__(self, tmp_path: Path, projects: list[dict], env: dict[str, str] | None = None) -> None:
        config = tmp_path / "projects.yaml"
        config.write_text(json.dumps({"projects": projects}))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = open(tmp_path / "dashboard.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "backend.dashboard.cli", "--config", str(config),
                                      "--port", str(self.port)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                     stdout=self.out, stderr=subprocess.STDOUT)
        wait_for_http(f"{self.url}/api/health", self.proc, timeout=WAIT)

    def agent(self, project_id: str) -> dict:
        projects = httpx.get(f"{self.url}/api/projects", timeout=30).json()["projects"]
        return next(p for p in projects if p["id"] == project_id)["agent"]

    def settled(self, project_id: str) -> dict:
        """The agent's status once it runs or failed (never restarting in between)."""
        seen: list[str] = []

        def done() -> dict | None:
            agent = self.agent(project_id)
            seen.append(agent["state"])
            return agent if agent["state"] in ("running", "failed") else None

        agent = wait_for(done, timeout=WAIT, interval=0.1, what=f"{project_id}'s agent to run or fail")
        assert "restarting" not in seen, seen
        return agent

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.out.close()


@pytest.fixture
def dashboards():
    started: list[Dashboard] = []
    yield lambda *a, **kw: started.append(Dashboard(*a, **kw)) or started[-1]
    for dashboard in started:  # a failed test must not leave agents behind
        dashboard.stop()


def unguarded_workflow_repo(tmp_path: Path, name: str, endpoint: str) -> Path:
    """A repository whose WORKFLOW.md runs Claude Code with agent.yaml's default
    skip_permissions (true, no approval_policy): a runtime without its permission prompts."""
    repo = make_repo(tmp_path, name)
    wrapper = tmp_path / "bin" / "claude"
    if not wrapper.exists():
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CLAUDE} \"$@\"\n")
        wrapper.chmod(0o755)
    (repo / "WORKFLOW.md").write_text(
        f"---\ntracker:\n  kind: linear\n  endpoint: {endpoint}\n  api_key: $LINEAR_API_KEY\n  team: ENG\n"
        f"agent_runtime:\n  kind: claudecode\n  command: {wrapper}\n---\nWork on {{{{ issue.identifier }}}}\n")
    return repo


def test_unattended_starts_the_workflow_agent_and_without_it_the_start_fails(tmp_path, dashboards):
    standin = start_standin("linear", tmp_path / "standin", teams=["ENG"])
    try:
        yes = unguarded_workflow_repo(tmp_path, "yes", standin.url)
        no = unguarded_workflow_repo(tmp_path, "no", standin.url)
        yes_port, no_port = free_port(), free_port()
        dash = dashboards(tmp_path, [
            {"id": "yes", "path": str(yes), "agent_url": f"http://127.0.0.1:{yes_port}", "start": True,
             "unattended": True},
            {"id": "no", "path": str(no), "agent_url": f"http://127.0.0.1:{no_port}", "start": True}],
            env=standin.environ)

        running = dash.settled("yes")
        assert running["state"] == "running" and running["pid"], running
        health = wait_for(lambda: httpx.get(f"http://127.0.0.1:{yes_port}/agent/health", timeout=10).json(),
                          timeout=WAIT, what="the agent's health")
        assert health["workflow"]["path"] == str(yes / "WORKFLOW.md"), health["workflow"]
        assert health["workflow"]["state"] == "ok" and health["workflow"]["error"] is None, health["workflow"]
        # The flag acknowledged the workflow's runtime, so its tasks will be claimed.
        assert json.loads((yes / "data" / ACK_NAME).read_text())["runtimes"] == ["claude_code"]

        failed = dash.settled("no")
        assert failed["state"] == "failed" and failed["last_exit_code"] == 2, failed
        assert failed["reason"].startswith("configuration or start-up problem: "), failed
        assert f"{no / 'WORKFLOW.md'}: agent_runtime: " in failed["reason"], failed
        assert failed["reason"].endswith(f"needs {FLAG}"), failed
        assert not (no / "data" / ACK_NAME).exists()

        assert dash.stop() == 0
        assert not pid_alive(running["pid"])
        assert standin.environ["LINEAR_API_KEY"] not in (yes / "logs" / "baton-agent.log").read_text()
    finally:
        standin.stop()


def test_unattended_agent_of_a_project_whose_agent_already_runs_fails_without_restarts(tmp_path, dashboards):
    # With the flag, an agent that finds another one running records its acknowledgement and
    # exits 0: the dashboard must report that as it reports exit 1, not start it again and again.
    repo = make_repo(tmp_path, "p")
    (repo / "agent.yaml").write_text("dispatcher_autostart: false\n")
    own_port = free_port()
    own = AgentProcess(["--port", str(own_port), "--project-dir", str(repo)], repo, tmp_path / "own")
    try:
        wait_for_http(f"http://127.0.0.1:{own_port}/agent/health", own.proc, timeout=WAIT)
        dash = dashboards(tmp_path, [{"id": "p", "path": str(repo), "agent_url": f"http://127.0.0.1:{free_port()}",
                                      "start": True, "unattended": True}])
        failed = dash.settled("p")
        assert failed["state"] == "failed" and failed["last_exit_code"] == 0 and failed["restarts"] == 0, failed
        assert failed["reason"].startswith("another baton-agent already runs for this repository: "), failed
        assert failed["message"].endswith("; not restarted (see its log)"), failed
        assert own.proc.poll() is None  # the agent that was there runs on
    finally:
        own.stop()
