"""One interface for reaching a project, whether through its agent or its store on disk."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from ..config import ProjectConfig


# (event, data, id) of a project's change stream; ("", None, None) is a keep-alive.
ChangeEvent = tuple[str, dict | None, str | None]


class Unavailable(Exception):
    """The project cannot be read right now (agent down, slow, answering garbage, store
    unreadable). `str()` is the reason shown to the person."""


class AgentError(Exception):
    """The agent (or store) refused a request for a reason of its own (4xx): passed on as is."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def reason_of(exc: Exception) -> str:
    """What to show for a project that cannot be read, whatever went wrong."""
    if isinstance(exc, AgentError):
        error = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
        return f"the agent refused ({exc.status}): {error.get('message', 'no reason given')}"
    return str(exc)


def unavailable_overview(exc: Exception) -> dict[str, Any]:
    return {"healthy": False, "reason": reason_of(exc), "health": None, "dispatcher": None, "counts": None,
            "problems": []}


def health_problems(health: dict) -> list[dict[str, str]]:
    """What a `degraded` health reports, as [{code, message}] strings (whatever the agent sent)."""
    raw = health.get("problems")
    problems = [{"code": str(p.get("code", "problem")), "message": str(p.get("message", ""))}
                for p in (raw if isinstance(raw, list) else []) if isinstance(p, dict)]
    if health.get("status") == "degraded" and not problems:
        problems = [{"code": "degraded", "message": "the agent reports it is degraded, without saying why"}]
    return problems


def state_overview(state: dict) -> dict:
    """The project part of an agent's `state` event: {healthy, reason, health, dispatcher, counts,
    problems, usage, tasks_error}."""
    health, dispatcher = state["health"], state["dispatcher"]
    status = health.get("status")
    healthy = status in ("ok", "degraded")  # degraded: still serving, with problems to show
    reason = None if healthy else f"agent reports status {status!r}"
    return {"healthy": healthy, "reason": reason, "health": health, "dispatcher": dispatcher,
            "counts": dispatcher.get("counts"), "problems": health_problems(health),
            "usage": state.get("usage"), "tasks_error": reason}


# What of the agent's `workflow` the board shows beside the tracker's sync (its tracker dict is the rest).
_WORKFLOW_KEYS = ("path", "state", "error", "loaded_at")


def workflow_source(health: dict | None) -> dict | None:
    """The `source` of a project whose agent runs a WORKFLOW.md, from the agent's health (None: it
    runs none): the tracker sync's health as a dashboard `source:` has it (kind, state, reason,
    last_sync_at, ...; state `none` for a workflow without a tracker), plus `workflow` {path, state:
    ok|invalid, error, loaded_at} and `origin: "workflow"`. Everything in it is the agent's word, and
    `workflow.error.message` is the repository's text: the page shows it as text, never markup."""
    workflow = health.get("workflow") if isinstance(health, dict) else None
    if not isinstance(workflow, dict):
        return None
    tracker = workflow.get("tracker")
    sync = dict(tracker) if isinstance(tracker, dict) else {
        "kind": None, "state": "none", "healthy": True, "reason": None, "warning": None,
        "last_sync_at": None, "next_sync_at": None}
    return {**sync, "origin": "workflow", "workflow": {key: workflow.get(key) for key in _WORKFLOW_KEYS}}


