"""/agent/health: the one endpoint that needs no token."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ... import __version__
from ..deps import SettingsDep
from ..schemas import Health

router = APIRouter(prefix="/agent", tags=["health"])


@router.get("/health", response_model=Health)
def health(request: Request, settings: SettingsDep) -> Health:
    return Health(
        status="ok",
        project=settings.project_name,
        version=__version__,
        uptime_seconds=round(time.monotonic() - request.app.state.started_monotonic, 3),
    )
