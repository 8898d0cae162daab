from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from backend.agent.app import create_app
from backend.mirrors import MirrorWriter
from backend.agent.settings import AgentSettings
from backend.config import AgentConfig, ClaudeCodeConfig
from backend.store import TaskStore
from support import AgentProcess, acknowledge_guardrails, free_port, make_repo, serve, wait_for_http



@pytest.fixture(autouse=True, scope="session")
def _no_model_keys() -> Iterator[None]:
    """A developer's own Anthropic key (or endpoint) never reaches a test: the chat would send
    real, paid requests. Tests that chat set a key and a stand-in's URL themselves."""
    saved = {name: os.environ.pop(name) for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN")
             if name in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, one per test module (each browser test module skips loudly first when
    Playwright or Chromium is missing: browsing.playwright_or_skip)."""
    from browsing import chromium, playwright_or_skip

    with chromium(playwright_or_skip()) as launched:
        yield launched


@pytest.fixture
def page(browser, world):
    """A tab on the board of the module's `world` (a board_world.Board), after its first render;
    any error the page logged fails the test. Modules with another kind of world define their own."""
    from board_world import open_page, wait_ready

    context, tab = open_page(browser, world.url)
    tab.goto(world.url)
    wait_ready(tab)
    yield tab
    assert tab.errors == [], tab.errors
    context.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@dataclass
class RunningAgent:
    url: str
    client: httpx.Client
    store: TaskStore
    settings: AgentSettings
    app: FastAPI


@pytest.fixture
def agent_factory(tmp_path: Path):
    """Start the real agent app under uvicorn on a free port, against a real git repo."""
    started: list[tuple] = []

    def start(
        token: str | None = None,
        config: AgentConfig | None = None,
        project: Path | None = None,
        lock_timeout: float = 30.0,
        dispatch: bool = False,
        guardrails_acknowledged: bool = True,
    ) -> RunningAgent:
        project_dir = project or make_repo(tmp_path, f"project{len(started)}")
        if guardrails_acknowledged:  # the fake CLIs are configured as the real ones are by default
            acknowledge_guardrails(project_dir)
        config = (config or AgentConfig()).model_copy(update={"dispatcher_autostart": dispatch})
        settings = AgentSettings(project_dir=project_dir, config=config, token=token)
        store = TaskStore(settings.store_path, mirrors=MirrorWriter(settings.tasks_dir), lock_timeout=lock_timeout)
        store.initialize()
        app = create_app(settings, store)
        ctx = serve(app)
        url = ctx.__enter__()
        client = httpx.Client(base_url=url, timeout=10)
        started.append((ctx, client))
        return RunningAgent(url=url, client=client, store=store, settings=settings, app=app)

    yield start
    for ctx, client in reversed(started):
        client.close()
        ctx.__exit__(None, None, None)


@pytest.fixture
def agent(agent_factory) -> Iterator[RunningAgent]:
    yield agent_factory()


FAKE_CLAUDE = Path(__file__).parent / "fakes" / "fake_claude.py"


@dataclass
class FakeCli:
    command: str
    log: Path
    state: Path

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def config(self, **overrides) -> AgentConfig:
        """An AgentConfig that runs this fake; keyword arguments override (claude_code too)."""
        claude = {"command": self.command, "timeout": 60, "stall_timeout": 30, **overrides.pop("claude_code", {})}
        base = {"test_command": "", "poll_interval_seconds": 0.5, "max_parallel_workers": 2, **overrides}
        return AgentConfig(claude_code=ClaudeCodeConfig(**claude), **base)


@pytest.fixture
def fake_cli(tmp_path: Path, monkeypatch) -> FakeCli:
    """An executable `claude` that is the fake CLI; its state and call log live in tmp_path."""
    wrapper = tmp_path / "bin" / "claude"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CLAUDE} \"$@\"\n")
    wrapper.chmod(0o755)
    log, state = tmp_path / "fake-calls.jsonl", tmp_path / "fake-state"
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(log))
    monkeypatch.setenv("FAKE_CLAUDE_STATE", str(state))
    return FakeCli(command=str(wrapper), log=log, state=state)


def fake_task(title: str, scenario: dict, **fields) -> dict:
    """A task body whose content tells the fake CLI what to do."""
    return {"title": title, "content": "FAKE: " + json.dumps(scenario), **fields}


@pytest.fixture
def started(tmp_path):
    running: list[AgentProcess] = []

    def start(repo: Path, *extra: str, env=None, cwd: Path | None = None,
              guardrails_acknowledged: bool = True) -> tuple[AgentProcess, str]:
        port = free_port()
        agent = AgentProcess(["--port", str(port), "--project-dir", str(repo), *extra], cwd or repo,
                             tmp_path / f"logs{len(running)}", env, guardrails_acknowledged)
        running.append(agent)
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/agent/health", agent.proc)
        return agent, url

    yield start
    for agent in running:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


@pytest.fixture
def dashboard_factory():
    """Serve the real dashboard app under uvicorn; yields a function returning an httpx client."""
    from backend.dashboard.app import create_app as create_dashboard
    from backend.dashboard.config import DashboardConfig
    from backend.dashboard.settings import DashboardSettings

    started: list[tuple] = []

    def start(projects: list[dict], token: str | None = None, timeout: float = 1.0, **config_keys) -> httpx.Client:
        """`config_keys` are further projects.yaml keys (e.g. session_hours)."""
        config = DashboardConfig.model_validate(
            {"agent_timeout_seconds": timeout, "projects": projects, **config_keys}).with_defaults()
        ctx = serve(create_dashboard(DashboardSettings(config=config, token=token)))
        url = ctx.__enter__()
        client = httpx.Client(base_url=url, timeout=30)
        started.append((ctx, client))
        return client

    yield start
    for ctx, client in reversed(started):
        client.close()
        ctx.__exit__(None, None, None)


@pytest.fixture
def linear_standin(tmp_path):
    """A stand-in Linear API as a process (tests/trackers_support.py: seed, move, fail, stats)."""
    from trackers_support import start_linear_standin

    with start_linear_standin(tmp_path / "linear-standin") as standin:
        yield standin


@pytest.fixture
def jira_standin(tmp_path):
    """A stand-in Jira Cloud API as a process (tests/trackers_support.py)."""
    from trackers_support import start_jira_standin

    with start_jira_standin(tmp_path / "jira-standin") as standin:
        yield standin
