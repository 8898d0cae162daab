from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backend.agent.app import build_store, create_app
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


@pytest.fixture
def agent_factory(tmp_path: Path):
    """Start the real agent app under uvicorn on a free port, against a real git repo."""
    started: list[tuple] = []

    def start(token: str | None = None, config: AgentConfig | None = None, project: Path | None = None) -> RunningAgent:
        project_dir = project or make_repo(tmp_path, f"project{len(started)}")
        settings = AgentSettings(project_dir=project_dir, config=config or AgentConfig(), token=token)
        store = build_store(settings)
        store.initialize()
        ctx = serve(create_app(settings, store))
        url = ctx.__enter__()
        client = httpx.Client(base_url=url, timeout=10)
        started.append((ctx, client))
        return RunningAgent(url=url, client=client, store=store, settings=settings)

    yield start
    for ctx, client in reversed(started):
        client.close()
        ctx.__exit__(None, None, None)


@pytest.fixture
def agent(agent_factory) -> Iterator[RunningAgent]:
    yield agent_factory()
