"""The contract between the dispatcher and a coding-agent runtime (Claude Code, Codex, OpenCode).

A runtime turns one agent turn (a prompt, a worktree, an environment, maybe a session to
continue) into a `Turn`: the command line to start, and a conversation with that process.
The dispatcher starts the process and passes each line the CLI prints to the turn, which
answers with AgentEvents (the only thing the event log and the dashboard ever see) and, for
CLIs that talk back (Codex's app-server), lines to write to the process's standard input.
Stopping is the dispatcher's job: the turn may offer a polite request first (`interrupt`),
then the task's processes are killed as for every runtime.

The runtimes Baton knows are listed in `backend/runtimes/__init__.py`; each lives in its own
folder, and `tests/runtimes/` holds the contract tests every one of them must pass.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Literal, Protocol, TypedDict

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
    human = "human"  # what a person said or decided (a message, changes requested, approve, reject)


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
    cost_estimated: bool | None = None  # true: computed by Baton from a price table, not reported
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    errors: list[str] | None = None
    attempt: int | None = None  # on a baton `attempt_started` event: the task's run number (Task.runs)
    comments: list[dict] | None = None  # on a `human` event: comments on lines of the diff ({path, line, side, text})


def event(kind: EventKind, **fields) -> AgentEvent:
    return AgentEvent(ts=utcnow(), kind=kind, **fields)


@dataclass
class Invocation:
    """How to start the CLI: never through a shell. `stdin`: text written to the process's
    standard input, which is then closed (one-shot CLIs); None: the turn talks over stdin."""

    argv: list[str]
    env: dict[str, str]
    stdin: str | None
    cwd: Path


@dataclass(frozen=True)
class McpServer:
    """A stdio MCP server the CLI starts for this turn (the task's tracker tools): never through
    a shell. `env` holds no secret: the server reads its capability token from `token_file`'s
    path named there (a file in the task's scratch folder, outside the worktree)."""

    name: str  # [a-z_]+: the CLI names its tools mcp__<name>__<tool>
    command: str
    args: list[str]
    env: dict[str, str]


@dataclass
class TurnRequest:
    """One agent turn, as the dispatcher asks for it."""

    prompt: str
    cwd: Path  # the task's worktree
    env: dict[str, str]  # secrets already removed; carries TASK_PORT and the task's markers
    # The session to continue (a feedback turn, or a new attempt of a task whose earlier
    # attempt ran on this runtime). A runtime that cannot continue it says so in an event and
    # starts afresh: the prompt always carries what the agent needs.
    resume: str | None = None
    model: str | None = None  # the task's own choice; None: the runtime's configured model
    # A folder outside the worktree for files the runtime generates for this task (configs,
    # isolated CLI state). It lives as long as the task's attempt; nothing in it is committed.
    scratch: Path | None = None
    # A planning turn: the CLI's own permission system must forbid every write (files, shell
    # commands): Claude Code --permission-mode plan, Codex's read-only sandbox, OpenCode with
    # edit/write/bash denied. Never left to the prompt's wording.
    read_only: bool = False
    # Image files a person attached (absolute paths, copies inside the worktree), for runtimes
    # whose CLI takes images with the prompt (Codex: `localImage` input, OpenCode: `--file`). The
    # prompt names every attached file anyway (Claude Code reads images with its Read tool).
    images: list[Path] = field(default_factory=list)
    # MCP servers to give the CLI for this turn (Claude Code --mcp-config, Codex -c mcp_servers.*,
    # OpenCode's config `mcp`). Empty on read_only turns: tracker writes wait for the real run.
    mcp_servers: list[McpServer] = field(default_factory=list)


FailureReason = Literal["approval_required", "agent_error"]


@dataclass
class Reply:
    """What a turn answers to the process starting or to one line of its output."""

    events: list[AgentEvent] = field(default_factory=list)
    send: list[str] = field(default_factory=list)  # lines to write to its stdin, in order
    close_stdin: bool = False  # after `send`: the conversation is over, the CLI may exit
    # End the process now and fail the task (e.g. an approval the policy does not allow).
    fail: tuple[FailureReason, str] | None = None


@dataclass
class RunSummary:
    """What the dispatcher learns from a run's events."""

    session_id: str | None = None
    model: str | None = None
    result: AgentEvent | None = None
    last_text: str | None = None
    events: int = 0
    failure: tuple[FailureReason, str] | None = None  # set from a Reply's `fail`

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


@dataclass(frozen=True)
class Limits:
    timeout: int  # seconds of wall clock per turn
    stall_timeout: int  # seconds without a line of output


class Turn(Protocol):
    """One conversation with one CLI process."""

    invocation: Invocation

    def opening(self) -> Reply:
        """Right after the process started (e.g. Codex's `initialize`)."""
        ...

    def on_line(self, line: str) -> Reply:
        """One line the process printed (without guarantees: it may be garbage)."""
        ...

    def interrupt(self) -> Reply:
        """Asked to stop (cancel, limits): lines that ask the CLI to end the turn itself.
        Empty when the CLI has no such request; the kill follows either way."""
        ...

    def usage(self) -> AgentEvent | None:
        """What the turn has used so far (tokens, cost) as a `result`-kind event that is not
        logged: accounted when the turn ends without its result (killed by a limit or a
        cancel), so paid model calls are never lost from the task's totals. None: unknown."""
        ...


class Runtime(Protocol):
    name: str  # as written in agent.yaml `runtime:` and a task's `runtime`
    limits: Limits
    # What to say when the agent went quiet for stall_timeout (e.g. OpenCode's silent retries).
    stall_hint: str
    # A new attempt on a kept branch may continue the earlier attempt's session: the runtime
    # falls back to a fresh session by itself when that session cannot be continued.
    resume_after_restart: bool

    def check(self) -> RuntimeProblem | None:
        """None when the CLI can be started; cheap enough to call before every claim."""
        ...

    def turn(self, request: TurnRequest) -> Turn: ...


def command_problem(command: str, what: str, key: str, install_hint: str) -> RuntimeProblem | None:
    """`runtime_unavailable` unless `command` resolves to an executable file (on PATH, or a path)."""
    if os.sep in command:
        found = os.path.isfile(command) and os.access(command, os.X_OK)
    else:
        found = shutil.which(command) is not None
    if found:
        return None
    where = "no executable file at that path" if os.sep in command else "not on PATH"
    return {
        "code": "runtime_unavailable",
        "message": f"{command} not found ({where}): {what} ({key}) is needed to run tasks on this runtime; "
                   f"they stay pending until it is there. Install hint: {install_hint} "
                   f"(or set {key} in agent.yaml to the CLI's path).",
    }


class OneShotTurn:
    """A turn for CLIs that take the whole prompt up front and only print (Claude Code,
    OpenCode): nothing to answer, no polite interrupt."""

    def __init__(self, invocation: Invocation, parse_line, usage=None) -> None:
        self.invocation = invocation
        self._parse_line = parse_line
        self._usage = usage

    def opening(self) -> Reply:
        return Reply()

    def on_line(self, line: str) -> Reply:
        return Reply(events=self._parse_line(line))

    def interrupt(self) -> Reply:
        return Reply()

    def usage(self) -> AgentEvent | None:
        return self._usage() if self._usage is not None else None
