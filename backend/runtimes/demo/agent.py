"""The demo runtime's agent: a scripted stand-in for a coding agent. No model, no key.

Run as `python -P -m backend.runtimes.demo.agent [--pace SECONDS] [--state-dir DIR] [--resume ID] [--read-only]`
with the prompt on standard input, in the task's worktree. It prints Claude Code's stream-json
(system init, assistant text and tool calls, tool results, one result line) and follows the
task's script, a line of the task content:

    DEMO: {"steps": [...], "fix": [...]}

Steps: {"say": "text"}, {"write": "path", "text": "..."}, {"append": "path", "text": "..."},
{"test": true} (runs `python -m unittest -q`), {"commit": "message"} (true: the message the
prompt suggests). A feedback turn (--resume) runs the script's `fix` steps once. A planning turn
(--read-only) runs no step: it answers with a plan that lists them, and writes nothing. A task without
a script gets a generic edit: a line naming it appended to NOTES.md, committed. Costs and tokens
are always 0. Paths must stay inside the worktree.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

MODEL = "demo-script"
INTRO = "Demo runtime: a scripted agent, no model, no key. I follow the task's DEMO script."
_ZERO_USAGE = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


class ScriptError(Exception):
    """The script cannot be followed; the turn ends with an error result saying why."""


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Session:
    def __init__(self, session_id: str, pace: float, prompt: str) -> None:
        self.id = session_id
        self.pace = pace
        self.prompt = prompt
        self.cwd = Path.cwd().resolve()
        self.turns = 0
        self.tools = 0

    def assistant(self, content: list[dict]) -> None:
        self.turns += 1
        emit({"type": "assistant", "message": {
            "id": f"msg_demo_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": None, "stop_sequence": None, "usage": _ZERO_USAGE},
            "parent_tool_use_id": None, "session_id": self.id})

    def say(self, text: str) -> None:
        self.assistant([{"type": "text", "text": text}])

    def tool(self, name: str, tool_input: dict, run) -> bool:
        self.tools += 1
        tool_id = f"toolu_demo_{self.tools:02d}_{uuid.uuid4().hex[:6]}"
        self.assistant([{"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}])
        try:
            output, ok = run()
        except (OSError, subprocess.SubprocessError) as exc:
            output, ok = str(exc), False
        emit({"type": "user", "message": {"role": "user", "content": [
            {"tool_use_id": tool_id, "type": "tool_result", "content": output, "is_error": not ok}]},
            "parent_tool_use_id": None, "session_id": self.id})
        return ok

    def path(self, name: object) -> Path:
        if not isinstance(name, str) or not name:
            raise ScriptError(f"a file step needs a relative path, got {name!r}")
        path = (self.cwd / name).resolve()
        if path == self.cwd or self.cwd not in path.parents or ".git" in path.relative_to(self.cwd).parts:
            raise ScriptError(f"{name!r} is outside the worktree (or in .git); the demo agent only edits inside it")
        return path

    def step(self, step: object) -> None:
        if not isinstance(step, dict):
            raise ScriptError(f"a step must be an object, got {step!r}")
        time.sleep(self.pace)  # so a person can watch the board and the transcript move
        if "say" in step:
            self.say(str(step["say"]))
        elif "write" in step or "append" in step:
            self._write(step)
        elif "test" in step:
            command = [sys.executable, "-m", "unittest", "-q"]
            self.tool("Bash", {"command": "python -m unittest -q", "description": "Run the tests"},
                      lambda: _run(command, self.cwd))
        elif "commit" in step:
            message = step["commit"] if isinstance(step["commit"], str) and step["commit"] else self.suggested_message()
            self.tool("Bash", {"command": f"git add -A && git commit -m {json.dumps(message)}",
                               "description": "Commit the work"}, lambda: _commit(message, self.cwd))
        else:
            raise ScriptError(f"unknown step {json.dumps(step)[:200]} (known: say, write, append, test, commit)")

    def _write(self, step: dict) -> None:
        append = "append" in step
        path = self.path(step["append"] if append else step["write"])
        text = step.get("text")
        if not isinstance(text, str):
            raise ScriptError(f"{'append' if append else 'write'} {path.name}: `text` must be a string")

        def run() -> tuple[str, bool]:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a" if append else "w", encoding="utf-8") as handle:
                handle.write(text)
            return f"{'Appended to' if append else 'Wrote'} {path.relative_to(self.cwd)}", True

        self.tool("Edit" if append else "Write", {"file_path": str(path), "content": text}, run)

    def suggested_message(self) -> str:
        match = re.search(r"with a message like `([^`\n]+)`", self.prompt)
        return match.group(1) if match else "demo: scripted change"


def _run(argv: list[str], cwd: Path) -> tuple[str, bool]:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return (proc.stdout + proc.stderr)[-4000:], proc.returncode == 0


def _commit(message: str, cwd: Path) -> tuple[str, bool]:
    identity: list[str] = []
    # A fresh machine may have no git identity: commit as the demo agent rather than fail.
    if subprocess.run(["git", "config", "user.email"], cwd=cwd, capture_output=True).returncode != 0:
        identity = ["-c", "user.name=Baton demo agent", "-c", "user.email=demo-agent@baton.invalid"]
    added, ok = _run(["git", "add", "-A"], cwd)
    if not ok:
        return added, False
    output, ok = _run(["git", *identity, "commit", "-q", "-m", message], cwd)
    if not ok:
        return output, False
    return _run(["git", "log", "-1", "--format=committed %h %s"], cwd)


def task_title(prompt: str) -> str:
    match = re.search(r"^# Task (\S+): (.+)$", prompt, re.MULTILINE)
    return f"{match.group(1)}: {match.group(2).strip()}" if match else "a task without a title"


def read_script(prompt: str) -> dict:
    """The task's DEMO script, or the generic edit for a task a person typed without one."""
    match = re.search(r"^DEMO: (.*)$", prompt, re.MULTILINE)
    if match is None:
        return {"steps": [
            {"say": "This task has no DEMO script, so I make the generic demo edit: a line in NOTES.md."},
            {"append": "NOTES.md", "text": f"- {task_title(prompt)}\n"},
            {"commit": True}]}
    try:
        script = json.loads(match.group(1))
    except ValueError as exc:
        raise ScriptError(f"the DEMO line is not valid JSON: {exc}") from None
    if not isinstance(script, dict) or not isinstance(script.get("steps", []), list) \
            or not isinstance(script.get("fix", []), list):
        raise ScriptError('the DEMO line must be {"steps": [...], "fix": [...]}')
    return script


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="baton-demo-agent", description="Baton's scripted demo agent.")
    parser.add_argument("--pace", type=float, default=1.0, help="seconds between steps")
    parser.add_argument("--state-dir", type=Path, default=None, help="where sessions are kept for --resume")
    parser.add_argument("--resume", default=None, help="continue this session (a feedback turn)")
    parser.add_argument("--read-only", action="store_true", help="a planning turn: describe the steps, run none")
    args = parser.parse_args(argv)
    if not 0 <= args.pace <= 60:
        parser.error("--pace must be between 0 and 60 seconds")
    return args


