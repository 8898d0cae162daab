"""OpenCode (`opencode run --format json`) as a Baton runtime.

`run`, not `serve`: one process per turn is exactly what the dispatcher already contains and
limits (its own process group, the task's environment marker, wall and stall limits, the
SIGKILL escalation), with no long-lived server to start, keep alive, authenticate (its
password would be one more secret) and reattach after a restart. A feedback turn continues the
session with `-s`, which `run` does as well as the HTTP API.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..base import Invocation, Limits, McpServer, OneShotTurn, RuntimeProblem, TurnRequest, command_problem
from .config import OpenCodeConfig
from .events import TurnParser

INSTALL_HINT = "npm install -g opencode-ai"
CONFIG_NAME = "opencode.json"
# How long OpenCode waits for an MCP server's tools (its default, 5 s, is short for a Python
# server on a busy machine).
MCP_TIMEOUT_MS = 30_000
# Background traffic and downloads a task does not need (and that could hang it).
QUIET_ENV = {"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1",
             "OPENCODE_DISABLE_LSP_DOWNLOAD": "1"}
XDG_DIRS = {"XDG_CONFIG_HOME": "config", "XDG_DATA_HOME": "data", "XDG_CACHE_HOME": "cache",
            "XDG_STATE_HOME": "state"}
STALL_HINT = ("OpenCode retries a failing model provider silently (no output, for minutes, and it may ignore "
              "SIGTERM meanwhile): check the provider settings in opencode.config in agent.yaml (baseURL, model "
              "name), that its API key reaches OpenCode (opencode.env), and OpenCode's log (the task's stderr "
              "log with opencode.extra_args [\"--print-logs\"]; else OpenCode's log folder, "
              "<task>.runtime/data/opencode/log with isolated_state).")


def generated_config(user: dict[str, Any]) -> dict[str, Any]:
    """The user's `opencode.config` with Baton's pins: no self-update, no sharing of sessions,
    and (unless the user wrote `permission`) every permission allowed, since `run` rejects a
    permission it would ask for and nobody is there to answer. `deny` rules the user writes
    still hold. No snapshots unless asked for: OpenCode's undo history would copy every
    worktree into its state folder, and Baton keeps the agent's work on the task branch."""
    out = dict(user)
    out["autoupdate"] = False
    out["share"] = "disabled"
    out.setdefault("permission", {"*": "allow"})
    out.setdefault("snapshot", False)
    return out


# A planning turn's rules. `edit` covers every file-writing tool (write, edit, apply_patch: 1.18.33
# maps the legacy `tools.write`/`tools.patch` switches onto it); a tool denied outright is not
# even offered to the model.
READ_ONLY_DENY = {"edit": "deny", "bash": "deny"}


def read_only_permission(rules: Any) -> dict[str, Any]:
    """`rules` (a permission config: one action for everything, or rules by tool) with the
    read-only denials placed last: OpenCode lets the last matching rule win, so no earlier
    rule of the user's (`"*": "allow"`, `"bash": {"git *": "allow"}`) can re-allow them."""
    if isinstance(rules, dict):
        kept = {k: v for k, v in rules.items() if k not in READ_ONLY_DENY}
    else:
        kept = {"*": rules if isinstance(rules, str) else "allow"}
    return {**kept, **READ_ONLY_DENY}


def read_only_config(config: dict[str, Any], agent: str | None) -> dict[str, Any]:
    """The generated config of a planning turn: the denials in the global permission and in
    every agent's own (an agent's rules come after the global ones, so they would win)."""
    out = dict(config)
    out["permission"] = read_only_permission(out.get("permission", "allow"))
    agents = dict(out["agent"]) if isinstance(out.get("agent"), dict) else {}
    for name in {*agents, agent or "build"}:
        section = dict(agents[name]) if isinstance(agents.get(name), dict) else {}
        section["permission"] = read_only_permission(section.get("permission", {}))
        agents[name] = section
    out["agent"] = agents
    return out


def with_mcp_servers(config: dict[str, Any], servers: list[McpServer]) -> dict[str, Any]:
    """The turn's MCP servers added to the config's `mcp` (the user's own servers stay; one of
    Baton's replaces a user's server of the same name). Their tools are `<name>_<tool>`, allowed
    by the generated `"*": "allow"` unless the user's rules say otherwise."""
    if not servers:
        return config
    out = dict(config)
    mcp = dict(out["mcp"]) if isinstance(out.get("mcp"), dict) else {}
    for server in servers:
        mcp[server.name] = {"type": "local", "command": [server.command, *server.args],
                            "environment": dict(server.env), "enabled": True, "timeout": MCP_TIMEOUT_MS}
    out["mcp"] = mcp
    return out


