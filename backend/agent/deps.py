"""FastAPI dependencies: the objects the app factory put on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..dispatcher.dispatcher import Dispatcher
from ..store import TaskStore
from .settings import AgentSettings


def _store(request: Request) -> TaskStore:
    return request.app.state.store


def _settings(request: Request) -> AgentSettings:
    return request.app.state.settings


def _dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


StoreDep = Annotated[TaskStore, Depends(_store)]
SettingsDep = Annotated[AgentSettings, Depends(_settings)]
DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]