def describe(step: object) -> str:
    """One step of the script in words, for a planning turn's plan."""
    if isinstance(step, dict):
        if "say" in step:
            return f"say: {str(step['say'])[:200]}"
        for key, what in (("write", "write"), ("append", "append to")):
            if key in step:
                return f"{what} {step[key]}"
        if "test" in step:
            return "run the tests (python -m unittest)"
        if "commit" in step:
            return "commit the work"
    return f"an unknown step: {json.dumps(step)[:200]}"


def plan_text(script: dict) -> str:
    steps = script.get("steps", [])
    lines = [f"{n}. {describe(step)}" for n, step in enumerate(steps, 1)] or ["1. nothing: the script has no steps"]
    return "Plan (scripted demo, read-only: nothing was changed):\n" + "\n".join(lines)


def _plan(args: argparse.Namespace, prompt: str) -> tuple[str, list, str]:
    """(session id, steps to run, opening text)."""
    if args.resume is None or args.read_only:
        saved = args.state_dir / f"{args.resume}.json" if args.resume and args.state_dir else None
        # A revised plan (read-only, resumed): the session's own script; the prompt is the request.
        script = (json.loads(saved.read_text(encoding="utf-8"))["script"] if saved is not None and saved.is_file()
                  else read_script(prompt))
        session_id = args.resume or str(uuid.uuid4())
        state = {"script": script, "resumes": 0}
        steps, opening = script.get("steps", []), INTRO
        if args.read_only:  # a plan of the steps instead of the steps
            steps, opening = [], f"{INTRO} This turn is read-only: I only plan.\n\n{plan_text(script)}"
    else:
        session_id = args.resume
        saved = args.state_dir / f"{session_id}.json" if args.state_dir else None
        if saved is None or not saved.is_file():
            return session_id, [], (f"{INTRO} Session {session_id} has no saved script here, "
                                    "so there is nothing scripted to fix.")
        state = json.loads(saved.read_text(encoding="utf-8"))
        fix = state["script"].get("fix", []) if state["resumes"] == 0 else []
        state["resumes"] += 1
        steps = fix
        opening = (f"{INTRO} Feedback received; following the script's fix steps." if fix
                   else f"{INTRO} Feedback received, but my script has nothing (more) to fix.")
    if args.state_dir is not None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        (args.state_dir / f"{session_id}.json").write_text(json.dumps(state), encoding="utf-8")
    return session_id, steps, opening


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    prompt = sys.stdin.read()
    started = time.monotonic()
    try:
        session_id, steps, opening = _plan(args, prompt)
        error = None
    except ScriptError as exc:
        session_id, steps, opening, error = str(uuid.uuid4()), [], INTRO, str(exc)
    session = Session(session_id, args.pace, prompt)
    emit({"type": "system", "subtype": "init", "cwd": str(session.cwd), "session_id": session_id,
          "tools": ["Bash", "Edit", "Write"], "mcp_servers": [], "model": MODEL,
          "permissionMode": "plan" if args.read_only else "default",
          "claude_code_version": "demo", "uuid": str(uuid.uuid4())})
    session.say(opening)
    if error is None:
        try:
            for step in steps:
                session.step(step)
        except ScriptError as exc:
            error = str(exc)
    common = {"type": "result", "duration_ms": int((time.monotonic() - started) * 1000), "duration_api_ms": 0,
              "num_turns": max(1, session.turns), "session_id": session_id, "total_cost_usd": 0,
              "usage": _ZERO_USAGE, "modelUsage": {}, "permission_denials": [], "uuid": str(uuid.uuid4())}
    if error is not None:
        emit({**common, "subtype": "error_during_execution", "is_error": True, "errors": [error]})
        return 1
    if args.read_only:  # the plan is the final answer
        plan = opening.split("\n\n", 1)[-1]
        emit({**common, "subtype": "success", "is_error": False, "result": plan})
        return 0
    session.say("Done.")
    emit({**common, "subtype": "success", "is_error": False, "result": "Done (scripted demo run)."})
    return 0


if __name__ == "__main__":
    sys.exit(main())