def write_atomically(path: Path, text: str) -> None:
    """Whole or not at all (a turn may start while an earlier one's file is read), and only
    for this user: it may hold provider settings."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OpenCodeRuntime:
    name = "opencode"
    stall_hint = STALL_HINT
    # `run -s <unknown id>` ends with "Session not found" and exit 1 instead of starting
    # afresh: only feedback turns (same attempt, same state folder) continue a session.
    resume_after_restart = False

    def __init__(self, config: OpenCodeConfig) -> None:
        self.config = config
        self.limits = Limits(timeout=config.timeout, stall_timeout=config.stall_timeout)

    def check(self) -> RuntimeProblem | None:
        return command_problem(self.config.command, "the OpenCode CLI", "opencode.command", INSTALL_HINT)

    def model_for(self, request_model: str | None) -> str | None:
        configured = self.config.config.get("model")
        return request_model or self.config.model or (configured if isinstance(configured, str) else None)

    def turn(self, request: TurnRequest) -> OneShotTurn:
        parser = TurnParser(model=self.model_for(request.model))
        return OneShotTurn(self.invocation(request), parser.parse_line, parser.usage)

    def invocation(self, request: TurnRequest) -> Invocation:
        cfg = self.config
        cwd = Path(request.cwd)
        # Outside the worktree (`git add -A` would commit it): the dispatcher's per-task folder.
        scratch = Path(request.scratch) if request.scratch else Path(tempfile.mkdtemp(prefix="baton-opencode-"))
        scratch.mkdir(parents=True, exist_ok=True)
        config_path = scratch / CONFIG_NAME
        generated = generated_config(cfg.config)
        if request.read_only:
            generated = read_only_config(generated, cfg.agent)
        else:
            generated = with_mcp_servers(generated, request.mcp_servers)
        write_atomically(config_path, json.dumps(generated, indent=2) + "\n")

        argv = [cfg.command, "run", "--format", "json", "--dir", str(cwd)]
        if request.model or cfg.model:
            argv += ["-m", request.model or cfg.model]
        if cfg.agent:
            argv += ["--agent", cfg.agent]
        if request.resume:
            argv += ["-s", request.resume]
        argv += cfg.extra_args
        # Attached images: `run --file` (an array option, so each one is its own `-f PATH` pair, and
        # nothing positional follows them: the prompt goes on stdin).
        for image in request.images:
            argv += ["-f", str(image)]

        # OPENCODE_* variables inherited from Baton's environment (OPENCODE_CONFIG_CONTENT,
        # OPENCODE_PERMISSION …) would override the generated config's pins; opencode.env may
        # still set them on purpose.
        inherited = {k: v for k, v in request.env.items() if not k.startswith("OPENCODE_")}
        env = {**inherited, **cfg.env_additions(request.env), **QUIET_ENV}
        # OpenCode's tools run in $PWD, not in the process's working directory: an inherited
        # PWD would send them to another checkout.
        env["PWD"] = str(cwd)
        env["OPENCODE_CONFIG"] = str(config_path)
        if request.read_only:
            # The worktree's opencode.json and .opencode/agent/*.md load after OPENCODE_CONFIG, and
            # an agent's rules there would re-allow what the global ones deny: not read at all.
            env.pop("OPENCODE_CONFIG_CONTENT", None)
            env["OPENCODE_DISABLE_PROJECT_CONFIG"] = "1"
            env["OPENCODE_PERMISSION"] = json.dumps(READ_ONLY_DENY)  # merged last, over every source
        if cfg.isolated_state:
            # Per task, so a feedback turn's `-s` finds the session the first turn made.
            for name, folder in XDG_DIRS.items():
                (scratch / folder).mkdir(exist_ok=True)
                env[name] = str(scratch / folder)
        # The prompt goes on stdin: `run` reads it as is when no message argument is given (a
        # message argument with spaces reaches the model wrapped in double quotes), and a task's
        # content (up to 256 KiB) would not fit in one argument (Linux: 128 KiB).
        return Invocation(argv=argv, env=env, stdin=request.prompt, cwd=cwd)
