"""A stand-in for `codex app-server` (Codex CLI 0.169) that speaks its JSON-RPC protocol exactly.

Invoked as `codex app-server [-c key=value]… [--enable F] [--disable F]`; one JSON object per
line each way, no "jsonrpc" field (../../PROTOCOLS.md, /tmp/codex-schema/v2). Requests before
`initialize` are refused ("Not initialized"), unknown methods answered with an error; it ends
with exit status 0 when its stdin closes. `thread/start` makes a thread, `thread/resume` finds
one kept in $FAKE_CLI_STATE (else $FAKE_CLAUDE_STATE) or answers "no rollout found";
`turn/start` runs what the `FAKE: {...}` line of the prompt says (see fake_claude.py's
docstring: the same steps, "result", "error", "no_result", "exit", "garbage", "fail_once",
"on_resume": the next entry runs in a resumed thread's turn; with none left, a prompt that
holds a FAKE line (a new attempt) runs that again, any other a plain success), reporting
steps as items: Bash/Read → commandExecution, Write → fileChange, text → agentMessage (with
deltas), and a thread/tokenUsage/updated after each (every model
request counts 1000 input tokens of which 200 cached, 50 output; `total` is the thread's,
earlier turns included, and is repeated right after a thread/resume answer, as Codex 0.169
does). Codex-only keys:
    {"approval": "command"|"file_change"|"legacy_command"|"legacy_file_change"}
        asks for that approval first and waits for the answer; accepted: writes approved.txt;
        declined: the turn ends failed, except in a read-only sandbox, where (as Codex does for
        a declined request) the item is reported `declined` and the turn goes on
    {"request": "item/tool/requestUserInput"}  sends that server request and waits for any answer
    {"hang_until_interrupt": true}              the turn runs until turn/interrupt, then ends interrupted
    {"big_output": N}                           a commandExecution with N bytes of aggregatedOutput
    {"retry_errors": 2}                         `error` notifications with willRetry true first
MCP servers come from `-c mcp_servers.<name>.command|args|env` overrides and start with the first
thread; a step {"mcp": TOOL, "arguments": {...}, "server": "baton_tracker"} calls one of their tools
and reports an mcpToolCall item (completed with the server's `result`, or failed).
`approvalPolicy` (thread/start, thread/resume) is an AskForApproval: one of the policy names or
{"granular": {mcp_elicitations, rules, sandbox_approval: bool, request_permissions?, skill_approval?}};
turn/start's optional `sandboxPolicy` is a SandboxPolicy object tagged by `type` (dangerFullAccess,
readOnly {networkAccess: bool}, workspaceWrite {networkAccess: bool, writableRoots: [absolute
paths], excludeSlashTmp, excludeTmpdirEnvVar: bool}, externalSandbox {networkAccess: restricted|
enabled}); either malformed is refused as Codex's deserializer refuses it ("Invalid request: …"),
and the turn's policy replaces the thread's sandbox for that turn.
A thread started (or resumed) with `sandbox: "read-only"` (or a turn with a readOnly policy)
refuses writes as Codex 0.169's sandbox does (checked against the real CLI): a file change is rejected and a command that is
not read-only (steps.reads_only) fails inside the sandbox, and neither shows up as an item at
all (the model alone hears "patch rejected…" or "Read-only file system"); reading commands run.
"model_text": the final agent message, default "Done.".
`turn/start` input items are Codex 0.169's UserInput variants (text, image, localImage {path},
…; an unknown one is refused as Codex refuses it); the prompt is the text items, attached images
the localImage ones. Each invocation is appended to $FAKE_CLI_LOG (else $FAKE_CLAUDE_LOG) once
its turn starts (argv, cwd, prompt, images [{path, exists}], resume, parsed -c config, chosen
environment variables, approval_policy as the thread got it, sandbox_policy as turn/start sent it
and the `sandbox` the turn ran in), and every message received as {"received": ...}.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import signal
import sys
import threading
import time
import tomllib
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mcp_clients import McpClients, Spec  # noqa: E402
from steps import do_step, reads_only  # noqa: E402 - the fakes share their scenario steps

STATE_DIR = Path(os.environ.get("FAKE_CLI_STATE") or os.environ.get("FAKE_CLAUDE_STATE") or Path.home() / ".fake-codex")
LOG = os.environ.get("FAKE_CLI_LOG") or os.environ.get("FAKE_CLAUDE_LOG")
MODEL = "gpt-5.5"
VERSION = "0.169.0"
ENV_KEYS = ("TASK_PORT", "TASK_ID", "BATON_TOKEN", "GITHUB_TOKEN", "SECRET_FOR_TEST", "CODEX_HOME", "OPENAI_API_KEY")
REQUEST_USAGE = {"inputTokens": 1000, "cachedInputTokens": 200, "outputTokens": 50, "reasoningOutputTokens": 10,
                 "totalTokens": 1050, "cacheWriteInputTokens": 0}
INVALID_REQUEST = -32600
USER_INPUT_TYPES = ("text", "image", "localImage", "audio", "localAudio", "skill", "mention")
APPROVAL_NAMES = ("untrusted", "on-failure", "on-request", "never")
# SandboxPolicy's variants (codex app-server v2 schema): field -> check, and the sandbox each is.
_BOOL = ("a boolean", lambda v: isinstance(v, bool))
SANDBOX_POLICIES = {
    "dangerFullAccess": ({}, "danger-full-access"),
    "readOnly": ({"networkAccess": _BOOL}, "read-only"),
    "externalSandbox": ({"networkAccess": ("`restricted` or `enabled`", lambda v: v in ("restricted", "enabled"))},
                        "danger-full-access"),
    "workspaceWrite": ({"networkAccess": _BOOL, "excludeSlashTmp": _BOOL, "excludeTmpdirEnvVar": _BOOL,
                        "writableRoots": ("a sequence of absolute paths", lambda v: isinstance(v, list) and all(
                            isinstance(p, str) and p.startswith("/") for p in v))}, "workspace-write"),
}
GRANULAR = {"mcp_elicitations": True, "rules": True, "sandbox_approval": True,
            "request_permissions": False, "skill_approval": False}  # field -> required

_out = threading.Lock()


def emit(obj: dict) -> None:
    with _out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def notify(method: str, params: dict) -> None:
    emit({"method": method, "params": params, "emittedAtMs": now_ms()})


def now_ms() -> int:
    return int(time.time() * 1000)


def log(entry: dict) -> None:
    if LOG:
        with open(LOG, "a") as handle:
            handle.write(json.dumps(entry) + "\n")


def approval_policy_problem(value) -> str | None:
    """What Codex's deserializer says of an AskForApproval value (None: accepted)."""
    if value is None or value in APPROVAL_NAMES:
        return None
    if isinstance(value, str):
        return f"unknown variant `{value}`, expected one of {', '.join(f'`{n}`' for n in APPROVAL_NAMES)}"
    if not isinstance(value, dict) or list(value) != ["granular"] or not isinstance(value["granular"], dict):
        return "data did not match any variant of untagged enum AskForApproval"
    granular = value["granular"]
    for name, required in GRANULAR.items():
        if name not in granular:
            if required:
                return f"missing field `{name}`"
        elif not isinstance(granular[name], bool):
            return f"invalid type: {json.dumps(granular[name])}, expected a boolean"
    return None


