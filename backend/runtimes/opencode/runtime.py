"""Being written (issue #8)."""

from __future__ import annotations

from ..base import Limits, TurnRequest
from .config import OpenCodeConfig


class OpenCodeRuntime:
    name = "opencode"
    stall_hint = ""
    resume_after_restart = False

    def __init__(self, config: OpenCodeConfig) -> None:
        self.config = config
        self.limits = Limits(timeout=config.timeout, stall_timeout=config.stall_timeout)

    def check(self):
        return {"code": "runtime_unavailable", "message": "not written yet"}

    def turn(self, request: TurnRequest):
        raise NotImplementedError
