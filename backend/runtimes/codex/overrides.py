"""`codex.config` as `-c key=value` arguments (Codex parses each value as TOML)."""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..base import TurnRequest

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def toml_value(value: Any) -> str:
    """`value` as a TOML literal, for `-c key=value` (Codex parses the value as TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, as long as non-ASCII stays raw (JSON's
        # surrogate-pair escapes are not valid TOML).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = (f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise ValueError(f"{value!r} cannot be written as a TOML value")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def config_args(config: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in config.items():
        if value is None:
            continue  # TOML has no null: an unset key is Codex's default anyway
        args += ["-c", f"{key}={toml_value(value)}"]
    return args


# Codex gives a stdio MCP server 10 s to start by default; a Python server on a busy machine
# may need longer.
MCP_STARTUP_TIMEOUT_SEC = 30.0


def mcp_args(request: "TurnRequest") -> list[str]:
    """The turn's MCP servers as `-c mcp_servers.<name>.*` overrides (Codex has no config-file
    flag). Their `env` is passed whole: Codex hands a server only a short default list of its own
    environment. None on a read-only turn."""
    if request.read_only:
        return []
    args: list[str] = []
    for server in request.mcp_servers:
        args += config_args({f"mcp_servers.{server.name}.command": server.command,
                             f"mcp_servers.{server.name}.args": list(server.args),
                             f"mcp_servers.{server.name}.env": dict(server.env),
                             f"mcp_servers.{server.name}.startup_timeout_sec": MCP_STARTUP_TIMEOUT_SEC})
    return args
