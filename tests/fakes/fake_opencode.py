"""A stand-in for the OpenCode CLI (`opencode-ai` 1.18.33) that speaks `opencode run --format json`.

Invoked as `opencode run --format json [--dir DIR] [-m provider/model] [--agent A] [-s SESSION]
[-f FILE...]... [MESSAGE...]`; `-f`/`--file` is an array option as in yargs (the words after it up
to the next flag), each file resolved against --dir and refused ("File not found: X", exit 1)
when missing, as 1.18.33 does; the files are logged as `files`. Like the real CLI, the message is the words of the positional arguments (each
one holding a space wrapped in double quotes), joined to what standard input holds when it is
not a terminal (positional first, then a newline, then stdin). Output: one JSON line per event,
`{type, timestamp, sessionID, part|error}`: `step_start`, `tool_use` (when the tool has ended:
part.tool, part.callID, part.state.{status, input, output|error, metadata}), `text`,
`step_finish` (part.reason "tool-calls"|"stop", part.tokens, part.cost), `error`
(error.name, error.data.{message, statusCode}; exit 1). No final line: the process just ends.

Like the real CLI's traps, it fails loudly when OPENCODE_CONFIG is missing or points inside
its working folder (`git add -A` would commit it) and when $PWD is not its working folder (the
real tools run in $PWD).

What it does comes from the `FAKE: {...}` line of the prompt, as for tests/fakes/fake_claude.py
(see its docstring: steps from tests/fakes/steps.py, mapped onto OpenCode's tools bash, write
and read; "result", "error", "exit", "no_result", "garbage", "fail_once", "on_resume" for
`-s SESSION`), plus:
    "silent_retry": true     after the steps: print nothing, ignore SIGTERM and sleep (a failing
                             provider that OpenCode retries silently)
    "model_text": "..."      the final assistant text (default "Done.")
    {"mcp": TOOL, "arguments": {...}, "server": "baton_tracker"}  (a step) a tool of a local MCP
                             server from the config's `mcp`, reported as a tool_use part named
                             <server>_<tool> (started with the session, as OpenCode does)
Permissions as 1.18.33 applies them (checked against the real CLI): rules come from the config
file, then the working folder's opencode.json (unless OPENCODE_DISABLE_PROJECT_CONFIG), then
OPENCODE_PERMISSION merged over the global ones, then the agent's own (`agent.<name>.permission`,
the --agent or "build"), in that order; the last rule that matches wins. `edit` covers the
write and edit tools. A tool whose last matching rule denies it outright (pattern "*") is not
offered: a call to it comes back as the `invalid` tool ("Model tried to call unavailable tool");
a call a rule denies or would ask about is rejected (as `run` rejects what it would ask); with
no rule, everything is allowed.
Sessions live in $XDG_DATA_HOME/opencode (as the real CLI's do) if set, else in
$FAKE_CLI_STATE (or $FAKE_CLAUDE_STATE). Every invocation is appended to $FAKE_CLI_LOG (or
$FAKE_CLAUDE_LOG).
"""

from __future__ import annotations

import atexit
import fnmatch
import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mcp_clients import McpClients, Spec  # noqa: E402
from steps import do_step  # noqa: E402 - the fakes share their scenario steps

TOOL_NAMES = {"Bash": "bash", "Write": "write", "Edit": "edit", "Read": "read"}
TOOLS = ("bash", "edit", "glob", "grep", "read", "skill", "task", "todowrite", "webfetch", "write")
INPUT_NAMES = {"file_path": "filePath", "old_string": "oldString", "new_string": "newString"}
LOGGED_ENV = ("TASK_PORT", "TASK_ID", "BATON_TOKEN", "GITHUB_TOKEN", "SECRET_FOR_TEST", "PWD", "OPENCODE_CONFIG",
              "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "OPENCODE_DISABLE_AUTOUPDATE",
              "OPENCODE_DISABLE_MODELS_FETCH", "OPENCODE_DISABLE_LSP_DOWNLOAD", "PROVIDER_KEY")
STEP_TOKENS = {"input": 1000, "output": 20, "reasoning": 5, "cache": {"read": 100, "write": 10}}
STEP_COST = 0.001


def now_ms() -> int:
    return int(time.time() * 1000)


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"Error: {message}\n")
    sys.exit(code)


