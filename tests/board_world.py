"""Real processes behind the browser tests of the phone layout, the keyboard, accessibility and
the drawer: a baton-dashboard over one project, either a local one (the store on disk, no agent:
quick, its tasks stay where they are put) or one served by a baton-agent running the fake CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from backend.models import STATUSES
from conftest import FAKE_CLAUDE
from support import ROOT, AgentProcess, free_port, make_repo, wait_for_http

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"


class Board:
    """baton-dashboard on a free port over one project `p` (local, or through `agent_url`)."""

    def __init__(self, root: Path, *, agent: bool, agent_yaml: str = "", agent_env: dict | None = None,
                 dashboard_yaml: str = "", dashboard_env: dict | None = None) -> None:
        """`agent_yaml`: more agent.yaml lines (e.g. `landing: review`); `agent_env`: more of its environment;
        `dashboard_yaml`, `dashboard_env`: the same for the dashboard (top-level projects.yaml keys, e.g. `chat:`)."""
        self.root = root
        self.agent: AgentProcess | None = None
        self.repo = make_repo(root, "p")
        source = f"path: {self.repo}"
        if agent:
            wrapper = root / "bin" / "claude"
            wrapper.parent.mkdir()
            wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CLAUDE} \"$@\"\n")
            wrapper.chmod(0o755)
            (self.repo / "agent.yaml").write_text(
                f"poll_interval_seconds: 0.5\ntest_command: ''\nclaude_code:\n  command: {wrapper}\n{agent_yaml}")
            port = free_port()
            self.agent = AgentProcess(["--port", str(port), "--project-dir", str(self.repo)], self.repo,
                                      root / "agent-logs", {"FAKE_CLAUDE_STATE": str(root / "fake-state"),
                                                            **(agent_env or {})})
            self.agent_url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{self.agent_url}/agent/health", self.agent.proc)
            source = f"agent_url: {self.agent_url}"
        (root / "projects.yaml").write_text(
            f"{dashboard_yaml}projects:\n  - id: p\n    name: Pea\n    {source}\n    color: '#4f8cff'\n")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.dashboard = subprocess.Popen(
            [sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml", "--port", str(port)],
            cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT), **(dashboard_env or {})}, stdout=subprocess.DEVNULL,
            stderr=open(root / "dashboard.err", "w"))
        wait_for_http(f"{self.url}/api/health", self.dashboard)

    def create(self, title: str, **fields) -> str:
        response = httpx.post(f"{self.url}/api/projects/p/tasks", json={"title": title, **fields})
        response.raise_for_status()
        return response.json()["id"]

    def task(self, task_id: str) -> dict:
        # The statuses are asked in turn: a task that moved between two asks is found on a later pass.
        for _ in range(3):
            for status in STATUSES:
                response = httpx.get(f"{self.url}/api/projects/p/tasks/{status}/{task_id}.md")
                if response.status_code == 200:
                    return response.json()
        raise AssertionError(f"no task {task_id}")

    def close(self) -> None:
        self.dashboard.send_signal(signal.SIGTERM)
        self.dashboard.wait(timeout=30)
        if self.agent is not None:
            self.agent.stop()


def in_review(world: Board, title: str, files: dict[str, str], **fields) -> tuple[str, str]:
    """A task of a store-backed board (`world.store` set) waiting in review: (its id, the tested sha)."""
    from support import in_review as put_in_review

    return put_in_review(world.store, world.repo, title, files, **fields)[:2]


def open_page(browser, url: str, *, width: int = 1500, height: int = 950, **options):
    """A tab on the board in its own context; `tab.errors` collects page errors and console errors."""
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    tab = context.new_page()
    tab.errors = []
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    return context, tab


def wait_ready(tab) -> None:
    tab.wait_for_selector("body[data-board-ready='1']", state="attached")
