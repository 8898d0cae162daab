"""Runtimes that run without their permission prompts, and the one-time acknowledgement that
lets the dispatcher claim tasks for them anyway.

A runtime bypasses its prompts when Baton runs it so that nobody is asked before a command or
an edit (the usual setup: nobody is there to answer). Until the project's
`data/guardrails-acknowledged.json` names that runtime, its tasks wait, pending, and the
dispatcher reports `guardrails_unacknowledged`. `baton-agent --i-understand-that-this-will-be-
running-without-the-usual-guardrails` and `baton-init` write the file (`acknowledge`).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

FLAG = "--i-understand-that-this-will-be-running-without-the-usual-guardrails"
ACK_NAME = "guardrails-acknowledged.json"
ACK_PATTERN = f"/data/{ACK_NAME}"  # for .git/info/exclude: a local decision, never committed
CODE = "guardrails_unacknowledged"
_TRACKED = ("{path} is tracked by git, so a landed commit could have written it; it counts only untracked: "
            f"`git rm --cached data/{ACK_NAME}`, then acknowledge again")

# Why each kind of runtime, configured so, runs unguarded (one sentence each, shown to the user).
WHY = {
    "claude_code": "claude_code.skip_permissions is true, so Claude Code runs every command and edit without asking",
    "codex": "codex.sandbox is danger-full-access, so Codex runs commands outside any sandbox with this user's rights",
    "opencode": "opencode.config sets no `permission`, so Baton allows OpenCode every tool without asking",
}
WHY_CLAUDE_MODE = ("claude_code.permission_mode is bypassPermissions, so Claude Code runs every command and edit "
                   "without asking")
WHY_OPENCODE_ALLOW = ("opencode.config's `permission` allows every tool, so OpenCode runs every command and edit "
                      "without asking")
WHY_CODEX_TURN = ("codex turn_sandbox_policy gives full access (dangerFullAccess or externalSandbox), so Codex "
                  "runs commands outside any sandbox with this user's rights")


def unguarded_reason(name: str, section: object) -> str | None:
    """Why runtime `name` configured by `section` runs without its prompts; None when it asks
    (or is a runtime that needs no acknowledgement, like the demo runtime)."""
    if name == "claude_code" and getattr(section, "skip_permissions", False):
        return WHY[name]
    if name == "claude_code" and getattr(section, "permission_mode", None) == "bypassPermissions":
        return WHY_CLAUDE_MODE  # the mode skips the prompts just as --dangerously-skip-permissions does
    if name == "codex":
        # Whatever the approval policy: full access is the danger. A turn_sandbox_policy is
        # sent on every turn and overrides `sandbox`, so it decides when it is set.
        turn_policy = getattr(section, "turn_sandbox_policy", None)
        full = section.full_access() if hasattr(section, "full_access") else (
            getattr(section, "sandbox", None) == "danger-full-access")
        if full:
            return WHY[name] if turn_policy is None else WHY_CODEX_TURN
    if name == "opencode":
        config = getattr(section, "config", {"permission": None})
        if "permission" not in config:
            return WHY[name]  # Baton then pins {"*": "allow"} (runtimes/opencode/runtime.py)
        if _allows_everything(config["permission"]):
            return WHY_OPENCODE_ALLOW  # written out, the same as Baton's pin
    return None


def _allows_everything(rules: object) -> bool:
    """An OpenCode permission that never asks: "allow", or rules whose "*" and every other rule
    (patterns included) say allow."""
    if isinstance(rules, dict):
        return "*" in rules and all(_allows_everything(rule) for rule in rules.values())
    return rules == "allow"


def unguarded(config) -> dict[str, str]:
    """The configured runtimes of an AgentConfig that bypass their prompts: {name: why}."""
    return {name: why for name in config.configured_runtimes
            if (why := unguarded_reason(name, config.runtime_section(name))) is not None}


def ack_path(project_dir: Path) -> Path:
    return Path(project_dir) / "data" / ACK_NAME


def read_acknowledged(project_dir: Path) -> tuple[frozenset[str], str | None]:
    """The runtimes the file acknowledges, and what is wrong with it (None when it is missing
    or fine). A file that cannot be read acknowledges nothing."""
    path = ack_path(project_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return frozenset(), None
    except (OSError, ValueError) as exc:
        return frozenset(), f"{path} cannot be read ({exc})"
    runtimes = data.get("runtimes") if isinstance(data, dict) else None
    if not isinstance(runtimes, list) or not all(isinstance(r, str) for r in runtimes):
        return frozenset(), f"{path} has no list of runtime names under \"runtimes\""
    if _tracked(Path(project_dir)):
        # A coding agent can commit this file and land it (a landed commit fast-forwards the
        # user's checkout): only the person's own, untracked copy counts.
        return frozenset(), _TRACKED.format(path=path)
    return frozenset(runtimes), None


def _tracked(project_dir: Path) -> bool:
    from .gitrepo import GitError, run_git

    try:
        return bool(run_git(["ls-files", "--", f"data/{ACK_NAME}"], project_dir).strip())
    except GitError:
        return False  # not a git repository: nothing can land in it


def acknowledge(project_dir: Path, runtimes: list[str], by: str) -> bool:
    """Record that `runtimes` may run without their prompts in this project (keeping those
    acknowledged before). Returns False, writing nothing, when all were already acknowledged."""
    project_dir = Path(project_dir)
    known, _ = read_acknowledged(project_dir)
    if set(runtimes) <= known:
        return False
    if _tracked(project_dir):
        raise OSError(_TRACKED.format(path=ack_path(project_dir)))  # rewriting it would still not count
    path = ack_path(project_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"acknowledged_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "by": by,
            "runtimes": sorted(known | set(runtimes))}
    fd, tmp = tempfile.mkstemp(prefix=f".{ACK_NAME}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(body, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)  # whole or not at all: a running agent reads it every tick
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    from .gitrepo import ensure_excluded  # kept out of `git status` (a local decision)

    ensure_excluded(project_dir, [ACK_PATTERN], "Baton guardrails acknowledgement")
    return True


def problem(name: str, why: str, file_problem: str | None = None) -> dict:
    message = (f"{name} runs without its permission prompts ({why}): acknowledge once with "
               f"`baton-agent {FLAG}` or `baton-init`; until then its tasks wait")
    if file_problem:
        message += f" ({file_problem})"
    return {"code": CODE, "message": message}


class Guardrails:
    """The dispatcher's view: which of its runtimes wait for an acknowledgement. The file is
    stat'ed on every call and parsed again only when it changed, so acknowledging while the
    agent runs unblocks it at its next tick."""

    def __init__(self, project_dir: Path, reasons: dict[str, str]) -> None:
        self.project_dir = Path(project_dir)
        self.reasons = reasons  # {runtime: why}, only the runtimes that bypass their prompts
        self._lock = threading.Lock()
        self._seen: tuple | None = None
        self._acknowledged: tuple[frozenset[str], str | None] = (frozenset(), None)

    def problems(self) -> dict[str, dict]:
        """{runtime: problem} for each unguarded runtime the file does not acknowledge."""
        if not self.reasons:
            return {}
        known, file_problem = self._read()
        return {name: problem(name, why, file_problem) for name, why in self.reasons.items() if name not in known}

    def _read(self) -> tuple[frozenset[str], str | None]:
        try:
            st = os.stat(ack_path(self.project_dir))
            key: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        with self._lock:
            if key is None:
                self._seen, self._acknowledged = None, (frozenset(), None)
            elif key != self._seen:
                self._acknowledged, self._seen = read_acknowledged(self.project_dir), key
            return self._acknowledged
