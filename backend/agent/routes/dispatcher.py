"""/agent/dispatcher: state and start/stop/restart."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...web.errors import ERROR_RESPONSES
from ..deps import DispatcherDep
from ..schemas import DispatcherStatus

router = APIRouter(prefix="/agent/dispatcher", tags=["dispatcher"], responses=ERROR_RESPONSES)

ForceQuery = Annotated[bool, Query(description="interrupt running tasks and return them to pending")]


@router.get("", response_model=DispatcherStatus)
def status(dispatcher: DispatcherDep) -> dict:
    return dispatcher.status()


@router.post("/start", response_model=DispatcherStatus)
def start(dispatcher: DispatcherDep) -> dict:
    dispatcher.start()
    return dispatcher.status()


@router.post("/stop", response_model=DispatcherStatus)
def stop(dispatcher: DispatcherDep, force: ForceQuery = False) -> dict:
    """No new claims; running tasks finish unless `force`."""
    dispatcher.stop(force=force)
    return dispatcher.status()


@router.post("/restart", response_model=DispatcherStatus)
def restart(dispatcher: DispatcherDep, force: ForceQuery = False) -> dict:
    dispatcher.restart(force=force)
    return dispatcher.status()
