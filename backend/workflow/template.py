"""WORKFLOW.md's body as the first turn's prompt, and the continuation turns' prompt.

A jinja2 template in a sandbox (the file is the repository's: a landed commit can change it),
strict about names (StrictUndefined: an unknown variable or filter fails the run with the
template's message and line, SPEC 5.4). Variables: `issue` (Symphony's issue fields),
`attempt` (None on the first run, else the run's number - 1), `project` {id, name,
base_branch}, `task` {id, branch}; continuation templates also get `turn` and `max_turns`.
"""

from __future__ import annotations

import functools
import traceback
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from ..dispatcher.policy import PromptError
from .sandbox import Sandbox

if TYPE_CHECKING:
    from ..models import Task
    from ..trackers.base import Issue
    from .loader import Workflow

DEFAULT_PROMPT = "You are working on an issue from the configured tracker."
MAX_PROMPT_CHARS = 1024 * 1024
_TEMPLATE_NAME = "<template>"  # jinja's filename for from_string: how its frames are found
_BY_PRIORITY = {"urgent": 1, "high": 2, "medium": 3, "low": 4}  # sources/engine.PRIORITIES, reversed


class Labels(list):
    """An issue's labels: iterable as a list, written as "a, b" (`{{ issue.labels }}`)."""

    def __str__(self) -> str:
        return ", ".join(str(label) for label in self)


@functools.lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    return Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@functools.lru_cache(maxsize=64)
def _compiled(source: str) -> Template:
    return environment().from_string(source)


def check_template(source: str) -> tuple[int, str] | None:
    """(line, message) of the source's syntax error (an unknown filter is one), or None."""
    try:
        _compiled(source)
    except TemplateSyntaxError as exc:
        return exc.lineno, exc.message or str(exc)
    return None


def _render(source: str, context: dict[str, Any], where: str, first_line: int) -> str:
    issue = context.get("issue")
    if isinstance(issue, dict) and isinstance(issue.get("labels"), list) and not isinstance(issue["labels"], Labels):
        context = {**context, "issue": {**issue, "labels": Labels(issue["labels"])}}
    try:
        chunks, size = [], 0
        for chunk in _compiled(source).generate(**context):
            size += len(chunk)
            if size > MAX_PROMPT_CHARS:
                raise PromptError(f"{where}: the rendered prompt is longer than {MAX_PROMPT_CHARS} characters")
            chunks.append(chunk)
        return "".join(chunks)
    except PromptError:
        raise
    except TemplateSyntaxError as exc:
        raise PromptError(f"{where} line {exc.lineno + first_line - 1}: {exc.message or exc}") from None
    except Exception as exc:  # noqa: BLE001 — anything the template did is this run's failure, with its line
        lines = [n for frame, n in traceback.walk_tb(exc.__traceback__) if frame.f_code.co_filename == _TEMPLATE_NAME]
        line = f" line {lines[-1] + first_line - 1}" if lines else ""
        message = str(exc) if getattr(exc, "__module__", "").startswith("jinja2") else f"{type(exc).__name__}: {exc}"
        raise PromptError(f"{where}{line}: {message}") from None


def render_first(workflow: Workflow, *, issue: dict, attempt: int | None, project: dict, task: dict) -> str:
    """The first turn's prompt: the body rendered (the default prompt when the body is empty).
    Raises PromptError with the template's message and the file's line."""
    if not workflow.template:
        return DEFAULT_PROMPT
    context = {"issue": issue, "attempt": attempt, "project": project, "task": task}
    return _render(workflow.template, context, workflow.path.name, workflow.template_line)


def render_continuation(workflow: Workflow, *, issue: dict, attempt: int | None, project: dict, task: dict,
                        turn: int, max_turns: int) -> str:
    """A continuation turn's prompt (`turn` of `max_turns`, from 2): agent.continuation_prompt
    rendered, or the default guidance."""
    source = workflow.config.agent.continuation_prompt
    if source:
        context = {"issue": issue, "attempt": attempt, "project": project, "task": task, "turn": turn,
                   "max_turns": max_turns}
        return _render(source, context, "agent.continuation_prompt", 1)
    return default_continuation(workflow, issue=issue, turn=turn, max_turns=max_turns)


def default_continuation(workflow: Workflow, *, issue: dict, turn: int, max_turns: int) -> str:
    """Symphony's continuation guidance: the same session goes on from where it is."""
    name = issue.get("identifier") or "The issue"
    state = issue.get("state")
    where = f'is still in state "{state}"' if state else "is still active"
    lines = [
        "Continuation guidance:",
        "",
        f"- {name} {where} in the tracker, so this session goes on: this is turn {turn} of {max_turns}.",
        "- Resume from the current workspace: your earlier changes are there. Do not start over, and do not "
        "repeat work or investigation that is already done.",
    ]
    tracker = workflow.config.tracker
    if tracker.handoff_states:
        target = tracker.handoff_states[0]
        how = " with the tracker_update_state tool" if tracker.tools else ""
        lines.append(f'- When the work is ready, move the issue to "{target}"{how}; that ends the turns.')
    else:
        lines.append("- Keep going until the work is complete.")
    return "\n".join(lines)


def issue_vars(issue: Issue | None, task: Task) -> dict:
    """Symphony's issue fields for the template, from the tracker's issue, or from the task
    (made from that issue) when the tracker could not be asked."""
    if issue is not None:
        return {
            "id": issue.id, "identifier": issue.identifier, "title": issue.title, "description": issue.description,
            "priority": issue.priority, "state": issue.state, "url": issue.url,
            "labels": Labels(label.strip().lower() for label in issue.labels),  # Symphony normalises them
            "branch_name": None, "blocked_by": [], "created_at": None,
            "updated_at": issue.updated_at.isoformat() if issue.updated_at else None,
        }
    source = task.source
    identifier = source.identifier if source else task.id
    url = source.url if source else None
    head = f"{identifier}: {url}" if url else identifier
    description = task.content
    if description == head:
        description = ""
    elif description.startswith(head + "\n\n"):
        description = description[len(head) + 2:]  # sources/engine.task_content's head
    return {
        "id": source.id if source else task.id, "identifier": identifier, "title": task.title,
        "description": description, "priority": _BY_PRIORITY.get(task.priority), "state": None, "url": url,
        "labels": Labels(), "branch_name": None, "blocked_by": [], "created_at": None, "updated_at": None,
    }