def sandbox_policy_problem(value) -> str | None:
    """What Codex's deserializer says of a SandboxPolicy value (None: accepted; unknown fields
    are ignored, as serde does without deny_unknown_fields)."""
    if not isinstance(value, dict):
        return f"invalid type: {json.dumps(value)}, expected internally tagged enum SandboxPolicy"
    kind = value.get("type")
    if kind is None:
        return "missing field `type`"
    if kind not in SANDBOX_POLICIES:
        return (f"unknown variant `{kind}`, expected one of "
                + ", ".join(f"`{name}`" for name in SANDBOX_POLICIES))
    for name, (expected, ok) in SANDBOX_POLICIES[kind][0].items():
        if name in value and not ok(value[name]):
            return f"invalid type: {json.dumps(value[name])}, expected {expected}"
    return None


def usage_error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n\nUsage: codex app-server [OPTIONS] [COMMAND]\n")
    sys.exit(2)


def parse_args(argv: list[str]) -> dict:
    if not argv or argv[0] != "app-server":
        usage_error("this fake only supports `codex app-server`")
    config: dict = {}
    features: dict = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-c", "--config", "--enable", "--disable"):
            if i + 1 >= len(argv):
                usage_error(f"a value is required for '{arg}'")
            value = argv[i + 1]
            if arg in ("--enable", "--disable"):
                features[value] = arg == "--enable"
            else:
                key, sep, raw = value.partition("=")
                if not sep:
                    usage_error(f"invalid override {value!r}: expected key=value")
                try:  # like Codex: parsed as TOML, else taken as the raw string
                    config[key] = tomllib.loads(f"v = {raw}")["v"]
                except tomllib.TOMLDecodeError:
                    config[key] = raw
            i += 2
            continue
        usage_error(f"unexpected argument '{arg}' found")
    return {"config": config, "features": features, "mcp": mcp_servers(config)}