def parse_args(argv: list[str]) -> dict:
    if not argv or argv[0] != "run":
        fail("this fake only supports `opencode run`")
    opts = {"format": "default", "dir": None, "model": None, "agent": None, "session": None, "message": [],
            "files": []}
    takes = {"--format": "format", "--dir": "dir", "-m": "model", "--model": "model", "--agent": "agent",
             "-s": "session", "--session": "session"}
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in takes:
            if i + 1 >= len(argv):
                fail(f"Not enough arguments following: {arg}")
            opts[takes[arg]] = argv[i + 1]
            i += 2
            continue
        if arg in ("-f", "--file"):
            # An array option (yargs): every following word up to the next flag is a file.
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                fail(f"Not enough arguments following: {arg[2:] if arg.startswith('--') else arg[1:]}")
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                opts["files"].append(argv[i])
        elif arg in ("--print-logs", "--thinking", "--auto"):
            pass
        elif arg.startswith("-"):
            fail(f"Unknown argument: {arg}")
        else:
            opts["message"].append(arg)
        i += 1
    if opts["format"] not in ("default", "json"):
        fail(f"Invalid values: Argument: format, Given: {opts['format']!r}, Choices: \"default\", \"json\"")
    return opts


def read_message(words: list[str]) -> str:
    # Exactly as 1.18.33's run.ts: a word holding a space is wrapped in literal double quotes.
    positional = " ".join(f'"{w.replace(chr(34), chr(92) + chr(34))}"' if " " in w else w for w in words)
    piped = None if sys.stdin.isatty() else sys.stdin.read()
    if not positional:
        return piped or ""
    if not piped:
        return positional
    return positional + "\n" + piped


def check_traps(cwd: Path) -> dict:
    """The real CLI's traps, made loud: returns the config the file holds."""
    pwd = os.environ.get("PWD")
    if not pwd or Path(pwd).resolve() != cwd:
        fail(f"fake opencode: $PWD is {pwd!r} but the working folder is {cwd}: the real CLI's tools would run "
             f"in {pwd!r}", 2)
    config = os.environ.get("OPENCODE_CONFIG")
    if not config:
        fail("fake opencode: OPENCODE_CONFIG is not set", 2)
    path = Path(config).resolve()
    if path == cwd or cwd in path.parents:
        fail(f"fake opencode: OPENCODE_CONFIG {path} is inside the working folder {cwd}", 2)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"fake opencode: cannot read OPENCODE_CONFIG {path}: {exc}", 2)
    return {}


def merge_deep(base: dict, over: dict) -> dict:
    """OpenCode's merge of config sources: a key already there keeps its place."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge_deep(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def as_rules(permission) -> list[tuple[str, str, str]]:
    """A permission config as OpenCode's ordered rules (permission, pattern, action)."""
    if isinstance(permission, str):
        return [("*", "*", permission)]
    rules = []
    for name, value in (permission or {}).items():
        if isinstance(value, str):
            rules.append((name, "*", value))
        else:
            rules += [(name, pattern, action) for pattern, action in value.items()]
    return rules


def ruleset(config: dict, cwd: Path, agent: str) -> list[tuple[str, str, str]]:
    project = cwd / "opencode.json"
    if project.is_file() and not os.environ.get("OPENCODE_DISABLE_PROJECT_CONFIG"):
        config = merge_deep(config, json.loads(project.read_text()))
    permission = config.get("permission", {})
    if os.environ.get("OPENCODE_PERMISSION"):
        extra = json.loads(os.environ["OPENCODE_PERMISSION"])
        permission = merge_deep(permission if isinstance(permission, dict) else {"*": permission}, extra)
    own = ((config.get("agent") or {}).get(agent) or {}).get("permission", {})
    return as_rules(permission) + as_rules(own)


def permission_name(tool: str) -> str:
    return "edit" if tool in ("write", "edit", "patch", "apply_patch") else tool


def disabled(rules: list, tool: str) -> bool:
    """Denied outright: not even offered to the model."""
    last = [r for r in rules if fnmatch.fnmatchcase(permission_name(tool), r[0])]
    return bool(last) and last[-1][1] == "*" and last[-1][2] == "deny"


def action_for(rules: list, tool: str, subject: str) -> str:
    matching = [r for r in rules if fnmatch.fnmatchcase(permission_name(tool), r[0])
                and fnmatch.fnmatchcase(subject, r[1])]
    return matching[-1][2] if matching else "allow"


def mcp_servers(config: dict, cwd: Path) -> dict[str, Spec]:
    """The config's enabled local MCP servers (`"mcp": {NAME: {"type": "local", "command": [...],
    "environment": {...}, "enabled": true, "timeout": ms}}`), the working folder's opencode.json
    merged over the file's as for every key."""
    project = cwd / "opencode.json"
    if project.is_file() and not os.environ.get("OPENCODE_DISABLE_PROJECT_CONFIG"):
        config = merge_deep(config, json.loads(project.read_text()))
    out = {}
    for name, server in (config.get("mcp") or {}).items():
        if not isinstance(server, dict) or server.get("enabled") is False:
            continue
        command, env = server.get("command"), server.get("environment", {})
        if server.get("type") != "local" or not isinstance(command, list) or not command \
                or not all(isinstance(c, str) for c in command) or not isinstance(env, dict) \
                or not isinstance(server.get("timeout", 1), int):
            fail(f"Configuration is invalid at {os.environ.get('OPENCODE_CONFIG')}\n↳ Invalid input mcp.{name}")
        out[name] = Spec(command[0], command[1:], {k: str(v) for k, v in env.items()})
    return out


