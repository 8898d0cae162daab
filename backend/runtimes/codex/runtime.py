"""Codex (`codex app-server`, JSON-RPC over stdio) as a Baton runtime: one process per turn."""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

from ..base import Invocation, Limits, RuntimeProblem, TurnRequest, command_problem
from .config import CodexConfig
from .turn import CodexTurn

INSTALL_HINT = "npm install -g @openai/codex"
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


class CodexRuntime:
    name = "codex"
    stall_hint = ("Codex retries a model provider that fails or does not answer without printing anything "
                  "(see request_max_retries, stream_max_retries and stream_idle_timeout_ms, settable through "
                  "codex.config), and an MCP server from CODEX_HOME can hang its start (codex.isolated_home).")
    # A new attempt continues the earlier attempt's thread; CodexTurn starts a fresh thread by
    # itself when Codex no longer knows it.
    resume_after_restart = True

    def __init__(self, config: CodexConfig) -> None:
        self.config = config
        self.limits = Limits(timeout=config.timeout, stall_timeout=config.stall_timeout)

    def check(self) -> RuntimeProblem | None:
        return command_problem(self.config.command, "the Codex CLI", "codex.command", INSTALL_HINT)

    def turn(self, request: TurnRequest) -> CodexTurn:
        return CodexTurn(self.invocation(request), request, self.config)

    def invocation(self, request: TurnRequest) -> Invocation:
        cfg = self.config
        argv = [cfg.command, "app-server", *config_args(cfg.config), *cfg.extra_args]
        env = {**request.env, **cfg.env_additions(request.env)}
        if cfg.isolated_home:
            # Outside the worktree, kept for the attempt: a feedback turn's thread/resume finds
            # the thread's rollout there.
            home = (Path(request.scratch) / "codex-home" if request.scratch is not None
                    else Path(tempfile.mkdtemp(prefix="baton-codex-home-")))
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            env["CODEX_HOME"] = str(home)
        return Invocation(argv=argv, env=env, stdin=None, cwd=request.cwd)