def mcp_servers(config: dict) -> dict[str, Spec]:
    """`mcp_servers.<name>.*` from the -c overrides, each applied at its dotted path of the config
    tree as Codex applies them (so `mcp_servers.x={command=…}` works as well as key by key)."""
    tree: dict = {}
    for key, value in config.items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    out = {}
    for name, server in (tree.get("mcp_servers") or {}).items():
        if not isinstance(server, dict) or server.get("enabled") is False:
            continue
        command, args, env = server.get("command"), server.get("args", []), server.get("env", {})
        if not isinstance(command, str) or not isinstance(args, list) or not all(isinstance(a, str) for a in args) \
                or not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            sys.stderr.write(f"Error loading config.toml: invalid transport in `mcp_servers.{name}`\n")
            sys.exit(1)
        out[name] = Spec(command, list(args), dict(env))
    return out


class Session:
    """One turn's items, in Codex's shapes (the `session` of steps.py)."""

    def __init__(self, server: "Server", turn_id: str) -> None:
        self.server, self.turn_id = server, turn_id
        self.thread_id = server.thread_id
        self.cwd = os.getcwd()

    def _item(self, method: str, item: dict) -> None:
        stamp = "startedAtMs" if method == "item/started" else "completedAtMs"
        notify(method, {"item": item, "threadId": self.thread_id, "turnId": self.turn_id, stamp: now_ms()})

    def model_request(self) -> None:
        self.server.add_usage(self.turn_id)

    def refused(self, write: bool) -> bool:
        """A read-only sandbox's refusal: the model hears it, the client sees no item."""
        if write and self.server.sandbox == "read-only":
            self.model_request()
            return True
        return False

    def command(self, command: str, run, reads: bool = False) -> None:
        if self.refused(not reads):
            return
        item = {"type": "commandExecution", "id": f"call_{uuid.uuid4().hex[:12]}", "command": command,
                "cwd": self.cwd, "processId": None, "source": "agent", "status": "inProgress",
                "commandActions": [{"type": "unknown", "command": command}], "aggregatedOutput": None,
                "exitCode": None, "durationMs": None}
        self.model_request()
        self._item("item/started", item)
        started = time.monotonic()
        try:
            output, code, status = run(), 0, "completed"
        except Exception as exc:  # noqa: BLE001 - reported as a failed command, like the real CLI
            output, code, status = str(exc), 1, "failed"
        self._item("item/completed", {**item, "status": status, "aggregatedOutput": output, "exitCode": code,
                                      "durationMs": int((time.monotonic() - started) * 1000)})

    def file_change(self, path: str, text: str, run) -> None:
        if self.refused(True):
            return
        item = {"type": "fileChange", "id": f"call_{uuid.uuid4().hex[:12]}", "status": "inProgress",
                "changes": [{"path": path, "kind": {"type": "add"},
                             "diff": "".join(f"+{line}\n" for line in text.splitlines())}]}
        self.model_request()
        self._item("item/started", item)
        try:
            run()
            status = "completed"
        except Exception:  # noqa: BLE001
            status = "failed"
        self._item("item/completed", {**item, "status": status})

    def tool(self, name: str, tool_input: dict, run) -> None:
        if name in ("Write", "Edit"):
            self.file_change(tool_input["file_path"], tool_input.get("content", tool_input.get("new_string", "")), run)
        elif name == "Read":
            self.command(f"/bin/bash -lc 'cat {tool_input['file_path']}'", run, reads=True)
        else:
            command = tool_input.get("command", name)
            self.command(f"/bin/bash -lc {json.dumps(command)}", run, reads=reads_only(command))

    def mcp_tool(self, server: str, tool: str, arguments: dict) -> None:
        """An mcpToolCall item: inProgress, then completed with the server's result, or failed."""
        clients = self.server.mcp
        item = {"type": "mcpToolCall", "id": f"call_{uuid.uuid4().hex[:12]}", "server": server, "tool": tool,
                "status": "inProgress", "arguments": arguments, "result": None, "error": None, "durationMs": None}
        self.model_request()
        self._item("item/started", item)
        started = time.monotonic()
        if clients is None or not clients.has(server, tool):
            done = {"status": "failed", "error": {"message": f"unknown MCP server or tool: {server}/{tool}"}}
        else:
            outcome = clients.call(server, tool, arguments)
            done = {"status": "failed" if outcome.is_error else "completed",
                    "result": {"content": outcome.content, "structuredContent": None}}
        self._item("item/completed", {**item, **done, "durationMs": int((time.monotonic() - started) * 1000)})

    def text(self, text: str) -> None:
        item = {"type": "agentMessage", "id": f"msg_{uuid.uuid4().hex[:12]}", "text": "", "phase": None}
        self.model_request()
        self._item("item/started", item)
        for start in range(0, len(text), 16):
            notify("item/agentMessage/delta", {"threadId": self.thread_id, "turnId": self.turn_id,
                                               "itemId": item["id"], "delta": text[start:start + 16]})
        self._item("item/completed", {**item, "text": text})


