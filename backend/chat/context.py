"""What a project tells the chat model about itself: README, CLAUDE.md, a file tree, recent
commits and open tasks, each bounded. The agent serves it (GET /agent/context) and the
dashboard's local connector reads the same with this code; system_prompt() turns it (or its
absence) into the model's system prompt.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..agent.basebranch import detect_base_branch
from ..gitrepo import GitError, recent_commits, ref_exists, run_git
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
    except GitError:
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


def file_tree(project_dir: Path) -> tuple[list[str], bool]:
    """Tracked paths (`git ls-files`), the first TREE_MAX_PATHS, and whether there were more."""
    try:
        out = run_git(["ls-files", "-z"], project_dir)
    except GitError:
        return [], False
    paths = [p for p in out.split("\0") if p]
    return paths[:TREE_MAX_PATHS], len(paths) > TREE_MAX_PATHS


def open_tasks(tasks: Iterable[Task]) -> tuple[list[dict], int]:
    """Open tasks (oldest first, at most OPEN_TASKS_MAX) and how many there are in all."""
    live = sorted((t for t in tasks if t.status in OPEN_STATUSES), key=lambda t: (t.created_at, t.id))
    shown = [{"id": t.id, "title": t.title, "status": t.status.value, "depends_on": list(t.depends_on)}
             for t in live[:OPEN_TASKS_MAX]]
    return shown, len(live)


def read_context(project_id: str, project_dir: Path, ref: str, tasks: Iterable[Task]) -> dict:
    """The whole context; blocking (git, files): call it off the event loop."""
    tree, truncated = file_tree(project_dir)
    try:
        commits = [{"sha": c.sha, "subject": c.message, "author": c.author, "date": c.date}
                   for c in recent_commits(project_dir, COMMITS_MAX, ref)]
    except GitError:
        commits = []
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
