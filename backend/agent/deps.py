"""FastAPI dependencies: the objects the app factory put on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..store import TaskStore
from .settings import AgentSettings


def _store(request: Request) -> TaskStore:
    return request.app.state.store


def _settings(request: Request) -> AgentSettings:
    return request.app.state.settings


StoreDep = Annotated[TaskStore, Depends(_store)]
SettingsDep = Annotated[AgentSettings, Depends(_settings)]
