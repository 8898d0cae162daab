"""Human-readable mirrors of the store: tasks/<status>/<id>.md.

The mirrors are a derived view for people (and `git diff`-friendly reading); the JSON store
always wins. They are updated after every change and rebuilt from the store at start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .fsutil import atomic_write
from .models import STATUSES, Task, is_valid_task_id

log = logging.getLogger(__name__)


def render_markdown(task: Task) -> str:
    lines = [
        f"# {task.title}",
        "",
        f"- id: {task.id}",
        f"- status: {task.status.value}",
        f"- type: {task.task_type}",
        f"- priority: {task.priority}",
        f"- needs plan review: {'yes' if task.needs_plan_review else 'no'}",
        f"- created: {task.created_at.isoformat()}",
        f"- updated: {task.updated_at.isoformat()}",
        f"- attempts: {task.attempts}",
        f"- runs: {task.runs}",
        *([f"- runtime: {task.runtime}"] if task.runtime else []),
        *([f"- model: {task.model}"] if task.model else []),
        *([f"- landing: {task.landing}"] if task.landing else []),
        *([f"- depends on: {', '.join(task.depends_on)}"] if task.depends_on else []),
        *([f"- plan: {task.plan_id}" + (f" ({task.ref})" if task.ref else "")] if task.plan_id else []),
        "",
        "## Content",
        "",
        task.content.strip() or "(none)",
        "",
        *(["## Plan" + (" (approved)" if task.plan_approved else ""), "", task.plan.strip(), ""] if task.plan else []),
        *(["## Messages waiting for the agent", "", *(f"- {m.at.isoformat()} ({m.kind}): {m.text.strip() or '(comments)'}"
                                                      for m in task.inbox), ""] if task.inbox else []),
        "## Outcome",
        "",
    ]
    lines.extend(_outcome_lines(task))
    return "\n".join(lines) + "\n"


def _outcome_lines(task: Task) -> list[str]:
    out: list[str] = []
    if task.status.value == "pending":
        out.append("Not started yet" + (": waits for its dependencies." if task.depends_on else "."))
    elif task.status.value == "blocked":
        out.append(f"Blocked: {task.blocked_reason or 'a dependency failed or was cancelled'}.")
    elif task.status.value == "plan_review":
        out.append("Its plan waits for review.")
    elif task.status.value == "review":
        out.append(f"Pull request #{task.pr.number} ({task.pr.state}): {task.pr.url}" if task.pr is not None
                   else f"Tested {task.review_sha or '?'}; waits for review.")
    elif task.status.value == "in_progress":
        out.append(f"Running since {task.started_at.isoformat() if task.started_at else '?'}.")
    elif task.status.value == "completed":
        out.append("Completed" + (" with no changes." if task.no_changes else "."))
    elif task.status.value == "failed":
        out.append(f"Failed ({task.error_reason or 'unknown reason'}): {task.error_message or ''}".rstrip())
    else:
        out.append("Cancelled.")
    extras = [
        ("finished", task.finished_at.isoformat() if task.finished_at else None),
        ("branch", task.branch),
        ("commit", task.commit_sha),
        ("cost", f"${task.cost_usd:.4f}" if task.cost_usd is not None else None),
        ("log", task.log_path),
    ]
    details = [f"- {name}: {value}" for name, value in extras if value]
    if details:
        out.append("")
        out.extend(details)
    if task.result_text:
        out.extend(["", task.result_text.strip()])
    return out


class MirrorWriter:
    def __init__(self, tasks_dir: Path) -> None:
        self.tasks_dir = tasks_dir

    def _path(self, status: str, task_id: str) -> Path:
        return self.tasks_dir / status / f"{task_id}.md"

    def apply(self, changes: list[tuple[Task | None, Task]]) -> None:
        """Follow one store change. Never raises: a mirror is rebuilt at the next start."""
        try:
            for old, new in changes:
                self._write(new)
                if old is not None and old.status != new.status:
                    self._path(old.status.value, old.id).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not update task mirrors in %s: %s", self.tasks_dir, exc)

    def remove(self, tasks: list[Task]) -> None:
        """Drop the mirrors of tasks that are no longer in the store."""
        for task in tasks:
            self._path(task.status.value, task.id).unlink(missing_ok=True)

    def _write(self, task: Task) -> None:
        folder = self.tasks_dir / task.status.value
        folder.mkdir(parents=True, exist_ok=True)
        # Mirrors are derived data: atomic (no torn files) but not fsynced.
        atomic_write(folder / f"{task.id}.md", render_markdown(task).encode("utf-8"), durable=False)

    def rebuild(self, tasks: list[Task]) -> int:
        """Make tasks/<status>/ hold exactly one up-to-date mirror per task. Returns files written."""
        wanted = {(t.status.value, t.id): t for t in tasks}
        written = 0
        for status in STATUSES:
            folder = self.tasks_dir / status
            if not folder.is_dir():
                continue
            for path in folder.glob("*.md"):
                task_id = path.stem
                if is_valid_task_id(task_id) and (status, task_id) not in wanted:
                    path.unlink(missing_ok=True)
        for (status, task_id), task in wanted.items():
            path = self._path(status, task_id)
            text = render_markdown(task)
            try:
                if path.read_text(encoding="utf-8") == text:
                    continue
            except (FileNotFoundError, UnicodeDecodeError):
                pass
            self._write(task)
            written += 1
        return written
