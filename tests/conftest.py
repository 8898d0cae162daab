from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from backend.agent.app import create_app
from backend.mirrors import MirrorWriter
from backend.agent.settings import AgentSettings
from backend.config import AgentConfig
from backend.store import TaskStore
from support import make_repo, serve


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
    ) -> RunningAgent:
        project_dir = project or make_repo(tmp_path, f"project{len(started)}")
        settings = AgentSettings(project_dir=project_dir, config=config or AgentConfig(), token=token)
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
