"""`opencode run --format json` output, one turn at a time, as Baton's events.

Each line is `{type, timestamp, sessionID, part|error}`; types: `step_start`, `text`,
`tool_use` (printed when the tool has ended), `reasoning` (with --thinking), `step_finish`
(tokens and cost of that one model call), `error`. OpenCode 1.18.33 prints no final line:
the turn ends when its session goes idle and the process exits. So a `result` is emitted
at every step that ends the agent loop (`step_finish` with a reason other than
`tool-calls` or `unknown`) and at every `error`, each carrying the totals of the whole turn so far: the
dispatcher keeps the last result of a turn and counts it once, so the totals are right
however many there were. Newer builds end with `done`; it adds a result only if there was
none yet or something changed since the last one.
"""

from __future__ import annotations

import json
from typing import Any

from ..base import RAW_KEEP, AgentEvent, EventKind, event
from ..text import OUTPUT_CHARS, clip
from ..text import summarize_input as _summarize

# Input fields that say most about a tool call (OpenCode's names), in order of preference.
_SUMMARY_KEYS = ("command", "filePath", "path", "pattern", "url", "description", "prompt", "query")
# Step finish reasons after which OpenCode's agent loop calls the model again (as 1.18.33 does);
# any other ends the turn, and these end it without the work being done.
LOOP_GOES_ON = {"tool-calls", "unknown"}
FAILED_REASONS = {"length", "content-filter", "error"}
_KNOWN = {"step_start", "text", "reasoning", "tool_use", "step_finish", "error", "done"}


def summarize_input(value: Any) -> str:
    return _summarize(value, _SUMMARY_KEYS)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _object(data: dict, key: str) -> dict:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{key} is not an object")
    return value


def error_message(error: Any) -> tuple[str, str]:
    """(name, message) of an `error` line's error: `{name, data: {message, statusCode}}`."""
    if not isinstance(error, dict):
        return "error", clip(str(error), OUTPUT_CHARS)
    name = str(error.get("name") or "error")
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    message = data.get("message") if isinstance(data.get("message"), str) else name
    status = data.get("statusCode")
    if isinstance(status, int) and not isinstance(status, bool):
        message += f" (HTTP {status})"
    return name, clip(message, OUTPUT_CHARS)


class TurnParser:
    """The events of one turn; keeps the turn's running totals (a new parser per turn)."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model  # what Baton asked for: OpenCode's JSON lines do not name it
        self.session_id: str | None = None
        self.input = self.output = self.cache_read = self.cache_write = 0
        self.cost: float | None = None
        self.steps = 0
        self.error: tuple[str, str] | None = None  # (name, message) of the last error, until a step ends well
        self.last_text: str | None = None
        self._changed = False  # since the last result event
        self._reported = False  # a result event was emitted

    def parse_line(self, line: str) -> list[AgentEvent]:
        line = line.strip()
        if not line:
            return []
        try:
            data = json.loads(line)
        except ValueError:
            return [event(EventKind.unparsed, text=line[:RAW_KEEP])]
        if not isinstance(data, dict) or data.get("type") not in _KNOWN:
            return [event(EventKind.unparsed, text=line[:RAW_KEEP])]
        try:
            return self._parse(data)
        except (AttributeError, TypeError, ValueError):
            # A known type of an unexpected shape: keep it visible, never crash the dispatcher.
            return [event(EventKind.unparsed, text=line[:RAW_KEEP])]

    def _parse(self, data: dict) -> list[AgentEvent]:
        kind = data["type"]
        out = []
        session = data.get("sessionID") if isinstance(data.get("sessionID"), str) else None
        if session and self.session_id is None:
            self.session_id = session
            out.append(event(EventKind.session_started, session_id=session, model=self.model))
        if kind == "text":
            text = _object(data, "part").get("text")
            if isinstance(text, str) and text.strip():
                self.last_text = text
                out.append(event(EventKind.assistant_text, text=text, session_id=session))
        elif kind == "tool_use":
            out += self._tool(_object(data, "part"), session)
        elif kind == "step_finish":
            out += self._step_finish(_object(data, "part"))
        elif kind == "error":
            name, message = error_message(data.get("error"))
            self.error, self._changed = (name, message), True
            out.append(event(EventKind.system, subtype="error", text=f"{name}: {message}", session_id=session))
            out.append(self.result())
        elif kind == "done" and (self._changed or not self._reported):
            out.append(self.result())
        # step_start and reasoning: kept in the raw log only.
        return out

    def _tool(self, part: dict, session: str | None) -> list[AgentEvent]:
        state = _object(part, "state")
        status = state.get("status")
        metadata = state.get("metadata") if isinstance(state.get("metadata"), dict) else {}
        exit_code = metadata.get("exit")
        ok = status == "completed" and (exit_code is None or exit_code == 0)
        shown = state.get("output") if status == "completed" else state.get("error")
        call_id = part.get("callID") if isinstance(part.get("callID"), str) else None
        return [
            event(EventKind.tool_use, tool_name=str(part.get("tool")), tool_use_id=call_id,
                  tool_input=summarize_input(state.get("input")), session_id=session),
            event(EventKind.tool_result, tool_use_id=call_id, ok=ok, session_id=session,
                  text=clip(shown, OUTPUT_CHARS) if isinstance(shown, str) else None),
        ]

    def _step_finish(self, part: dict) -> list[AgentEvent]:
        tokens = part.get("tokens") if isinstance(part.get("tokens"), dict) else {}
        cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
        self.input += _int(tokens.get("input"))
        # Reasoning tokens are billed as output.
        self.output += _int(tokens.get("output")) + _int(tokens.get("reasoning"))
        self.cache_read += _int(cache.get("read"))
        self.cache_write += _int(cache.get("write"))
        cost = _number(part.get("cost"))
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost
        self.steps += 1
        self._changed = True
        reason = part.get("reason") if isinstance(part.get("reason"), str) else "unknown"
        if reason in LOOP_GOES_ON:
            return []  # OpenCode calls the model again (with the tools' results)
        if reason in FAILED_REASONS:
            return [self.result(reason)]
        self.error = None  # a later step that ended well: the earlier error was recovered from
        return [self.result()]

    def usage(self) -> AgentEvent | None:
        """The steps finished so far (for a turn killed before its result)."""
        if not self.steps:
            return None
        return event(EventKind.result, session_id=self.session_id, subtype="partial", ok=None,
                     num_turns=self.steps, cost_usd=self.cost, cost_estimated=False, input_tokens=self.input,
                     output_tokens=self.output, cache_read_tokens=self.cache_read,
                     cache_creation_tokens=self.cache_write)

    def result(self, bad_reason: str | None = None) -> AgentEvent:
        """The turn so far as a result: failed when an error is pending or the last step ended
        for another reason than `stop` (e.g. `length`)."""
        self._changed, self._reported = False, True
        errors = None
        subtype = "success"
        if self.error is not None:
            subtype, errors = self.error[0], [self.error[1]]
        elif bad_reason is not None:
            subtype, errors = bad_reason, [f"the model stopped: {bad_reason}"]
        return event(
            EventKind.result, session_id=self.session_id, subtype=subtype, ok=errors is None,
            text=self.last_text if errors is None else None, errors=errors, num_turns=self.steps or None,
            cost_usd=self.cost, cost_estimated=False, input_tokens=self.input, output_tokens=self.output,
            cache_read_tokens=self.cache_read, cache_creation_tokens=self.cache_write,
        )
