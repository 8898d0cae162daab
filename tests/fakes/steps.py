"""Scenario steps shared by the fake CLIs (fake_claude.py, fake_codex.py, fake_opencode.py).

A fake reports each step through a `session` object with two methods, in its own protocol:
`tool(name, input, run)` (announce a tool call, call `run()`, report its output or the
exception as a tool error), `text(text)` (an assistant message) and `mcp_tool(server, tool,
arguments)` (a call to a tool of an MCP server the CLI was given, through mcp_clients.py, in the
CLI's own shape for MCP calls). Tool names are Claude Code's (Bash, Write, Read); a fake maps
them onto its CLI's own tools.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path


# Commands a read-only permission system lets run (Claude Code's plan mode, Codex's read-only
# sandbox), as far as a fake can tell: a reading command, nothing redirected. Anything else is
# refused the way the fake's CLI refuses it.
_READING = ("ls", "cat", "head", "tail", "grep", "rg", "find", "wc", "pwd", "git status", "git log", "git diff",
            "git show")


def reads_only(command: str) -> bool:
    words = command.split()
    return bool(words) and ">" not in command and any(
        words[:len(r.split())] == r.split() for r in _READING)


def sh(argv: list[str], check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout + proc.stderr


def do_step(session, step: dict, prompt: str) -> None:
    if "write" in step or "append" in step:
        path = Path(step.get("write") or step["append"])
        def run():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a" if "append" in step else "w") as handle:
                handle.write(step["text"])
            return f"File written: {path}"
        session.tool("Write", {"file_path": str(Path(session.cwd) / path), "content": step["text"]}, run)
    elif "edit" in step:  # replace `old` by `new` in an existing file (the Edit tool)
        path = Path(step["edit"])
        def run():
            text = path.read_text()
            if step["old"] not in text:
                raise RuntimeError(f"String to replace not found in file: {step['old']}")
            path.write_text(text.replace(step["old"], step["new"], 1))
            return f"The file {path} has been updated."
        session.tool("Edit", {"file_path": str(Path(session.cwd) / path), "old_string": step["old"],
                              "new_string": step["new"]}, run)
    elif "read" in step:
        def run():
            source = Path(step["read"])
            text = source.read_text() if source.exists() else "<missing>"
            Path(step["into"]).write_text(text)
            return text
        session.tool("Read", {"file_path": str(Path(session.cwd) / step["read"])}, run)
    elif "commit" in step:
        session.tool("Bash", {"command": f"git add -A && git commit -m {step['commit']!r}"},
                     lambda: sh(["git", "add", "-A"]) + sh(["git", "commit", "-q", "-m", step["commit"]]))
    elif "git" in step:
        session.tool("Bash", {"command": "git " + " ".join(step["git"])}, lambda: sh(["git", *step["git"]]))
    elif "run" in step:
        session.tool("Bash", {"command": " ".join(step["run"])}, lambda: sh(step["run"], check=False))
    elif "big_output" in step:  # one tool result of that many bytes: a single very long line
        size = int(step["big_output"])
        session.tool("Bash", {"command": f"head -c {size} /dev/zero | tr '\\0' x"}, lambda: "x" * size)
    elif "mcp" in step:  # a tool of an MCP server the CLI was given (default: Baton's tracker tools)
        session.mcp_tool(step.get("server", "baton_tracker"), step["mcp"], step.get("arguments") or {})
    elif "sleep" in step:
        time.sleep(step["sleep"])
    elif "tick" in step:
        for i in range(step["tick"]):
            session.text(f"still working ({i + 1})")
            time.sleep(step.get("every", 0.2))
    elif "grandchild" in step:
        def run():
            child = subprocess.Popen(["sleep", "600"])
            Path(step["grandchild"]).write_text(str(child.pid))
            return f"started {child.pid}"
        session.tool("Bash", {"command": "sleep 600 &"}, run)
    elif "escape" in step:
        def run():
            child = subprocess.Popen(["setsid", "sh", "-c", "trap '' TERM; exec sleep 600"])
            deadline = time.monotonic() + 10
            # Recorded once the trap is set and sleep runs, so it really is deaf to SIGTERM.
            while Path(f"/proc/{child.pid}/comm").read_text().strip() != "sleep" and time.monotonic() < deadline:
                time.sleep(0.01)
            tmp = Path(step["escape"] + ".tmp")
            tmp.write_text(str(child.pid))
            tmp.replace(step["escape"])  # whole or not there at all
            return f"started {child.pid} in its own session"
        session.tool("Bash", {"command": "setsid sh -c \"trap '' TERM; exec sleep 600\" &"}, run)
    elif "marker" in step:
        Path(step["marker"]).write_text(str(os.getpid()))
    elif "block_once" in step:
        flag = Path(step["block_once"])
        if not flag.exists():
            flag.write_text(str(os.getpid()))
            time.sleep(step.get("seconds", 60))
    elif "wait_for" in step:
        deadline = time.monotonic() + step.get("seconds", 20)
        while not Path(step["wait_for"]).exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"fake CLI: {step['wait_for']} never appeared")
            time.sleep(0.02)
    elif "rebase_resolve" in step:
        match = re.search(r"git rebase (\S+?)`", prompt)
        onto = match.group(1) if match else "origin/main"
        def run():
            env = {**os.environ, "GIT_EDITOR": "true"}
            proc = subprocess.run(["git", "rebase", onto], capture_output=True, text=True, env=env)
            while proc.returncode != 0:
                for name, text in step["rebase_resolve"].items():
                    Path(name).write_text(text)
                    sh(["git", "add", name])
                proc = subprocess.run(["git", "rebase", "--continue"], capture_output=True, text=True, env=env)
            return "rebased and resolved"
        session.tool("Bash", {"command": f"git rebase {onto}"}, run)
    else:
        raise SystemExit(f"fake CLI: unknown step {step}")


