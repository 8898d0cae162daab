"""agent.yaml `opencode:`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..section import RuntimeSection


class OpenCodeConfig(RuntimeSection):
    command: str = Field(default="opencode", min_length=1)
    # model: "provider/model", as OpenCode names it.
    agent: str | None = Field(default=None, min_length=1)  # --agent
    # Written, with Baton's pins (no autoupdate, no sharing, every permission allowed unless
    # you set `permission`), to an opencode.json outside the worktree (OPENCODE_CONFIG).
    config: dict[str, Any] = Field(default_factory=dict)
    # true: OpenCode's state (sessions, auth, caches) in a folder of its own per task
    # (XDG_* variables); false: the user's, so `opencode auth login` credentials work.
    isolated_state: bool = False
