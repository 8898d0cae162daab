"""One conversation with `codex app-server` (JSON-RPC, one object per line, no "jsonrpc" field).

initialize → initialized → thread/start (or thread/resume, falling back to a new thread) →
turn/start with the prompt; notifications become AgentEvents; turn/completed is the result and
closes stdin, which ends the app-server. Requests from the server are answered at once by
policy: nothing ever waits for a human.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

from ..base import RAW_KEEP, AgentEvent, EventKind, Invocation, Reply, TurnRequest, event
from ..text import OUTPUT_CHARS
from ..text import clip as _clip
from .config import CodexConfig
from .prices import Usage, cost_usd, price_for

CLIENT_VERSION = "1"
METHOD_NOT_FOUND = -32601

# Server requests that ask for an approval Baton may give by policy: method -> (kind, legacy).
_APPROVALS = {
    "item/commandExecution/requestApproval": ("command", False),
    "execCommandApproval": ("command", True),
    "item/fileChange/requestApproval": ("file_change", False),
    "applyPatchApproval": ("file_change", True),
}
# Requests only a person could answer: answered with an error, and the task fails.
_PERMISSIONS = "item/permissions/requestApproval"
_HUMAN = {"item/tool/requestUserInput", _PERMISSIONS, "mcpServer/elicitation/request"}
_TOKEN_FIELDS = ("inputTokens", "cachedInputTokens", "outputTokens")


def _clip_output(text: str, limit: int = OUTPUT_CHARS) -> str:
    """Output keeps its lines, unlike a summary."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _obj(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _command_text(command: Any) -> str:
    if isinstance(command, list):
        return " ".join(str(c) for c in command)
    return str(command or "")


def _item_command(item: dict) -> str:
    """What the agent ran: Codex wraps it (`/bin/bash -lc "…"`) and lists the plain command in
    `commandActions`; the wrapped form when it does not."""
    actions = item.get("commandActions")
    if isinstance(actions, list):
        plain = [a["command"] for a in actions if isinstance(a, dict) and isinstance(a.get("command"), str)]
        if plain:
            return "; ".join(plain)
    return _command_text(item.get("command"))


