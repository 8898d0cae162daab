"""WORKFLOW.md's `agent_runtime` (or Symphony's `codex:`) in the terms of a Baton runtime's own
section (backend/runtimes/<name>/): which runtime a kind names, how Symphony's keys
(command, approval_policy, thread_sandbox, turn_sandbox_policy, timeouts, env) map onto that
section's fields, over agent.yaml's section of the same runtime, and the problems of keys that
mean nothing to it, named as the front matter names them.
"""

from __future__ import annotations

import math
import shlex
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..runtimes.claude_code import ClaudeCodeConfig
from ..runtimes.section import RuntimeSection

if TYPE_CHECKING:
    from .schema import AgentRuntimeSection

RUNTIME_KINDS = {"claudecode": "claude_code", "claude_code": "claude_code", "codex": "codex", "opencode": "opencode"}
CLAUDE_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")


class RuntimeMapError(ValueError):
    """agent_runtime does not make a valid section of its runtime: `(key path, problem)` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {problem}" for key, problem in problems))
        self.problems = problems


def section_class(name: str) -> type[RuntimeSection]:
    if name == "claude_code":
        return ClaudeCodeConfig
    from ..runtimes import RUNTIMES  # codex/opencode sections import their runtimes lazily

    return RUNTIMES[name].section


# Where each runtime-section field comes from in agent_runtime (for error messages).
_SECTION_KEYS = {"command": "command", "extra_args": "command", "model": "model", "env": "env",
                 "timeout": "turn_timeout_ms", "stall_timeout": "stall_timeout_ms", "sandbox": "thread_sandbox",
                 "approval_policy": "approval_policy", "turn_sandbox_policy": "turn_sandbox_policy",
                 "skip_permissions": "approval_policy", "permission_mode": "approval_policy",
                 "allowed_tools": "approval_policy", "config": "approval_policy"}


def runtime_overlay(ar: AgentRuntimeSection, base: RuntimeSection) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """agent_runtime's settings in the terms of its runtime's section (over `base`), and the
    problems of keys that mean nothing to that runtime."""
    name = ar.runtime_name
    out: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    if ar.command is not None:
        argv = shlex.split(ar.command)
        rest = argv[1:]
        if name == "codex" and "app-server" in rest:
            rest.remove("app-server")  # Baton's Codex runtime adds the subcommand itself
        out["command"], out["extra_args"] = argv[0], rest
    if ar.model is not None:
        out["model"] = ar.model
    if ar.env is not None:
        out["env"] = {**base.env, **ar.env}
    if ar.turn_timeout_ms is not None:
        out["timeout"] = math.ceil(ar.turn_timeout_ms / 1000)
    if ar.stall_timeout_ms is not None:
        timeout = out.get("timeout", base.timeout)
        out["stall_timeout"] = timeout if ar.stall_timeout_ms <= 0 else math.ceil(ar.stall_timeout_ms / 1000)
    if name != "codex":
        for key in ("thread_sandbox", "turn_sandbox_policy"):
            if getattr(ar, key) is not None:
                problems.append((key, f"is Codex's; {name} has none"))
    policy = ar.approval_policy
    if name == "claude_code" and policy is not None:
        if policy == "never":
            out["skip_permissions"] = True
        elif isinstance(policy, str):
            if policy in CLAUDE_MODES:
                out["skip_permissions"], out["permission_mode"] = False, policy
            else:
                problems.append(("approval_policy", f"{policy!r}: must be never or a Claude Code permission mode "
                                                    f"({', '.join(CLAUDE_MODES)})"))
        else:
            unknown = sorted(set(policy) - {"mode", "allowed_tools"})
            problems += [(f"approval_policy.{key}", "unknown key (claude_code takes mode and allowed_tools)")
                         for key in unknown]
            out["skip_permissions"] = False
            if "mode" in policy:
                out["permission_mode"] = policy["mode"]
            if "allowed_tools" in policy:
                out["allowed_tools"] = policy["allowed_tools"]
    elif name == "codex":
        if policy is not None:
            out["approval_policy"] = policy
        if ar.thread_sandbox is not None:
            out["sandbox"] = ar.thread_sandbox
        if ar.turn_sandbox_policy is not None:
            out["turn_sandbox_policy"] = ar.turn_sandbox_policy
    elif name == "opencode" and policy is not None:
        config = {k: v for k, v in getattr(base, "config", {}).items() if k != "permission"}
        if policy == "never":
            out["config"] = config  # Baton then pins every permission to allow
        elif isinstance(policy, dict):
            out["config"] = {**config, "permission": policy}
        else:
            problems.append(("approval_policy", f"{policy!r}: must be never or an OpenCode permission object "
                                                "(e.g. {edit: ask, bash: ask})"))
    return out, problems


def build_section(ar: AgentRuntimeSection, base: RuntimeSection, prefix: str) -> RuntimeSection:
    """agent_runtime over `base`, validated by the runtime's own section class; raises
    RuntimeMapError with keys under `prefix` (agent_runtime or codex)."""
    overlay, problems = runtime_overlay(ar, base)
    if not problems:
        try:
            return type(base).model_validate({**base.model_dump(), **overlay})
        except ValidationError as exc:
            seen = set()
            for err in exc.errors():
                loc = err["loc"]
                key = _SECTION_KEYS.get(str(loc[0]), str(loc[0])) if loc else ""
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    message = f"{'.'.join(map(str, loc))}: unknown key"
                if (key, message) not in seen:
                    seen.add((key, message))
                    problems.append((key, message))
    raise RuntimeMapError([(f"{prefix}.{key}" if key else prefix, message) for key, message in problems])