class Server:
    def __init__(self, args: dict) -> None:
        self.args = args
        self.initialized = False
        self.thread_id: str | None = None
        self.state: dict = {}
        self.resumed = False
        self.turn_id: str | None = None
        self.interrupted = threading.Event()
        self.ids = itertools.count(0)
        self.answers: dict[int, queue.SimpleQueue] = {}
        self.exit_code = 0
        self.logged = False
        self.prompt: str | None = None
        self.sandbox: str | None = None  # as thread/start or thread/resume set it (a turn's policy replaces it)
        self.approval_policy = None  # as thread/start or thread/resume sent it
        self.sandbox_policy: dict | None = None  # as turn/start sent it
        self.images: list[dict] = []  # the turn's localImage inputs: {path, exists}
        self.mcp: McpClients | None = None  # started with the first thread, as Codex starts its servers

    # ----- bookkeeping ---------------------------------------------------------------------

    def log_invocation(self) -> None:
        if self.logged:
            return
        self.logged = True
        log({"argv": sys.argv[1:], "cwd": os.getcwd(), "prompt": self.prompt, "pid": os.getpid(),
             "resume": self.thread_id if self.resumed else None, "thread": self.thread_id,
             "config": self.args["config"], "features": self.args["features"], "images": self.images,
             "mcp_servers": {name: vars(spec) for name, spec in self.args["mcp"].items()},
             "approval_policy": self.approval_policy, "sandbox_policy": self.sandbox_policy, "sandbox": self.sandbox,
             "env": {k: os.environ.get(k) for k in ENV_KEYS}, "env_names": sorted(os.environ)})

    def start_mcp(self) -> None:
        if self.mcp is None:
            self.mcp = McpClients(self.args["mcp"])
            self.mcp.start()

    def mcp_status(self) -> None:
        """As Codex 0.169 reports its MCP servers' start to the client (checked against the real CLI)."""
        for name in (self.mcp.servers if self.mcp else {}):
            for status in ("starting", "ready" if self.mcp.status(name) == "connected" else "failed"):
                notify("mcpServer/startupStatus/updated", {
                    "threadId": self.thread_id, "name": name, "status": status,
                    "error": self.mcp.failed.get(name) if status == "failed" else None, "failureReason": None})

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / f"{self.thread_id}.json").write_text(json.dumps(self.state))

    def add_usage(self, turn_id: str) -> None:
        total = self.state.setdefault("total", {k: 0 for k in REQUEST_USAGE})
        for key, value in REQUEST_USAGE.items():
            total[key] = total.get(key, 0) + value
        self.save()
        notify("thread/tokenUsage/updated", {"threadId": self.thread_id, "turnId": turn_id, "tokenUsage": {
            "total": dict(total), "last": dict(REQUEST_USAGE), "modelContextWindow": 258400}})

    def ask(self, method: str, params: dict) -> dict:
        """A server→client request; waits for the client's answer (a real one would too)."""
        request_id = next(self.ids)
        answer: queue.SimpleQueue = queue.SimpleQueue()
        self.answers[request_id] = answer
        emit({"id": request_id, "method": method, "params": params})
        return answer.get(timeout=600)

    # ----- the loop ------------------------------------------------------------------------

    def serve(self) -> None:
        for raw in sys.stdin:
            line = raw.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                log({"received_unparsed": line})
                emit({"error": {"code": -32700, "message": "Parse error"}, "id": None})
                continue
            log({"received": message})
            if "method" in message and "id" in message:
                self.request(message["id"], message["method"], message.get("params") or {})
            elif "id" in message and message["id"] in self.answers:
                self.answers.pop(message["id"]).put(message)
        self.log_invocation()
        sys.stdout.flush()
        os._exit(self.exit_code)  # a turn thread still running (hang) does not hold the exit

    def error(self, request_id, message: str, code: int = INVALID_REQUEST) -> None:
        emit({"error": {"code": code, "message": message}, "id": request_id})

    def request(self, request_id, method: str, params: dict) -> None:
        if method != "initialize" and not self.initialized:
            return self.error(request_id, "Not initialized")
        if method == "initialize":
            if self.initialized:
                return self.error(request_id, "Already initialized")
            info = params.get("clientInfo") or {}
            if not isinstance(info.get("name"), str) or not isinstance(info.get("version"), str):
                return self.error(request_id, "Invalid request: missing field `clientInfo`")
            self.initialized = True
            home = os.environ.get("CODEX_HOME") or str(Path.home() / ".codex")
            emit({"id": request_id, "result": {"userAgent": f"{info['name']}/{VERSION} (fake)", "codexHome": home,
                                               "platformFamily": "unix", "platformOs": "linux"}})
        elif method in ("thread/start", "thread/resume") and \
                (problem := approval_policy_problem(params.get("approvalPolicy"))) is not None:
            return self.error(request_id, f"Invalid request: {problem}")
        elif method == "thread/start":
            self.start_mcp()
            self.approval_policy = params.get("approvalPolicy")
            self.thread_id = str(uuid.uuid4())
            self.sandbox = params.get("sandbox")
            self.state = {"scenario": None, "turns": 0, "resumes": 0, "params": params}
            self.resumed = False
            self.save()
            thread = self.thread_object(params)
            emit({"id": request_id, "result": self.thread_result(thread, params)})
            notify("thread/started", {"thread": thread})
            self.mcp_status()
        elif method == "thread/resume":
            thread_id = params.get("threadId")
            path = STATE_DIR / f"{thread_id}.json"
            if not isinstance(thread_id, str) or not path.exists():
                return self.error(request_id, f"no rollout found for thread id {thread_id}")
            self.start_mcp()
            self.thread_id, self.state, self.resumed = thread_id, json.loads(path.read_text()), True
            self.sandbox = params.get("sandbox") or self.state.get("params", {}).get("sandbox")
            self.approval_policy = params.get("approvalPolicy")
            emit({"id": request_id, "result": self.thread_result(self.thread_object(params), params)})
            if self.state.get("total"):  # like Codex 0.169: the thread's usage so far, under its last turn
                notify("thread/tokenUsage/updated", {"threadId": thread_id, "turnId": self.state.get("last_turn"),
                                                     "tokenUsage": {"total": self.state["total"],
                                                                    "last": dict(REQUEST_USAGE),
                                                                    "modelContextWindow": 258400}})
        elif method == "turn/start":
            if params.get("threadId") != self.thread_id or self.thread_id is None:
                return self.error(request_id, f"thread not found: {params.get('threadId')}")
            if self.turn_id is not None:
                return self.error(request_id, "a turn is already running")
            policy = params.get("sandboxPolicy")
            if policy is not None and (problem := sandbox_policy_problem(policy)) is not None:
                return self.error(request_id, f"Invalid request: {problem}")
            items = params.get("input") or []
            for item in items:  # UserInput (app-server v2): text, image, localImage, skill, mention …
                kind = item.get("type") if isinstance(item, dict) else None
                if kind not in USER_INPUT_TYPES:
                    return self.error(request_id, f"Invalid request: unknown variant `{kind}`")
                if kind == "localImage" and not isinstance(item.get("path"), str):
                    return self.error(request_id, "Invalid request: missing field `path`")
            if policy is not None:  # "for this turn and subsequent turns": this process runs one
                self.sandbox_policy, self.sandbox = policy, SANDBOX_POLICIES[policy["type"]][1]
            texts = [i.get("text", "") for i in items if i.get("type") == "text"]
            self.prompt = "\n".join(texts)
            self.images = [{"path": i["path"], "exists": Path(i["path"]).is_file()}
                           for i in items if i.get("type") == "localImage"]
            self.turn_id = str(uuid.uuid4())
            self.log_invocation()
            turn = {"id": self.turn_id, "items": [], "status": "inProgress", "error": None, "startedAt": None,
                    "completedAt": None, "durationMs": None}
            emit({"id": request_id, "result": {"turn": turn}})
            threading.Thread(target=self.run_turn, args=(self.turn_id, self.prompt), daemon=True).start()
        elif method == "turn/interrupt":
            if self.turn_id is None or params.get("turnId") != self.turn_id:
                return self.error(request_id, "no active turn to interrupt")
            self.interrupted.set()
            emit({"id": request_id, "result": {}})
        else:
            self.error(request_id, f"Invalid request: unknown variant `{method}`")

    def thread_object(self, params: dict) -> dict:
        return {"id": self.thread_id, "sessionId": self.thread_id, "preview": "", "ephemeral": False,
                "modelProvider": "openai", "model": params.get("model") or MODEL, "createdAt": int(time.time()),
                "updatedAt": int(time.time()), "status": {"type": "idle"}, "path": None,
                "cwd": params.get("cwd") or os.getcwd(), "cliVersion": VERSION, "source": "vscode",
                "projectId": None, "gitInfo": None, "name": None, "turns": []}

    @staticmethod
    def thread_result(thread: dict, params: dict) -> dict:
        sandbox = {"danger-full-access": "dangerFullAccess", "workspace-write": "workspaceWrite",
                   "read-only": "readOnly"}.get(params.get("sandbox") or "", "readOnly")
        return {"thread": thread, "model": thread["model"], "modelProvider": "openai", "serviceTier": None,
                "cwd": thread["cwd"], "approvalPolicy": params.get("approvalPolicy") or "on-request",
                "approvalsReviewer": "user", "sandbox": {"type": sandbox}, "reasoningEffort": None}

    # ----- a turn --------------------------------------------------------------------------

    def scenario(self, prompt: str) -> dict:
        match = re.search(r"^FAKE: (.*)$", prompt, re.MULTILINE)
        if self.resumed:
            plans = (self.state.get("scenario") or {}).get("on_resume", [])
            done = self.state.get("resumes", 0)
            self.state["resumes"] = done + 1
            if done < len(plans):
                return plans[done]
            if not match:
                return {"steps": [], "result": "success"}
            # No plan left, and the prompt is the task again (a new attempt): run it again.
        scenario = json.loads(match.group(1)) if match else {"steps": []}
        self.state["scenario"] = scenario
        return scenario

    def run_turn(self, turn_id: str, prompt: str) -> None:
        started = time.monotonic()
        scenario = self.scenario(prompt)
        self.state["turns"] = self.state.get("turns", 0) + 1
        self.save()
        session = Session(self, turn_id)
        ids = {"threadId": self.thread_id, "turnId": turn_id}

        def complete(status: str, error: str | None = None) -> None:
            turn = {"id": turn_id, "items": [], "status": status, "startedAt": None, "completedAt": int(time.time()),
                    "durationMs": int((time.monotonic() - started) * 1000),
                    "error": {"message": error, "codexErrorInfo": "other", "additionalDetails": None} if error else None}
            self.turn_id = None
            self.state["last_turn"] = turn_id
            self.save()
            notify("turn/completed", {"threadId": self.thread_id, "turn": turn})

        notify("turn/started", {"threadId": self.thread_id, "turn": {"id": turn_id, "items": [], "status": "inProgress",
                                                                     "error": None}})
        user = {"type": "userMessage", "id": f"user_{uuid.uuid4().hex[:8]}", "content": [{"type": "text", "text": prompt}]}
        notify("item/started", {"item": user, **ids, "startedAtMs": now_ms()})
        notify("item/completed", {"item": user, **ids, "completedAtMs": now_ms()})
        if scenario.get("garbage"):
            with _out:
                sys.stdout.write("this line is not JSON\n")
                sys.stdout.flush()
            notify("mystery/notification", {"threadId": self.thread_id})
        for n in range(scenario.get("retry_errors", 0)):
            notify("error", {**ids, "willRetry": True, "error": {
                "message": f"Reconnecting... {n + 1}/5 (stream disconnected before completion)",
                "codexErrorInfo": {"responseStreamDisconnected": {"httpStatusCode": 500}}, "additionalDetails": None}})
        if scenario.get("approval") and not self.approval(scenario["approval"], session, ids) \
                and self.sandbox != "read-only":
            notify("error", {**ids, "willRetry": False, "error": {"message": "the approval was declined",
                                                                  "codexErrorInfo": "other"}})
            return complete("failed", f"{scenario['approval']} approval declined")
        if scenario.get("request"):
            answer = self.ask(scenario["request"], {**ids, "itemId": f"call_{uuid.uuid4().hex[:8]}",
                                                    "isBlocking": True, "questions": []})
            log({"answered": answer})
        for step in scenario.get("steps", []):
            if self.interrupted.is_set():
                return complete("interrupted")
            do_step(session, step, prompt)
        if scenario.get("big_output"):
            size = int(scenario["big_output"])
            session.command("/bin/bash -lc 'yes x | head -c N'", lambda: ("x" * (size - 1) + "\n")[:size])
        if scenario.get("hang_until_interrupt"):
            session.text("working on it")
            self.interrupted.wait(600)
            return complete("interrupted")
        if scenario.get("no_result"):
            sys.stderr.write("fake_codex: crashed without a result\n")
            sys.stderr.flush()
            self.log_invocation()
            os._exit(scenario.get("exit", 3))
        outcome = scenario.get("result", "success")
        if "fail_once" in scenario:
            flag = Path(scenario["fail_once"])
            outcome = "success" if flag.exists() else "error_during_execution"
            flag.touch()
        self.exit_code = scenario.get("exit", 0)
        if outcome == "success":
            session.text(scenario.get("model_text", "Done."))
            return complete("completed")
        message = scenario.get("error", "the fake failed")
        session.model_request()
        notify("error", {**ids, "willRetry": False, "error": {"message": message, "codexErrorInfo": "other"}})
        complete("failed", message)

    def declined(self, session: Session, item: dict) -> None:
        """In a read-only sandbox the turn goes on after a declined request: the item says so."""
        if self.sandbox == "read-only":
            session._item("item/started", {**item, "status": "inProgress"})
            session._item("item/completed", {**item, "status": "declined"})

    def approval(self, kind: str, session: Session, ids: dict) -> bool:
        path = "approved.txt"

        def write() -> str:
            Path(path).write_text(f"approved {kind}\n")
            return ""

        item_id = f"call_{uuid.uuid4().hex[:12]}"
        if kind in ("command", "legacy_command"):
            command = f"/bin/bash -lc 'echo approved > {path}'"
            if kind == "command":
                answer = self.ask("item/commandExecution/requestApproval", {
                    **ids, "itemId": item_id, "startedAtMs": now_ms(), "command": command, "cwd": os.getcwd(),
                    "reason": "write outside the sandbox", "commandActions": []})
            else:
                answer = self.ask("execCommandApproval", {
                    "conversationId": self.thread_id, "callId": item_id, "command": ["/bin/bash", "-lc", f"echo > {path}"],
                    "cwd": os.getcwd(), "parsedCmd": [], "reason": None})
            decision = (answer.get("result") or {}).get("decision")
            if decision not in ("accept", "acceptForSession", "approved", "approved_for_session"):
                self.declined(session, {"type": "commandExecution", "id": item_id, "command": command,
                                        "cwd": os.getcwd(), "processId": None, "source": "agent",
                                        "commandActions": [], "aggregatedOutput": None, "exitCode": None,
                                        "durationMs": None})
                return False
            session.command(command, write)
            return True
        if kind in ("file_change", "legacy_file_change"):
            if kind == "file_change":
                answer = self.ask("item/fileChange/requestApproval", {
                    **ids, "itemId": item_id, "startedAtMs": now_ms(), "reason": "write approved.txt", "grantRoot": None})
            else:
                answer = self.ask("applyPatchApproval", {
                    "conversationId": self.thread_id, "callId": item_id, "reason": None, "grantRoot": None,
                    "fileChanges": {str(Path(os.getcwd()) / path): {"type": "add", "content": f"approved {kind}\n"}}})
            decision = (answer.get("result") or {}).get("decision")
            if decision not in ("accept", "acceptForSession", "approved", "approved_for_session"):
                self.declined(session, {"type": "fileChange", "id": item_id, "changes": [
                    {"path": str(Path(os.getcwd()) / path), "kind": {"type": "add"}, "diff": ""}]})
                return False
            session.file_change(str(Path(os.getcwd()) / path), f"approved {kind}", write)
            return True
        raise SystemExit(f"fake_codex: unknown approval kind {kind!r}")


def main() -> None:
    server = Server(parse_args(sys.argv[1:]))

    def on_term(signum, frame) -> None:  # killed mid-turn (cancel, limits): still leave the record
        server.log_invocation()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    server.serve()


if __name__ == "__main__":
    main()
