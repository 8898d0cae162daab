"""A stand-in for the Claude Code CLI that speaks its stream-json protocol exactly.

Invoked as `claude -p --output-format stream-json --verbose [...] [--resume ID]` with the
prompt on standard input. What it does comes from a line in the prompt:

    FAKE: {"steps": [...], "result": "success", "on_resume": [{"steps": [...]}]}

Steps (each shows up as a Bash or Write tool call with its result):
    {"write": "path", "text": "..."}       {"append": "path", "text": "..."}
    {"edit": "path", "old": "a", "new": "b"} (Edit tool: replaces a by b in an existing file)
    {"read": "path", "into": "copy"}       (Read tool: copies what path holds, or "<missing>", to copy)
    {"commit": "message"}                  (git add -A; git commit)
    {"git": ["add", "-f", "x"]}            {"run": ["cmd", "arg"]}
    {"sleep": 2.5}                         (silent)
    {"tick": 10, "every": 0.2}             (prints assistant text while it waits)
    {"grandchild": "pidfile"}              (starts `sleep 600` in this process group)
    {"escape": "pidfile"}                  (starts `setsid sh -c "trap '' TERM; exec sleep 600"`:
                                            a new session, deaf to SIGTERM, holding stdout)
    {"marker": "path"}                     (writes this process's pid there)
    {"block_once": "path", "seconds": 60}  (first run only: create path and sleep)
    {"wait_for": "path", "seconds": 20}    (until another process created path)
    {"rebase_resolve": {"file": "text"}}   (git rebase <ref from the prompt>, resolving
                                            conflicts with the given contents)
    {"mcp": "tracker_get_issue", "arguments": {}, "server": "baton_tracker"}
                                           (a tool of an MCP server given with --mcp-config, a
                                            JSON string or file: mcp__<server>__<tool>, its result
                                            the server's content blocks; the servers start before
                                            the init line, which lists them and their tools)
Permissions as Claude Code 2.1.329 applies them (checked against the real CLI): a tool named
in --disallowedTools is not there (an is_error tool_result "No such tool available"); with
--permission-mode plan, Write/Edit/MultiEdit/NotebookEdit and a Bash command that is not
read-only (steps.reads_only) are refused: a `permission_denied` system line, an is_error
tool_result, and an entry in the result's `permission_denials`; the run still succeeds.
"model_text": the final answer (the result's `result`), default "Done.".
Results: "success", or an error subtype such as "error_during_execution"; "exit" overrides
the exit status; "no_result": true exits without a result line; "garbage": true prints a
non-JSON line and an unknown JSON type first; "fail_once": "path" fails the first run (the one
that creates path) with error_during_execution and succeeds later. On `--resume`, the next "on_resume" entry runs.
Every invocation is appended to $FAKE_CLAUDE_LOG (argv, cwd, chosen environment) if set.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mcp_clients import McpClients, Spec  # noqa: E402
from steps import do_step, reads_only  # noqa: E402 - the fakes share their scenario steps

STATE_DIR = Path(os.environ.get("FAKE_CLAUDE_STATE", Path.home() / ".fake-claude"))
MODEL = "claude-fake-1"
FILE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit")
# What 2.1.329 answers a Bash command plan mode cannot clear (pointed at a non-Anthropic API).
BASH_REFUSED = ("Auto mode is unavailable: its safety check does not run for this session, so Bash was not run. "
                "Other actions that need the check will be denied too, and retrying won't help. Finish what you "
                "can without them, then tell the user what is blocked and that they can switch to another "
                "permission mode.")


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fail_usage(message: str) -> None:
    sys.stderr.write(f"Error: {message}\n")
    sys.exit(1)


def parse_args(argv: list[str]) -> dict:
    opts = {"print": False, "format": None, "verbose": False, "skip": False, "resume": None, "prompt": None,
            "mode": None, "disallowed": [], "allowed": [], "mcp": {}}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--disallowedTools", "--disallowed-tools", "--allowedTools", "--allowed-tools"):
            # Lists: every following word up to the next flag (a word may hold several names).
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                opts["disallowed" if arg.startswith("--disallowed") else "allowed"] += argv[i].replace(",", " ").split()
        elif arg == "--mcp-config":
            # A list too: each word a JSON string or the path of a JSON file.
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                fail_usage("option '--mcp-config <configs...>' argument missing")
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                opts["mcp"].update(load_mcp_config(argv[i]))
        elif arg == "--strict-mcp-config":
            pass
        elif arg == "--permission-mode":
            i += 1
            if argv[i] not in ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan"):
                fail_usage(f"option '--permission-mode <mode>' argument '{argv[i]}' is invalid")
            opts["mode"] = argv[i]
        elif arg in ("-p", "--print"):
            opts["print"] = True
        elif arg == "--output-format":
            i += 1
            opts["format"] = argv[i]
        elif arg == "--verbose":
            opts["verbose"] = True
        elif arg == "--dangerously-skip-permissions":
            opts["skip"] = True
        elif arg == "--resume":
            i += 1
            opts["resume"] = argv[i]
        elif arg in ("--model", "--max-turns", "--append-system-prompt"):
            i += 1
        elif arg.startswith("-"):
            fail_usage(f"unknown option '{arg}'")
        else:
            opts["prompt"] = arg
        i += 1
    return opts


def load_mcp_config(value: str) -> dict[str, Spec]:
    """One --mcp-config word as Claude Code reads it: `{"mcpServers": {NAME: {type, command, args, env}}}`."""
    try:
        text = value if value.lstrip().startswith("{") else Path(value).read_text()
    except OSError:
        fail_usage(f"MCP config file not found: {value}")
    try:
        servers = json.loads(text)["mcpServers"]
        if not isinstance(servers, dict):
            raise TypeError("mcpServers is not an object")
        out = {}
        for name, spec in servers.items():
            if spec.get("type", "stdio") != "stdio" or not isinstance(spec.get("command"), str):
                raise ValueError(f"{name}: only stdio servers with a command are supported here")
            args, env = spec.get("args", []), spec.get("env", {})
            if not all(isinstance(a, str) for a in args) or not all(isinstance(v, str) for v in env.values()):
                raise TypeError(f"{name}: args must be strings, env values strings")
            out[name] = Spec(spec["command"], list(args), dict(env))
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        fail_usage(f"Invalid MCP configuration: {exc}")
    return {}


class Session:
    def __init__(self, session_id: str, cwd: str, opts: dict | None = None) -> None:
        self.id = session_id
        self.cwd = cwd
        self.turns = 0
        self.tool_n = 0
        self.plan = (opts or {}).get("mode") == "plan"
        self.disallowed = set((opts or {}).get("disallowed") or ())
        self.allowed = set((opts or {}).get("allowed") or ())
        self.skip = bool((opts or {}).get("skip")) or (opts or {}).get("mode") == "bypassPermissions"
        self.mcp = McpClients((opts or {}).get("mcp") or {})
        self.denials: list[dict] = []

    def refusal(self, name: str, tool_input: dict, tool_id: str) -> str | None:
        """Why the CLI's permission system refuses this call (None: it runs). A plan-mode
        refusal is announced in a permission_denied line and counted in the result."""
        if name in self.disallowed:
            return (f"<tool_use_error>Error: No such tool available: {name}. {name} is disabled for this session, "
                    "in subagents as well as here.</tool_use_error>")
        if not self.plan:
            return None
        if name in FILE_TOOLS:
            message = f"Cannot write to {tool_input.get('file_path')} while in plan mode."
            reason = {"decision_reason_type": "mode"}
        elif name == "Bash" and not reads_only(str(tool_input.get("command", ""))):
            message = BASH_REFUSED
            reason = {"decision_reason_type": "classifier", "decision_reason_code": "auto_mode_no_check_in_session",
                      "decision_reason": "Classifier unavailable"}
        else:
            return None
        emit({"type": "system", "subtype": "permission_denied", "tool_name": name, "tool_use_id": tool_id, **reason,
              "message": message, "uuid": str(uuid.uuid4()), "session_id": self.id})
        self.denials.append({"tool_name": name, "tool_use_id": tool_id, "tool_input": tool_input})
        return message

    def assistant(self, content: list[dict]) -> None:
        self.turns += 1
        emit({
            "type": "assistant",
            "message": {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "model": MODEL,
                        "content": content, "stop_reason": None, "stop_sequence": None,
                        "usage": {"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 0,
                                  "cache_creation_input_tokens": 0}},
            "parent_tool_use_id": None, "session_id": self.id,
        })

    def tool(self, name: str, tool_input: dict, run) -> None:
        self.tool_n += 1
        tool_id = f"toolu_{self.tool_n:02d}_{uuid.uuid4().hex[:6]}"
        self.assistant([{"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}])
        refused = self.refusal(name, tool_input, tool_id)
        if refused is not None:
            output, is_error = refused, True
        else:
            try:
                output, is_error = run(), False
            except Exception as exc:  # noqa: BLE001 - reported as a tool error, like the real CLI
                output, is_error = str(exc), True
        emit({"type": "user", "message": {"role": "user", "content": [
            {"tool_use_id": tool_id, "type": "tool_result", "content": output, "is_error": is_error}]},
            "parent_tool_use_id": None, "session_id": self.id})

    def text(self, text: str) -> None:
        self.assistant([{"type": "text", "text": text}])

    def mcp_tool(self, server: str, tool: str, arguments: dict) -> None:
        """A call to an MCP server's tool, named `mcp__<server>__<tool>`; its result keeps the
        server's content blocks. Without --dangerously-skip-permissions, -p runs it only when
        --allowedTools names the tool or its whole server (nobody is there to approve it)."""
        name = f"mcp__{server}__{tool}"
        self.tool_n += 1
        tool_id = f"toolu_{self.tool_n:02d}_{uuid.uuid4().hex[:6]}"
        self.assistant([{"type": "tool_use", "id": tool_id, "name": name, "input": arguments}])
        content: str | list
        if not self.mcp.has(server, tool) or name in self.disallowed:
            content, is_error = f"<tool_use_error>Error: No such tool available: {name}</tool_use_error>", True
        elif self.plan or not (self.skip or name in self.allowed or f"mcp__{server}" in self.allowed):
            content, is_error = f"Claude requested permissions to use {name}, but you haven't granted it yet.", True
            emit({"type": "system", "subtype": "permission_denied", "tool_name": name, "tool_use_id": tool_id,
                  "decision_reason_type": "mode", "message": content, "uuid": str(uuid.uuid4()),
                  "session_id": self.id})
            self.denials.append({"tool_name": name, "tool_use_id": tool_id, "tool_input": arguments})
        else:
            outcome = self.mcp.call(server, tool, arguments)
            content, is_error = outcome.content, outcome.is_error
        emit({"type": "user", "message": {"role": "user", "content": [
            {"tool_use_id": tool_id, "type": "tool_result", "content": content, "is_error": is_error}]},
            "parent_tool_use_id": None, "session_id": self.id})


def main() -> None:
    opts = parse_args(sys.argv[1:])
    if not opts["print"]:
        fail_usage("this fake only supports -p")
    if opts["format"] == "stream-json" and not opts["verbose"]:
        fail_usage("When using --print, --output-format=stream-json requires --verbose")
    if opts["skip"] and os.geteuid() == 0 and os.environ.get("IS_SANDBOX") != "1":
        fail_usage("--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons")
    prompt = opts["prompt"] if opts["prompt"] is not None else sys.stdin.read()
    if log := os.environ.get("FAKE_CLAUDE_LOG"):
        with open(log, "a") as handle:
            handle.write(json.dumps({
                "argv": sys.argv[1:], "cwd": os.getcwd(), "prompt": prompt, "pid": os.getpid(),
                "env": {k: os.environ.get(k) for k in ("TASK_PORT", "TASK_ID", "IS_SANDBOX", "BATON_TOKEN",
                                                       "GITHUB_TOKEN", "SECRET_FOR_TEST")},
                "mcp_servers": {name: vars(spec) for name, spec in opts["mcp"].items()},
            }) + "\n")

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    if opts["resume"]:
        state_path = STATE_DIR / f"{opts['resume']}.json"
        if not state_path.exists():
            fail_usage(f"No conversation found with session ID: {opts['resume']}")
        state = json.loads(state_path.read_text())
        session_id = opts["resume"]
        resumes = state.get("resumes", 0)
        plans = state["scenario"].get("on_resume", [])
        scenario = plans[resumes] if resumes < len(plans) else {"steps": [], "result": "success"}
        state["resumes"] = resumes + 1
    else:
        match = re.search(r"^FAKE: (.*)$", prompt, re.MULTILINE)
        scenario = json.loads(match.group(1)) if match else {"steps": []}
        session_id = str(uuid.uuid4())
        state = {"scenario": scenario, "resumes": 0}
    (STATE_DIR / f"{session_id}.json").write_text(json.dumps(state))

    started = time.monotonic()
    session = Session(session_id, os.getcwd(), opts)
    session.mcp.start()  # like Claude Code: the servers start (and list their tools) before the turn
    atexit.register(session.mcp.close)
    mcp_tools = [f"mcp__{server}__{tool}" for server, tools in session.mcp.tools.items() for tool in tools]
    emit({"type": "system", "subtype": "init", "cwd": os.getcwd(), "session_id": session_id,
          "tools": [t for t in ("Bash", "Edit", "Read", "Write", *mcp_tools) if t not in session.disallowed],
          "mcp_servers": [{"name": name, "status": session.mcp.status(name), "source": "dynamic"}
                          for name in session.mcp.servers],
          "model": MODEL, "permissionMode": opts["mode"] or ("bypassPermissions" if opts["skip"] else "default"),
          "claude_code_version": "2.1.329-fake", "uuid": str(uuid.uuid4())})
    if scenario.get("garbage"):
        sys.stdout.write("this line is not JSON\n")
        emit({"type": "mystery", "session_id": session_id})
    for step in scenario.get("steps", []):
        do_step(session, step, prompt)
    if scenario.get("no_result"):
        sys.stderr.write("fake_claude: crashed without a result\n")
        sys.exit(scenario.get("exit", 3))
    outcome = scenario.get("result", "success")
    if "fail_once" in scenario:
        flag = Path(scenario["fail_once"])
        outcome = "success" if flag.exists() else "error_during_execution"
        flag.touch()
    usage = {"input_tokens": 1200, "output_tokens": 50, "cache_read_input_tokens": 300,
             "cache_creation_input_tokens": 20}
    common = {"type": "result", "duration_ms": int((time.monotonic() - started) * 1000),
              "duration_api_ms": 5, "num_turns": max(1, session.turns), "session_id": session_id,
              "total_cost_usd": 0.0125, "usage": usage,
              "modelUsage": {MODEL: {"inputTokens": 1200, "outputTokens": 50, "costUSD": 0.0125}},
              "permission_denials": session.denials, "uuid": str(uuid.uuid4())}
    if outcome == "success":
        answer = scenario.get("model_text", "Done.")
        session.text(answer)
        emit({**common, "subtype": "success", "is_error": False, "result": answer})
        sys.exit(scenario.get("exit", 0))
    emit({**common, "subtype": outcome, "is_error": True, "errors": [scenario.get("error", "the fake failed")]})
    sys.exit(scenario.get("exit", 1))


if __name__ == "__main__":
    main()
