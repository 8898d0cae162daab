"""Codex (`codex app-server`, JSON-RPC over stdio) as a Baton runtime: one process per turn."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..base import Invocation, Limits, RuntimeProblem, TurnRequest, command_problem
from .config import CodexConfig
from .overrides import config_args, mcp_args
from .turn import CodexTurn

INSTALL_HINT = "npm install -g @openai/codex"


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
        argv = [cfg.command, "app-server", *config_args(cfg.config), *mcp_args(request), *cfg.extra_args]
        env = {**request.env, **cfg.env_additions(request.env)}
        if cfg.isolated_home:
            # Outside the worktree, kept for the attempt: a feedback turn's thread/resume finds
            # the thread's rollout there.
            home = (Path(request.scratch) / "codex-home" if request.scratch is not None
                    else Path(tempfile.mkdtemp(prefix="baton-codex-home-")))
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            env["CODEX_HOME"] = str(home)
        return Invocation(argv=argv, env=env, stdin=None, cwd=request.cwd)
