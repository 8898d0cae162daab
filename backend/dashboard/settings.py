"""Everything baton-dashboard needs to know, decided once at start and injected."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from .config import DashboardConfig

FRONTEND_DIR = Path(__file__).resolve().parents[2] / "frontend"
SESSION_COOKIE = "baton_session"


@dataclass(frozen=True)
class DashboardSettings:
    config: DashboardConfig
    host: str = "127.0.0.1"
    port: int = 8888
    token: str | None = None
    frontend_dir: Path = FRONTEND_DIR

    @property
    def session_value(self) -> str | None:
        """What the session cookie holds: derived from the token, never the token itself."""
        if not self.token:
            return None
        return hmac.new(self.token.encode(), b"baton-dashboard-session", hashlib.sha256).hexdigest()
