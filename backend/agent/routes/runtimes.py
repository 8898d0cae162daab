"""/agent/runtimes: the runtimes a task may choose here, and whether each can start now."""

from __future__ import annotations

from fastapi import APIRouter

from ...web.errors import ERROR_RESPONSES
from ..deps import DispatcherDep, SettingsDep
from ..runtimechoice import describe
from ..schemas import RuntimeList

router = APIRouter(prefix="/agent", tags=["runtimes"], responses=ERROR_RESPONSES)


@router.get("/runtimes", response_model=RuntimeList)
def runtimes(settings: SettingsDep, dispatcher: DispatcherDep) -> dict:
    """The configured runtimes, the project's default first: `available` is false (with the
    `problem`) while a runtime's CLI cannot be started; `cost: estimated` when Baton computes
    its costs from a price table."""
    return describe(settings.config, dispatcher.ctx.runtimes)
