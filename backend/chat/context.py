"""What a project tells the chat model about itself: README, CLAUDE.md, a file tree, recent
commits and open tasks, each bounded. The agent serves it (GET /agent/context) and the
dashboard's local connector reads the same with this code; system_prompt() turns it (or its
absence) into the model's system prompt.

Git's output is read as bytes and decoded leniently: file names and commit messages need not be
UTF-8 (a Latin-1 name or message shows with U+FFFD instead of failing every answer). The file
list is read as git writes it and git is stopped once there are enough names, so a huge
repository's list is never read whole.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path

from ..agent.basebranch import detect_base_branch
from ..gitrepo import DEFAULT_TIMEOUT, GitError, ref_exists
from ..models import Task, TaskStatus

DOC_MAX_BYTES = 16 * 1024  # README.md and CLAUDE.md, each
TREE_MAX_PATHS = 400
COMMITS_MAX = 20
OPEN_TASKS_MAX = 100
OPEN_STATUSES = (TaskStatus.pending, TaskStatus.blocked, TaskStatus.plan_review, TaskStatus.in_progress,
                 TaskStatus.review)
_README_NAMES = ("README.md", "README", "README.rst", "README.txt", "readme.md")
_TRUNCATED = "\n[… cut here: the file is longer than {} KiB]"


def base_ref(project_dir: Path, base_branch: str | None, remote: str) -> str:
    """The base branch as the agent's /agent/commits reads it: local, else the remote's, else HEAD."""
    try:
        name = base_branch or detect_base_branch(project_dir, remote)
        return next((ref for ref in (f"refs/heads/{name}", f"refs/remotes/{remote}/{name}")
                     if ref_exists(project_dir, ref)), "HEAD")
    except (GitError, UnicodeDecodeError):
        return "HEAD"


def read_doc(project_dir: Path, names: Iterable[str]) -> str | None:
    """The first of `names` that is a regular file inside the project, capped; None if none is."""
    root = project_dir.resolve()
    for name in names:
        path = project_dir / name
        try:
            real = path.resolve()
            if not real.is_relative_to(root) or not real.is_file():
                continue  # a symlink out of the project is not the project's README
            with open(real, "rb") as handle:
                raw = handle.read(DOC_MAX_BYTES + 1)
        except OSError:
            continue
        text = raw[:DOC_MAX_BYTES].decode("utf-8", errors="replace")
        return text + _TRUNCATED.format(DOC_MAX_BYTES // 1024) if len(raw) > DOC_MAX_BYTES else text
    return None


def _git_env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def file_tree(project_dir: Path) -> tuple[list[str], bool]:
    """Tracked paths (`git ls-files`), the first TREE_MAX_PATHS, and whether there were more."""
    try:
        proc = subprocess.Popen(["git", "ls-files", "-z"], cwd=project_dir, env=_git_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return [], False
    timer = threading.Timer(DEFAULT_TIMEOUT, proc.kill)
    timer.start()
    paths: list[bytes] = []
    rest = b""
    try:
        while len(paths) <= TREE_MAX_PATHS:
            chunk = proc.stdout.read1(64 * 1024)
            if not chunk:
                break
            *done, rest = (rest + chunk).split(b"\0")
            paths += [p for p in done if p]
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()  # enough names: the rest is never read
        proc.stdout.close()
        code = proc.wait()
    if len(paths) > TREE_MAX_PATHS:
        return [_text(p) for p in paths[:TREE_MAX_PATHS]], True
    if code != 0:
        return [], False
    return [_text(p) for p in paths], False


def recent_commits(project_dir: Path, ref: str) -> list[dict]:
    """The newest COMMITS_MAX commits reachable from `ref` (none when it has none, or git fails)."""
    try:
        proc = subprocess.run(["git", "log", f"--max-count={COMMITS_MAX}", "--format=%H%x1f%s%x1f%an%x1f%aI%x1e",
                               ref, "--"], cwd=project_dir, env=_git_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=DEFAULT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    commits = []
    for record in _text(proc.stdout).split("\x1e"):
        fields = record.strip("\n").split("\x1f")
        if len(fields) == 4:
            sha, subject, author, date = fields
            commits.append({"sha": sha, "subject": subject, "author": author, "date": date})
    return commits


def open_tasks(tasks: Iterable[Task]) -> tuple[list[dict], int]:
    """Open tasks (oldest first, at most OPEN_TASKS_MAX) and how many there are in all."""
    live = sorted((t for t in tasks if t.status in OPEN_STATUSES), key=lambda t: (t.created_at, t.id))
    shown = [{"id": t.id, "title": t.title, "status": t.status.value, "depends_on": list(t.depends_on)}
             for t in live[:OPEN_TASKS_MAX]]
    return shown, len(live)


def read_context(project_id: str, project_dir: Path, ref: str, tasks: Iterable[Task]) -> dict:
    """The whole context; blocking (git, files): call it off the event loop."""
    tree, truncated = file_tree(project_dir)
    commits = recent_commits(project_dir, ref)
    shown, total = open_tasks(tasks)
    return {"project_id": project_id,
            "readme": read_doc(project_dir, _README_NAMES),
            "claude_md": read_doc(project_dir, ("CLAUDE.md",)),
            "tree": tree, "tree_truncated": truncated, "commits": commits,
            "open_tasks": shown, "open_tasks_total": total}


def system_prompt(project_name: str, context: dict | None, missing: str | None = None) -> str:
    """The chat's system prompt: who it talks to, then whatever of the context there is."""
    parts = [
        f"You are talking with a software developer about their project {project_name!r}. Tasks for this "
        "project are carried out by coding agents that Baton runs, one task per agent, each landing as a "
        "tested commit. Help the person think: ask what is unclear, point out risks, and when asked, "
        "propose work as small, independently testable tasks. Answer in plain text (no HTML).",
    ]
    if context is None:
        parts.append("The project's context (README, files, commits, open tasks) could not be read"
                     + (f": {missing}" if missing else "") + ". Say so if the answer depends on it.")
        return "\n\n".join(parts)
    if context.get("readme"):
        parts.append(f"<readme>\n{context['readme']}\n</readme>")
    if context.get("claude_md"):
        parts.append(f"<claude_md>\n{context['claude_md']}\n</claude_md>")
    tree = context.get("tree") or []
    if tree:
        more = "\n(… more files not listed)" if context.get("tree_truncated") else ""
        parts.append("<files>\n" + "\n".join(tree) + more + "\n</files>")
    commits = context.get("commits") or []
    if commits:
        lines = [f"{c.get('sha', '')[:10]} {c.get('date', '')} {c.get('author', '')}: {c.get('subject', '')}"
                 for c in commits]
        parts.append("<recent_commits>\n" + "\n".join(lines) + "\n</recent_commits>")
    tasks = context.get("open_tasks") or []
    if tasks:
        lines = [f"{t.get('id')} [{t.get('status')}] {t.get('title')}"
                 + (f" (after {', '.join(t['depends_on'])})" if t.get("depends_on") else "") for t in tasks]
        total = context.get("open_tasks_total")
        if isinstance(total, int) and total > len(tasks):
            lines.append(f"(… {total - len(tasks)} more open tasks)")
        parts.append("<open_tasks>\n" + "\n".join(lines) + "\n</open_tasks>")
    else:
        parts.append("There are no open tasks.")
    return "\n\n".join(parts)
