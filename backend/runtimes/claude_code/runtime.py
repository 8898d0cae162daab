"""Claude Code (`claude -p --output-format stream-json --verbose`) as a Baton runtime."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..base import (RAW_KEEP, AgentEvent, EventKind, Invocation, Limits, OneShotTurn, RuntimeProblem, TurnRequest,
                    command_problem, event)
from ..text import OUTPUT_CHARS
from ..text import clip as _clip
from ..text import summarize_input as _summarize
from .config import ClaudeCodeConfig

INSTALL_HINT = "npm install -g @anthropic-ai/claude-code"
MCP_CONFIG_NAME = "mcp.json"
# A planning turn's tools that write files: taken away outright (the model is not even offered
# them), on top of plan mode, which refuses every write and every shell command it cannot tell
# is read-only. In -p mode Claude Code offers no ExitPlanMode: the plan is the final answer.
READ_ONLY_DISALLOWED = ("Write", "Edit", "MultiEdit", "NotebookEdit")
# extra_args that would loosen a planning turn's permissions: flag -> takes a value (or a list).
_PERMISSION_FLAGS = {"--dangerously-skip-permissions": False, "--allow-dangerously-skip-permissions": False,
                     "--permission-mode": True, "--allowedTools": True, "--allowed-tools": True,
                     "--permission-prompt-tool": True}
_LIST_FLAGS = {"--allowedTools", "--allowed-tools"}
# Input fields that say most about a tool call, in order of preference.
_SUMMARY_KEYS = ("command", "file_path", "path", "pattern", "url", "description", "prompt", "query")


def summarize_input(value: Any) -> str:
    return _summarize(value, _SUMMARY_KEYS)


def without_permission_flags(args: list[str]) -> list[str]:
    """`args` without the flags that loosen permissions (and their values): a planning turn
    keeps plan mode whatever extra_args say."""
    out: list[str] = []
    skipping = False  # the values of a list-taking flag: every word up to the next flag
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if skipping and not arg.startswith("-"):
            i += 1
            continue
        skipping = False
        if name in _PERMISSION_FLAGS:
            takes_value = _PERMISSION_FLAGS[name] and "=" not in arg
            skipping = takes_value and name in _LIST_FLAGS
            i += 2 if takes_value and not skipping else 1
            continue
        out.append(arg)
        i += 1
    return out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tool_result_text(content: Any) -> str | None:
    if isinstance(content, str):
        return _clip(content, OUTPUT_CHARS)
    if isinstance(content, list):
        parts = [c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text"]
        return _clip(" ".join(parts), OUTPUT_CHARS) if parts else None
    return None


def _content_blocks(message: Any) -> list[dict]:
    """The content blocks of an assistant or user message. Anything not of the documented shape
    raises ValueError, so the caller keeps the whole line as an `unparsed` event instead of
    silently dropping what it could not read."""
    if not isinstance(message, dict):
        raise ValueError("message is not an object")
    content = message.get("content")
    if isinstance(content, str) and message.get("role") == "user":
        return []  # a plain-text user turn (e.g. the prompt echoed back): nothing to show
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise ValueError("message content is not a list of blocks")
    return content


class MessageUsage:
    """Tokens of the assistant messages seen so far, for a turn killed before its result line
    (which alone carries the cost). A message spans several lines that repeat its usage."""

    def __init__(self) -> None:
        self._by_message: dict[str, dict] = {}

    def add(self, message: Any) -> None:
        if isinstance(message, dict) and isinstance(message.get("usage"), dict):
            self._by_message[str(message.get("id"))] = message["usage"]

    def event(self) -> AgentEvent | None:
        if not self._by_message:
            return None

        def total(key: str) -> int:
            return sum(_int(u.get(key)) or 0 for u in self._by_message.values())

        return event(EventKind.result, subtype="partial", ok=None, input_tokens=total("input_tokens"),
                     output_tokens=total("output_tokens"), cache_read_tokens=total("cache_read_input_tokens"),
                     cache_creation_tokens=total("cache_creation_input_tokens"))


def mcp_config_file(request: TurnRequest) -> tuple[Path, list[str]] | None:
    """The turn's MCP servers as a --mcp-config file in the scratch folder (outside the worktree;
    0600 from its creation) and their names; None without servers or on a read-only turn."""
    if not request.mcp_servers or request.read_only:
        return None
    scratch = Path(request.scratch) if request.scratch is not None else Path(tempfile.mkdtemp(prefix="baton-claude-"))
    scratch.mkdir(parents=True, exist_ok=True)
    servers = {s.name: {"type": "stdio", "command": s.command, "args": list(s.args), "env": dict(s.env)}
               for s in request.mcp_servers}
    path = scratch / MCP_CONFIG_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{MCP_CONFIG_NAME}.", dir=scratch)  # 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"mcpServers": servers}, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, list(servers)


class ClaudeCodeRuntime:
    name = "claude_code"
    stall_hint = ""
    resume_after_restart = False

    def __init__(self, config: ClaudeCodeConfig) -> None:
        self.config = config
        self.limits = Limits(timeout=config.timeout, stall_timeout=config.stall_timeout)

    def check(self) -> RuntimeProblem | None:
        return command_problem(self.config.command, "the Claude Code CLI", "claude_code.command", INSTALL_HINT)

    def turn(self, request: TurnRequest) -> OneShotTurn:
        inv = self.invocation(prompt=request.prompt, cwd=request.cwd, env=request.env, resume=request.resume,
                              model=request.model, read_only=request.read_only,
                              mcp_config=mcp_config_file(request))
        usage = MessageUsage()
        return OneShotTurn(inv, lambda line: self.parse_line(line, usage), usage.event)

    def invocation(self, *, prompt: str, cwd: Path, env: dict[str, str], resume: str | None,
                   model: str | None = None, read_only: bool = False,
                   mcp_config: tuple[Path, list[str]] | None = None) -> Invocation:
        """`mcp_config`: the file of the turn's MCP servers and their names (mcp_config_file)."""
        cfg = self.config
        # The prompt goes on stdin: no argument-length limit, and list-taking flags such as
        # --allowedTools cannot swallow it.
        argv = [cfg.command, "-p"]
        if mcp_config is not None:
            # A list flag: a flag right after it ends the list.
            argv += ["--mcp-config", str(mcp_config[0])]
        argv += ["--output-format", cfg.output_format]
        if cfg.verbose:
            argv.append("--verbose")
        env = {**env, **cfg.env_additions(env)}
        if read_only:
            # Claude Code's own plan mode, whatever the section says: never the skip flag.
            env.pop("IS_SANDBOX", None)
            argv += ["--permission-mode", "plan", "--disallowedTools", " ".join(READ_ONLY_DISALLOWED)]
        elif cfg.skip_permissions:
            argv.append("--dangerously-skip-permissions")
            if os.geteuid() == 0:
                # Claude Code refuses this flag as root unless told it runs in a sandbox. Baton
                # gives every task its own worktree, so root use is treated as that.
                env["IS_SANDBOX"] = "1"
        else:
            argv += ["--permission-mode", cfg.permission_mode]
            # The turn's MCP servers are Baton's own: allowed whole (`mcp__<name>`), or -p would
            # refuse every call with nobody there to approve it.
            allowed = [*cfg.allowed_tools, *(f"mcp__{name}" for name in (mcp_config[1] if mcp_config else ()))]
            if allowed:
                argv += ["--allowedTools", " ".join(allowed)]
        if model or cfg.model:
            argv += ["--model", model or cfg.model]
        if cfg.max_turns:
            argv += ["--max-turns", str(cfg.max_turns)]
        if cfg.append_system_prompt:
            argv += ["--append-system-prompt", cfg.append_system_prompt]
        if resume:
            argv += ["--resume", resume]
        argv += without_permission_flags(cfg.extra_args) if read_only else cfg.extra_args
        return Invocation(argv=argv, env=env, stdin=prompt, cwd=cwd)

    def parse_line(self, line: str, usage: MessageUsage | None = None) -> list[AgentEvent]:
        line = line.strip()
        if not line:
            return []
        try:
            data = json.loads(line)
        except ValueError:
            return [event(EventKind.unparsed, text=line[:RAW_KEEP])]
        if not isinstance(data, dict):
            return [event(EventKind.unparsed, text=line[:RAW_KEEP])]
        try:
            if usage is not None and data.get("type") == "assistant":
                usage.add(data.get("message"))
            return self._parse(data, line)
        except (AttributeError, TypeError, ValueError):
            # Right type, unexpected shape: keep it visible, never crash the dispatcher.
            return [event(EventKind.unparsed, text=line[:RAW_KEEP])]

    def _parse(self, data: dict, line: str) -> list[AgentEvent]:
        kind = data.get("type")
        session = data.get("session_id") if isinstance(data.get("session_id"), str) else None
        if kind == "system":
            if data.get("subtype") == "init":
                return [event(EventKind.session_started, session_id=session, model=data.get("model"))]
            if data.get("subtype") == "permission_denied":
                tool, why = data.get("tool_name"), data.get("message")
                # In words when the line says which tool and why; else the line as it came.
                text = f"{tool} refused: {why}" if isinstance(tool, str) and isinstance(why, str) else line
                return [event(EventKind.system, subtype="permission_denied", tool_name=tool if isinstance(tool, str)
                              else None, text=_clip(text, OUTPUT_CHARS))]
            return []  # hooks, status and the like: kept in the raw log only
        if kind == "assistant":
            return self._assistant(data.get("message"), session)
        if kind == "user":
            return self._tool_results(data.get("message"), session)
        if kind == "result":
            return [self._result(data, session)]
        if kind == "stream_event":
            return []  # partial deltas; the complete message follows as an assistant line
        return [event(EventKind.unparsed, text=line[:RAW_KEEP])]

    def _assistant(self, message: Any, session: str | None) -> list[AgentEvent]:
        content = _content_blocks(message)
        out = []
        for block in content:
            if block.get("type") == "text" and block.get("text"):
                out.append(event(EventKind.assistant_text, text=block["text"], session_id=session))
            elif block.get("type") == "tool_use":
                out.append(
                    event(
                        EventKind.tool_use,
                        tool_name=str(block.get("name")),
                        tool_use_id=block.get("id"),
                        tool_input=summarize_input(block.get("input")),
                        session_id=session,
                    )
                )
        return out

    def _tool_results(self, message: Any, session: str | None) -> list[AgentEvent]:
        return [
            event(
                EventKind.tool_result,
                tool_use_id=block.get("tool_use_id"),
                ok=not block.get("is_error", False),
                text=_tool_result_text(block.get("content")),
                session_id=session,
            )
            for block in _content_blocks(message)
            if block.get("type") == "tool_result"
        ]

    def _result(self, data: dict, session: str | None) -> AgentEvent:
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        errors = data.get("errors")
        cost = data.get("total_cost_usd")
        return event(
            EventKind.result,
            session_id=session,
            subtype=data.get("subtype"),
            ok=data.get("is_error") is False and data.get("subtype") == "success",
            text=data.get("result") if isinstance(data.get("result"), str) else None,
            errors=[str(e) for e in errors] if isinstance(errors, list) else None,
            num_turns=_int(data.get("num_turns")),
            duration_ms=_int(data.get("duration_ms")),
            cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
            cache_creation_tokens=_int(usage.get("cache_creation_input_tokens")),
        )
