"""The coding-agent runtimes Baton can run, in one place.

Adding one: a folder here with its agent.yaml section (config.py, a RuntimeSection) and its
Runtime (see base.py), an entry in RUNTIMES, and the contract tests in tests/runtimes/ run it
through the same tasks as the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .base import Runtime
from .claude_code import ClaudeCodeConfig, ClaudeCodeRuntime
from .section import RuntimeSection

RuntimeName = Literal["claude_code", "codex", "opencode", "demo"]


@dataclass(frozen=True)
class RuntimeKind:
    name: str
    section: type[RuntimeSection]  # its agent.yaml section
    build: Callable[[RuntimeSection], Runtime]
    cost: Literal["reported", "estimated"]  # where its costs come from


def _kinds() -> dict[str, RuntimeKind]:
    from .codex import CodexConfig, CodexRuntime
    from .demo import DemoConfig, DemoRuntime
    from .opencode import OpenCodeConfig, OpenCodeRuntime

    kinds = [
        RuntimeKind("claude_code", ClaudeCodeConfig, ClaudeCodeRuntime, "reported"),
        RuntimeKind("codex", CodexConfig, CodexRuntime, "estimated"),
        RuntimeKind("opencode", OpenCodeConfig, OpenCodeRuntime, "reported"),
        RuntimeKind("demo", DemoConfig, DemoRuntime, "reported"),  # a scripted agent: always 0
    ]
    return {kind.name: kind for kind in kinds}


RUNTIMES: dict[str, RuntimeKind] = _kinds()
RUNTIME_NAMES: tuple[str, ...] = tuple(RUNTIMES)


def build_configured(config) -> dict[str, Runtime]:
    """The runtimes an AgentConfig configures (`configured_runtimes`), the default first."""
    return {name: RUNTIMES[name].build(config.runtime_section(name)) for name in config.configured_runtimes}