class Connector(ABC):
    mode: str

    def __init__(self, project: ProjectConfig) -> None:
        self.project = project

    @property
    def identity_problem(self) -> str | None:
        """Why what answers is not this project (then nothing of it may be shown), or None."""
        return None

    async def overview(self) -> dict[str, Any]:
        """Health, dispatcher state and counts for the project list. Never raises."""
        try:
            health = await self.health()
            dispatcher = await self.dispatcher()
        except (Unavailable, AgentError) as exc:
            return unavailable_overview(exc)
        return {"healthy": True, "reason": None, "health": health, "dispatcher": dispatcher,
                "counts": dispatcher.get("counts"), "problems": health_problems(health)}

    async def board(self, window: int) -> tuple[dict[str, Any], dict | Exception]:
        """For /api/board: (overview, the first `window` summaries per status as changes(None) —
        or the error that kept them from being read). Never raises for an unavailable project."""
        overview, changes = await asyncio.gather(self.overview(), self.changes(None, window), return_exceptions=True)
        if isinstance(overview, BaseException):
            raise overview
        return overview, changes

    @abstractmethod
    async def health(self) -> dict: ...

    @abstractmethod
    async def dispatcher(self) -> dict: ...

    @abstractmethod
    async def dispatcher_action(self, action: str, force: bool) -> dict: ...

    @abstractmethod
    async def tasks(self) -> Any: ...

    @abstractmethod
    async def runtimes(self) -> dict:
        """As GET /agent/runtimes: {default, runtimes: [{name, default, model, available, problem, cost}]}."""

    @abstractmethod
    async def task(self, status: str, filename: str) -> dict: ...

    # ----- the change feed (as the agent's /agent/changes, /agent/summaries, /agent/changes/stream)

    @abstractmethod
    async def changes(self, since: str | None, window: int) -> dict:
        """{cursor, revision, reset, tasks: [summary], removed: [id], usage}."""

    @abstractmethod
    async def summaries(self, status: str, after: str | None, limit: int, q: str | None) -> dict:
        """{tasks: [summary], more}: the summaries of `status` with sort > after, ascending."""

    @abstractmethod
    def follow_changes(self, since: str | None, window: int) -> AsyncIterator[ChangeEvent]:
        """(event, data, id): a `state` event first and whenever it changes, `changes` events
        (id = cursor), ("", None, None) for a keep-alive. Raises Unavailable/AgentError when
        the project cannot be followed (before or during the stream); it never ends on its own
        while the project is there (an end is a lost stream, to be followed again)."""

    # With an idempotency_key, a repeat of the same create answers what the first one created.
    @abstractmethod
    async def create(self, body: dict, idempotency_key: str | None = None) -> dict: ...

    @abstractmethod
    async def bulk(self, body: dict, idempotency_key: str | None = None) -> dict: ...

    @abstractmethod
    async def rerun(self, task_id: str) -> dict: ...

    @abstractmethod
    async def cancel(self, task_id: str, reason: str | None = None) -> dict:
        """`reason` (1-2000 characters) is kept as the task's cancel_reason."""

    # ----- a tracker source (backend/sources/): the sync engine's bookkeeping on a task

    @abstractmethod
    async def source_report(self, task_id: str, body: dict) -> dict:
        """POST /agent/tasks/{id}/source/reports, body {key, action: claim|done|release, by,
        stale_seconds}: {granted, task}."""

    @abstractmethod
    async def workflow_refresh(self) -> dict:
        """POST /api/v1/refresh: the agent polls its WORKFLOW.md's tracker now (202, Symphony's
        {queued, coalesced, requested_at, operations})."""

    # ----- a person in the loop (issue #11): the bodies and answers of the agent's routes

    @abstractmethod
    async def message(self, task_id: str, body: dict) -> dict:
        """POST /agent/tasks/{id}/messages: {task, message, delivery: queued|started}."""

    @abstractmethod
    async def approve(self, task_id: str, body: dict) -> dict: ...

    @abstractmethod
    async def request_changes(self, task_id: str, body: dict) -> dict: ...

    @abstractmethod
    async def reject(self, task_id: str, body: dict) -> dict: ...

    @abstractmethod
    async def diff(self, task_id: str, context: int) -> dict: ...

    @abstractmethod
    async def refresh_pr(self, task_id: str) -> dict: ...

    @abstractmethod
    async def events(self, task_id: str, after: int, limit: int) -> dict: ...

    @abstractmethod
    async def open_stream(self, task_id: str, after: int) -> AsyncIterator[bytes]:
        """Start following a task. Errors (no such task, agent down) are raised here, before
        anything is sent to the browser; the iterator returned then yields SSE bytes."""

    @abstractmethod
    async def worktrees(self) -> dict: ...

    @abstractmethod
    async def commits(self, count: int) -> list: ...

    # ----- chat -----
    @abstractmethod
    async def context(self) -> dict:
        """As GET /agent/context: {project_id, readme, claude_md, tree, tree_truncated, commits,
        open_tasks, open_tasks_total}, every part bounded (backend/chat/context.py)."""

    # ----- plans -----
    # The bodies and answers of the agent's /agent/plans routes (backend/agent/routes/plans.py).
    @abstractmethod
    async def list_plans(self) -> dict:
        """{plans: [summary], invalid: [{file, problem}]}."""

    @abstractmethod
    async def create_plan(self, body: dict) -> dict:
        """body {plan: PlanDraft, chat_id}: the new draft plan (with task_status)."""

    @abstractmethod
    async def get_plan(self, plan_id: str) -> dict: ...

    @abstractmethod
    async def update_plan(self, plan_id: str, body: dict) -> dict:
        """body {revision, plan: PlanDraft}."""

    @abstractmethod
    async def approve_plan(self, plan_id: str, body: dict) -> dict:
        """body {revision}."""

    @abstractmethod
    async def reopen_plan(self, plan_id: str) -> dict: ...

    @abstractmethod
    async def run_plan(self, plan_id: str, body: dict | None = None) -> dict:
        """body {revision} or None (run whatever revision is ready)."""

    @abstractmethod
    async def delete_plan(self, plan_id: str) -> None: ...

    # ----- attachments -----
    # The agent's /agent/tasks/{id}/attachments routes (backend/agent/routes/attachments.py).
    @abstractmethod
    async def upload_attachments(self, task_id: str, content_type: str, body: AsyncIterator[bytes]) -> dict:
        """The multipart body as it arrives (never read whole here): {attachments, replaced}."""

    @abstractmethod
    async def attachments(self, task_id: str) -> dict:
        """{attachments: [Attachment]}."""

    @abstractmethod
    async def attachment_file(self, task_id: str, name: str) -> bytes:
        """The bytes of one attached file (at most backend.attachments.MAX_FILE_BYTES)."""

    async def close(self) -> None:
        return None