def mcp_tool_name(server: str, tool: str) -> str:
    """As OpenCode names an MCP server's tool: both parts sanitised, joined with an underscore."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", server) + "_" + re.sub(r"[^a-zA-Z0-9_-]", "_", tool)


class Session:
    def __init__(self, session_id: str, cwd: str, config: dict, agent: str = "build") -> None:
        self.id = session_id
        self.cwd = cwd
        self.config = config
        self.rules = ruleset(config, Path(cwd), agent)
        self.mcp = McpClients(mcp_servers(config, Path(cwd)))
        self.message_id = ""
        self.steps = 0

    def emit(self, kind: str, **fields) -> None:
        sys.stdout.write(json.dumps({"type": kind, "timestamp": now_ms(), "sessionID": self.id, **fields}) + "\n")
        sys.stdout.flush()

    def _part(self, kind: str, **fields) -> dict:
        return {"id": f"prt_{uuid.uuid4().hex[:24]}", "sessionID": self.id, "messageID": self.message_id,
                "type": kind, **fields}

    def step_start(self) -> None:
        self.message_id = f"msg_{uuid.uuid4().hex[:24]}"
        self.emit("step_start", part=self._part("step-start", snapshot=uuid.uuid4().hex))

    def step_finish(self, reason: str) -> None:
        self.steps += 1
        self.emit("step_finish", part=self._part("step-finish", reason=reason, snapshot=uuid.uuid4().hex,
                                                 cost=STEP_COST, tokens=STEP_TOKENS))

    def tool(self, name: str, tool_input: dict, run) -> None:
        tool = TOOL_NAMES[name]
        tool_input = {INPUT_NAMES.get(k, k): v for k, v in tool_input.items()}
        if tool == "bash":
            tool_input = {**tool_input, "description": "Runs a command"}
        self.step_start()
        started = now_ms()
        state: dict
        subject = str(tool_input.get("command") or tool_input.get("filePath") or "*")
        if disabled(self.rules, tool):
            offered = ", ".join(sorted([t for t in TOOLS if not disabled(self.rules, t)] + ["invalid"]))
            error = f"Model tried to call unavailable tool '{tool}'. Available tools: {offered}."
            tool, tool_input = "invalid", {"tool": tool, "error": error}
            state = {"status": "completed", "input": tool_input,
                     "output": f"The arguments provided to the tool are invalid: {error}",
                     "metadata": {"truncated": False}, "title": "Invalid Tool"}
        elif action_for(self.rules, tool, subject) in ("deny", "ask"):
            state = {"status": "error", "input": tool_input,
                     "error": "The user rejected permission to use this specific tool call."}
        else:
            try:
                output = run()
                metadata = {"output": output, "exit": 0, "description": "Runs a command"} if tool == "bash" else {}
                state = {"status": "completed", "input": tool_input, "output": output, "title": tool,
                         "metadata": metadata}
            except Exception as exc:  # noqa: BLE001 - like the real CLI: a failed command still completes
                if tool == "bash":
                    state = {"status": "completed", "input": tool_input, "output": str(exc), "title": tool,
                             "metadata": {"output": str(exc), "exit": 1, "description": "Runs a command"}}
                else:
                    state = {"status": "error", "input": tool_input, "error": str(exc)}
        state["time"] = {"start": started, "end": now_ms()}
        self.emit("tool_use", part=self._part("tool", callID=f"call_{uuid.uuid4().hex[:20]}", tool=tool,
                                              state=state))
        self.step_finish("tool-calls")

    def mcp_tool(self, server: str, tool: str, arguments: dict) -> None:
        """A tool of an MCP server: a `tool_use` part named <server>_<tool> under the same
        permission rules as the built-in tools (subject "*")."""
        name = mcp_tool_name(server, tool)
        self.step_start()
        started = now_ms()
        if not self.mcp.has(server, tool) or disabled(self.rules, name):
            error = f"Model tried to call unavailable tool '{name}'."
            name, state = "invalid", {"status": "completed", "input": {"tool": name, "error": error},
                                      "output": f"The arguments provided to the tool are invalid: {error}",
                                      "metadata": {"truncated": False}, "title": "Invalid Tool"}
        elif action_for(self.rules, name, "*") in ("deny", "ask"):
            state = {"status": "error", "input": arguments,
                     "error": "The user rejected permission to use this specific tool call."}
        else:
            outcome = self.mcp.call(server, tool, arguments)
            state = ({"status": "error", "input": arguments, "error": outcome.text} if outcome.is_error else
                     {"status": "completed", "input": arguments, "output": outcome.text, "title": "",
                      "metadata": {"truncated": False}})
        state["time"] = {"start": started, "end": now_ms()}
        self.emit("tool_use", part=self._part("tool", callID=f"call_{uuid.uuid4().hex[:20]}", tool=name,
                                              state=state))
        self.step_finish("tool-calls")

    def text(self, text: str) -> None:
        self.emit("text", part=self._part("text", text=text, time={"start": now_ms(), "end": now_ms()}))


def state_dir() -> Path:
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]) / "opencode" / "fake-sessions"
    return Path(os.environ.get("FAKE_CLI_STATE") or os.environ.get("FAKE_CLAUDE_STATE")
                or Path.home() / ".fake-opencode")


def main() -> None:
    opts = parse_args(sys.argv[1:])
    if opts["dir"]:
        try:
            os.chdir(opts["dir"])
        except OSError:
            fail(f"Failed to change directory to {opts['dir']}")
    cwd = Path(os.getcwd()).resolve()
    for name in opts["files"]:  # as 1.18.33: resolved against --dir, each must exist
        if not (cwd / name).exists():
            fail(f"File not found: {name}")
    prompt = read_message(opts["message"])
    if log := (os.environ.get("FAKE_CLI_LOG") or os.environ.get("FAKE_CLAUDE_LOG")):
        config_text = None
        if os.environ.get("OPENCODE_CONFIG") and Path(os.environ["OPENCODE_CONFIG"]).is_file():
            config_text = Path(os.environ["OPENCODE_CONFIG"]).read_text()
        with open(log, "a") as handle:
            handle.write(json.dumps({
                "argv": sys.argv[1:], "cwd": str(cwd), "prompt": prompt, "pid": os.getpid(),
                "env": {k: os.environ.get(k) for k in LOGGED_ENV}, "config": config_text, "files": opts["files"],
                "mcp_servers": {name: vars(spec) for name, spec in
                                mcp_servers(json.loads(config_text) if config_text else {}, cwd).items()},
            }) + "\n")
    config = check_traps(cwd)
    if not prompt.strip():
        fail("You must provide a message or a command")

    states = state_dir()
    states.mkdir(parents=True, exist_ok=True)
    if opts["session"]:
        state_path = states / f"{opts['session']}.json"
        if not state_path.exists():
            fail("Session not found")
        state = json.loads(state_path.read_text())
        session_id = opts["session"]
        resumes = state.get("resumes", 0)
        plans = state["scenario"].get("on_resume", [])
        scenario = plans[resumes] if resumes < len(plans) else {"steps": [], "result": "success"}
        state["resumes"] = resumes + 1
    else:
        match = re.search(r"^FAKE: (.*)$", prompt, re.MULTILINE)
        scenario = json.loads(match.group(1)) if match else {"steps": []}
        session_id = f"ses_{uuid.uuid4().hex[:26]}"
        state = {"scenario": scenario, "resumes": 0}
    (states / f"{session_id}.json").write_text(json.dumps(state))

    session = Session(session_id, str(cwd), config, opts["agent"] or "build")
    session.mcp.start()  # like OpenCode: the configured servers start before the first step
    atexit.register(session.mcp.close)
    if scenario.get("garbage"):
        sys.stdout.write("this line is not JSON\n")
        session.emit("mystery", part={})
    for step in scenario.get("steps", []):
        do_step(session, step, prompt)
    if scenario.get("silent_retry"):
        # A provider answering 500: OpenCode retries with backoff, prints nothing, and does not
        # stop on SIGTERM while the request is pending.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(scenario.get("seconds", 600))
    if scenario.get("no_result"):
        sys.stderr.write("fake opencode: crashed without finishing its step\n")
        sys.exit(scenario.get("exit", 3))
    outcome = scenario.get("result", "success")
    if "fail_once" in scenario:
        flag = Path(scenario["fail_once"])
        outcome = "success" if flag.exists() else "error"
        flag.touch()
    if outcome == "success":
        session.step_start()
        session.text(scenario.get("model_text", "Done."))
        session.step_finish("stop")
        sys.exit(scenario.get("exit", 0))
    session.emit("error", error={"name": "APIError", "data": {
        "message": scenario.get("error", "the fake failed"), "statusCode": scenario.get("status", 400),
        "isRetryable": False}})
    sys.exit(scenario.get("exit", 1))


if __name__ == "__main__":
    main()