class CodexTurn:
    def __init__(self, invocation: Invocation, request: TurnRequest, config: CodexConfig) -> None:
        self.invocation = invocation
        self.request = request
        self.config = config
        self.model = request.model or config.model
        self.thread_id: str | None = None
        self.turn_id: str | None = None
        self.done = False  # turn/completed seen (or the turn could not start)
        self._ids = itertools.count(1)
        self._pending: dict[int, str] = {}  # our request id -> its method
        self._turn_asked = False  # turn/start sent: turn/started is ours
        self._before: dict[str, int] | None = None  # the thread's token total before this turn
        self._total: dict[str, int] | None = None
        self._started_tools: set[str] = set()
        self._last_text: str | None = None
        self._started = time.monotonic()
        # on_line runs on the reader thread, interrupt() on the dispatcher's.
        self._lock = threading.Lock()

    # ----- the Turn protocol ---------------------------------------------------------------

    def opening(self) -> Reply:
        with self._lock:
            return Reply(send=[self._call("initialize", {
                "clientInfo": {"name": "baton", "version": CLIENT_VERSION},
                "capabilities": {"experimentalApi": True},
            })])

    def on_line(self, line: str) -> Reply:
        text = line.strip()
        if not text:
            return Reply()
        try:
            data = json.loads(text)
        except ValueError:
            return Reply(events=[event(EventKind.unparsed, text=text[:RAW_KEEP])])
        if not isinstance(data, dict):
            return Reply(events=[event(EventKind.unparsed, text=text[:RAW_KEEP])])
        with self._lock:
            try:
                return self._message(data)
            except (AttributeError, KeyError, TypeError, ValueError):
                # Right framing, unexpected shape: keep it visible, never crash the dispatcher.
                return Reply(events=[event(EventKind.unparsed, text=text[:RAW_KEEP])])

    def interrupt(self) -> Reply:
        with self._lock:
            if self.done:
                return Reply()
            if not (self.thread_id and self.turn_id):
                # No turn to interrupt yet: closing stdin ends the app-server at once (exit 0),
                # instead of it starting the turn while the dispatcher waits to kill it.
                self.done = True
                return Reply(close_stdin=True)
            return Reply(send=[self._call("turn/interrupt", {"threadId": self.thread_id, "turnId": self.turn_id})])

    # ----- messages ------------------------------------------------------------------------

    def _call(self, method: str, params: dict) -> str:
        request_id = next(self._ids)
        self._pending[request_id] = method
        return json.dumps({"id": request_id, "method": method, "params": params})

    @staticmethod
    def _notify(method: str) -> str:
        return json.dumps({"method": method})

    def _message(self, data: dict) -> Reply:
        if "method" in data:
            if not isinstance(data["method"], str):
                raise ValueError("method is not a string")
            params = data.get("params") if isinstance(data.get("params"), dict) else {}
            if "id" in data:
                return self._server_request(data["id"], data["method"], params)
            return self._notification(data["method"], params)
        if "id" in data and ("result" in data or "error" in data):
            method = self._pending.pop(data["id"], None) if isinstance(data["id"], int) else None
            if method is None:
                return Reply()  # an answer to nothing we asked: raw log only
            if "error" in data:
                return self._error_answer(method, _obj(data["error"]))
            try:
                return self._answer(method, data["result"])
            except (AttributeError, KeyError, TypeError, ValueError):
                if method == "turn/interrupt":
                    raise
                # The handshake cannot go on: say so now rather than wait for the stall limit.
                failed = self._failed(f"{method} answered in a shape Baton does not know")
                failed.events.insert(0, event(EventKind.unparsed, text=json.dumps(data)[:RAW_KEEP]))
                return failed
        raise ValueError("neither a request, a notification nor a response")

    def _thread_params(self) -> dict:
        if self.request.read_only:
            # A planning turn: Codex's own sandbox refuses every write (files and commands),
            # whatever the section says, and nothing is asked of anyone.
            policy, sandbox = "never", "read-only"
        else:
            policy, sandbox = self.config.approval_policy, self.config.sandbox
        params: dict[str, Any] = {"cwd": str(self.request.cwd), "approvalPolicy": policy, "sandbox": sandbox}
        if self.model:
            params["model"] = self.model
        return params

    def _sandbox_policy(self) -> dict | None:
        # A turn's policy overrides the thread's sandbox: a planning turn sends read-only here too.
        return {"type": "readOnly"} if self.request.read_only else self.config.sandbox_policy()

    def _start_thread(self) -> str:
        return self._call("thread/start", self._thread_params())

    def _answer(self, method: str, result: Any) -> Reply:
        if self.done:
            return Reply()  # stopped while starting: start nothing more
        if method == "initialize":
            if self.request.resume:
                # excludeTurns: the whole history would come back in one line otherwise.
                resume = self._call("thread/resume", {"threadId": self.request.resume, **self._thread_params(),
                                                      "excludeTurns": True})
                return Reply(send=[self._notify("initialized"), resume])
            return Reply(send=[self._notify("initialized"), self._start_thread()])
        if method in ("thread/start", "thread/resume"):
            result = _obj(result)
            thread = _obj(result["thread"])
            self.thread_id = str(thread["id"])
            model = result.get("model") or thread.get("model")
            if isinstance(model, str) and model:
                self.model = model
            self._turn_asked = True
            # Attached images go with the prompt as `localImage` items (app-server v2 UserInput).
            images = [{"type": "localImage", "path": str(path)} for path in self.request.images]
            params: dict[str, Any] = {"threadId": self.thread_id,
                                      "input": [{"type": "text", "text": self.request.prompt}, *images]}
            policy = self._sandbox_policy()
            if policy is not None:
                params["sandboxPolicy"] = policy
            turn_start = self._call("turn/start", params)
            return Reply(events=[event(EventKind.session_started, session_id=self.thread_id, model=self.model)],
                         send=[turn_start])
        if method == "turn/start":
            turn = _obj(_obj(result).get("turn"))
            if isinstance(turn.get("id"), str):
                self.turn_id = turn["id"]
        return Reply()  # turn/interrupt's {}

    def _error_answer(self, method: str, error: dict) -> Reply:
        message = str(error.get("message") or error)
        if self.done:
            return Reply()
        if method == "thread/resume":
            note = event(EventKind.system, subtype="resume_failed",
                         text=f"Codex could not continue thread {self.request.resume} ({message}); "
                              "starting a new thread with the whole prompt")
            return Reply(events=[note], send=[self._start_thread()])
        if method == "turn/interrupt":
            return Reply()  # the turn already ended; the kill follows anyway
        return self._failed(f"{method} failed: {message}")

    def _failed(self, message: str) -> Reply:
        """The turn could not run at all: a failed result, and the app-server may exit."""
        self.done = True
        result = event(EventKind.result, session_id=self.thread_id, ok=False, subtype="failed", errors=[message],
                       num_turns=1, duration_ms=int((time.monotonic() - self._started) * 1000))
        return Reply(events=[result], close_stdin=True)

    # ----- server requests -----------------------------------------------------------------

    def _server_request(self, request_id: Any, method: str, params: dict) -> Reply:
        if self.request.read_only and (method in _APPROVALS or method == _PERMISSIONS):
            return self._decline_read_only(request_id, method, params)
        if method in _APPROVALS:
            kind, legacy = _APPROVALS[method]
            allowed = kind in self.config.approve
            decision = ("approved" if allowed else "denied") if legacy else ("accept" if allowed else "decline")
            answer = json.dumps({"id": request_id, "result": {"decision": decision}})
            what = self._approval_subject(kind, params)
            if allowed:
                return Reply(events=[event(EventKind.system, subtype="approved", text=f"approved {what}")],
                             send=[answer])
            message = (f"Codex asked for approval of {what}; the policy does not allow it, and nobody is there to "
                       f"answer. Allow it with codex.approve: [{kind}] or approval_policy: \"never\" in agent.yaml.")
            return Reply(events=[event(EventKind.system, subtype="approval_required", text=message)],
                         send=[answer], fail=("approval_required", message))
        answer = json.dumps({"id": request_id, "error": {
            "code": METHOD_NOT_FOUND, "message": f"Baton does not answer {method}: no one is there to ask"}})
        if method in _HUMAN:
            message = (f"Codex sent {method}, which needs a person to answer; Baton runs without one. "
                       "Set approval_policy: \"never\" in agent.yaml's codex section, or change the task so it "
                       "needs no input.")
            return Reply(events=[event(EventKind.system, subtype="approval_required", text=message)],
                         send=[answer], fail=("approval_required", message))
        return Reply(events=[event(EventKind.system, subtype="unanswered_request",
                                   text=f"Codex sent {method}; answered that Baton does not handle it")],
                     send=[answer])

    def _decline_read_only(self, request_id: Any, method: str, params: dict) -> Reply:
        """A planning turn asks for nothing it may get: declined, and the turn goes on (the
        agent hears that it may not, as from the sandbox)."""
        if method == _PERMISSIONS:
            result: dict = {"permissions": {}}  # nothing granted
            what = "more permissions"
        else:
            kind, legacy = _APPROVALS[method]
            result = {"decision": "denied" if legacy else "decline"}
            what = self._approval_subject(kind, params)
        answer = json.dumps({"id": request_id, "result": result})
        note = event(EventKind.system, subtype="declined",
                     text=f"Codex asked for approval of {what} during a read-only planning turn: declined")
        return Reply(events=[note], send=[answer])

    @staticmethod
    def _approval_subject(kind: str, params: dict) -> str:
        if kind == "command":
            command = _command_text(params.get("command"))
            return f"the command {_clip(command)!r}" if command else "a command"
        paths = list(params["fileChanges"]) if isinstance(params.get("fileChanges"), dict) else []
        reason = params.get("reason")
        detail = ", ".join(paths) if paths else (reason if isinstance(reason, str) and reason else "")
        return f"file changes ({_clip(detail)})" if detail else "file changes"

    # ----- notifications -------------------------------------------------------------------

    def _notification(self, method: str, params: dict) -> Reply:
        if method == "turn/started":
            turn = params.get("turn")
            if isinstance(turn, dict) and isinstance(turn.get("id"), str) and self._turn_asked:
                self.turn_id = turn["id"]
            return Reply()
        if method == "item/started":
            return Reply(events=self._item_started(_obj(params["item"])))
        if method == "item/completed":
            return Reply(events=self._item_completed(_obj(params["item"])))
        if method == "error":
            error = params.get("error") if isinstance(params.get("error"), dict) else {}
            text = str(error.get("message") or params.get("message") or "error")
            if params.get("willRetry"):
                text += " (Codex retries)"
            return Reply(events=[event(EventKind.system, subtype="error", text=_clip_output(text))])
        if method == "thread/tokenUsage/updated":
            self._tokens(_obj(params["tokenUsage"]), params.get("turnId"))
            return Reply()
        if method == "turn/completed":
            turn = _obj(params["turn"])
            if self.turn_id is not None and turn.get("id") not in (None, self.turn_id):
                return Reply()  # another turn of the thread: not ours
            return self._completed(turn)
        return Reply()  # deltas, diffs, plans, warnings and the like: raw log only

    def _item_started(self, item: dict) -> list[AgentEvent]:
        kind = item.get("type")
        if kind == "commandExecution":
            return [self._tool_use(item, "command", _clip(_item_command(item)))]
        if kind in ("mcpToolCall", "dynamicToolCall"):
            return [self._tool_use(item, self._tool_name(item), self._arguments(item))]
        return []

    def _item_completed(self, item: dict) -> list[AgentEvent]:
        kind, item_id = item.get("type"), str(item.get("id"))
        if kind == "agentMessage":
            text = item.get("text")
            if isinstance(text, str) and text:
                self._last_text = text
                return [event(EventKind.assistant_text, text=text, session_id=self.thread_id)]
            return []
        if kind == "commandExecution":
            out = [] if item_id in self._started_tools else [
                self._tool_use(item, "command", _clip(_item_command(item)))]
            output = item.get("aggregatedOutput")
            ok = item.get("status") == "completed" and item.get("exitCode") == 0
            text = _clip_output(output) if isinstance(output, str) and output else None
            if not ok and text is None:
                text = f"{item.get('status')}, exit code {item.get('exitCode')}"
            return out + [event(EventKind.tool_result, tool_use_id=item_id, ok=ok, text=text,
                                session_id=self.thread_id)]
        if kind == "fileChange":
            changes = item.get("changes") if isinstance(item.get("changes"), list) else []
            paths = ", ".join(str(c.get("path")) for c in changes if isinstance(c, dict))
            ok = item.get("status") == "completed"
            return [self._tool_use(item, "edit", _clip(paths)),
                    event(EventKind.tool_result, tool_use_id=item_id, ok=ok,
                          text=(f"changed {paths}" if ok else f"{item.get('status')}: {paths}"),
                          session_id=self.thread_id)]
        if kind in ("mcpToolCall", "dynamicToolCall"):
            out = [] if item_id in self._started_tools else [
                self._tool_use(item, self._tool_name(item), self._arguments(item))]
            error = item.get("error") if isinstance(item.get("error"), dict) else None
            ok = item.get("status") == "completed" and error is None and item.get("success") is not False
            detail = error.get("message") if error else item.get("result") or item.get("contentItems")
            text = None if detail is None else _clip_output(detail if isinstance(detail, str) else json.dumps(detail))
            return out + [event(EventKind.tool_result, tool_use_id=item_id, ok=ok, text=text,
                                session_id=self.thread_id)]
        return []

    def _tool_use(self, item: dict, name: str, summary: str) -> AgentEvent:
        self._started_tools.add(str(item.get("id")))
        return event(EventKind.tool_use, tool_name=name, tool_use_id=str(item.get("id")), tool_input=summary,
                     session_id=self.thread_id)

    @staticmethod
    def _tool_name(item: dict) -> str:
        server = item.get("server") or item.get("namespace")
        return f"{server}.{item.get('tool')}" if server else str(item.get("tool"))

    @staticmethod
    def _arguments(item: dict) -> str:
        args = item.get("arguments")
        return _clip(args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, sort_keys=True))

    # ----- tokens and the result -----------------------------------------------------------

    def _tokens(self, usage: dict, turn_id: Any) -> None:
        total = {k: _int(_obj(usage["total"]).get(k)) or 0 for k in _TOKEN_FIELDS}
        # Codex answers turn/start before the turn makes any model request; an update before
        # that (after thread/resume it repeats the thread's total so far) is not this turn's.
        ours = self.turn_id is not None and turn_id in (None, self.turn_id)
        if not ours:
            if self._total is None:
                self._before = total
            return
        if self._before is None:
            # `total` is the thread's, `last` this update's request: on the first update of
            # this turn their difference is whatever the thread had used before it.
            last = usage.get("last") if isinstance(usage.get("last"), dict) else {}
            self._before = {k: max(0, total[k] - (_int(last.get(k)) or 0)) for k in _TOKEN_FIELDS}
        self._total = total

    def _usage(self) -> Usage | None:
        if self._total is None:
            return None
        before = self._before or {}
        turn = {k: max(0, self._total[k] - before.get(k, 0)) for k in _TOKEN_FIELDS}
        return Usage(input=turn["inputTokens"], cached=turn["cachedInputTokens"], output=turn["outputTokens"])

    def usage(self) -> AgentEvent | None:
        """This turn's tokens so far (for a turn killed before turn/completed), cost estimated."""
        with self._lock:
            usage = self._usage()
        if usage is None:
            return None
        price = price_for(self.model, self.config.prices)
        cost = round(cost_usd(usage, price), 6) if price is not None else None
        return event(EventKind.result, session_id=self.thread_id, subtype="partial", ok=None,
                     cost_usd=cost, cost_estimated=True if cost is not None else None,
                     input_tokens=usage.input, output_tokens=usage.output, cache_read_tokens=usage.cached)

    def _completed(self, turn: dict) -> Reply:
        self.done = True
        status = turn.get("status")
        error = turn.get("error") if isinstance(turn.get("error"), dict) else None
        usage = self._usage()
        events: list[AgentEvent] = []
        cost = None
        if usage is not None:
            price = price_for(self.model, self.config.prices)
            if price is None:
                events.append(event(EventKind.system, subtype="no_price",
                                    text=f"no price for model {self.model or '(unknown)'}: cost not estimated; "
                                         "add it under codex.prices in agent.yaml"))
            else:
                cost = round(cost_usd(usage, price), 6)
        duration = _int(turn.get("durationMs"))
        events.append(event(
            EventKind.result,
            session_id=self.thread_id,
            ok=status == "completed",
            subtype=str(status),
            text=self._last_text if status == "completed" else None,
            errors=[str(error.get("message"))] if error else None,
            num_turns=1,
            duration_ms=duration if duration is not None else int((time.monotonic() - self._started) * 1000),
            cost_usd=cost,
            cost_estimated=True if cost is not None else None,
            input_tokens=usage.input if usage else None,
            output_tokens=usage.output if usage else None,
            cache_read_tokens=usage.cached if usage else None,
        ))
        return Reply(events=events, close_stdin=True)
