"""What every coding-agent runtime (Claude Code now; Codex and OpenCode later) hands Baton.

A runtime turns a task into a command line and turns each line the CLI prints into zero or
more AgentEvents. The dispatcher, the event log and the dashboard only ever see AgentEvents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Protocol, TypedDict

from pydantic import BaseModel, ConfigDict

from ..models import utcnow

RAW_KEEP = 2000  # characters of an unparsed line kept in its event


class EventKind(str, Enum):
    session_started = "session_started"
    assistant_text = "assistant_text"
    tool_use = "tool_use"
    tool_result = "tool_result"
    result = "result"
    system = "system"  # other system lines worth showing (e.g. a denied permission)
    unparsed = "unparsed"  # not JSON, or a JSON line of a type we do not know
    baton = "baton"  # Baton's own steps: worktree, landing, tests, feedback turns


class AgentEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = 0  # position in the task's event log, from 1; set when logged
    ts: datetime
    kind: EventKind
    text: str | None = None
    session_id: str | None = None
    model: str | None = None
    tool_name: str | None = None
    tool_use_id: str | None = None
    tool_input: str | None = None  # a short summary, not the whole input
    ok: bool | None = None
    subtype: str | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    errors: list[str] | None = None


def event(kind: EventKind, **fields) -> AgentEvent:
    return AgentEvent(ts=utcnow(), kind=kind, **fields)


@dataclass
class Invocation:
    """How to start the CLI: never through a shell."""

    argv: list[str]
    env: dict[str, str]
    stdin: str
    cwd: Path


@dataclass
class RunSummary:
    """What the dispatcher learns from a run's events."""

    session_id: str | None = None
    model: str | None = None
    result: AgentEvent | None = None
    last_text: str | None = None
    events: int = 0

    def add(self, ev: AgentEvent) -> None:
        self.events += 1
        if ev.session_id and not self.session_id:
            self.session_id = ev.session_id
        if ev.model and not self.model:
            self.model = ev.model
        if ev.kind is EventKind.assistant_text and ev.text:
            self.last_text = ev.text
        if ev.kind is EventKind.result:
            self.result = ev

    @property
    def succeeded(self) -> bool:
        return self.result is not None and self.result.ok is True


class RuntimeProblem(TypedDict):
    """Why a runtime cannot run now (e.g. `runtime_unavailable`), with what to do about it."""

    code: str
    message: str


class Runtime(Protocol):
    name: str

    def check(self) -> RuntimeProblem | None:
        """None when the CLI can be started; cheap enough to call before every claim."""
        ...

    def invocation(self, *, prompt: str, cwd: Path, env: dict[str, str], resume: str | None) -> Invocation: ...

    def parse_line(self, line: str) -> list[AgentEvent]: ...
