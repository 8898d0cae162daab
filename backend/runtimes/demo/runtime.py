"""The demo runtime: runs the scripted agent (agent.py) with this interpreter. The agent prints
Claude Code's stream-json, so Claude Code's parser reads it."""

from __future__ import annotations

import os
from pathlib import Path

from ..base import Invocation, Limits, OneShotTurn, RuntimeProblem, TurnRequest, command_problem
from ..claude_code import ClaudeCodeConfig, ClaudeCodeRuntime
from ..claude_code.runtime import MessageUsage
from .config import DemoConfig

AGENT_MODULE = "backend.runtimes.demo.agent"
# The folder that holds the `backend` package: put first on the agent's import path, so the
# worktree (a project of the user's, maybe with its own `backend/`) cannot shadow Baton's code.
_BATON_ROOT = str(Path(__file__).resolve().parents[3])


class DemoRuntime:
    name = "demo"
    stall_hint = ""
    resume_after_restart = False

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.limits = Limits(timeout=config.timeout, stall_timeout=config.stall_timeout)
        self._parser = ClaudeCodeRuntime(ClaudeCodeConfig())

    def check(self) -> RuntimeProblem | None:
        return command_problem(self.config.command, "a Python interpreter with Baton installed", "demo.command",
                               "use the Python that runs Baton (the default)")

    def turn(self, request: TurnRequest) -> OneShotTurn:
        cfg = self.config
        # -P: the worktree is not put on the import path (see _BATON_ROOT).
        argv = [cfg.command, "-P", "-m", AGENT_MODULE, "--pace", str(cfg.pace)]
        if request.scratch is not None:
            argv += ["--state-dir", str(request.scratch)]  # where a session's script waits for --resume
        if request.resume:
            argv += ["--resume", request.resume]
        if request.read_only:
            argv.append("--read-only")  # a planning turn: the scripted agent runs no step
        argv += cfg.extra_args
        env = {**request.env, **cfg.env_additions(request.env)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_BATON_ROOT, env.get("PYTHONPATH")) if p)
        usage = MessageUsage()
        invocation = Invocation(argv=argv, env=env, stdin=request.prompt, cwd=request.cwd)
        return OneShotTurn(invocation, lambda line: self._parser.parse_line(line, usage), usage.event)
