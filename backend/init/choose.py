"""Defaults baton-init picks so a new project collides with nothing: the agent's port, the
board colour."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from ..dashboard.config import PALETTE, DashboardConfig

FIRST_AGENT_PORT = 9100  # baton-agent's default port; task ports start at 9200 (agent.yaml)


def registered_port(url: str | None) -> int | None:
    if not url:
        return None
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def port_in_use(port: int) -> bool:
    """Something listens on (or holds) 127.0.0.1:port, so an agent could not bind it."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def next_port(config: DashboardConfig) -> int:
    """The first port from 9100 that no registered agent_url names and nothing listens on."""
    used = {registered_port(p.agent_url) for p in config.projects}
    for port in range(FIRST_AGENT_PORT, 65536):
        if port not in used and not port_in_use(port):
            return port
    raise OSError("no free port from 9100 up on 127.0.0.1")


def next_colour(config: DashboardConfig) -> str:
    """The first palette colour no project shows yet (unset colours count as the board's default)."""
    used = {(p.color or "").lower() for p in config.with_defaults().projects}
    return next((c for c in PALETTE if c.lower() not in used), PALETTE[len(config.projects) % len(PALETTE)])
