"""The task side of a sync engine: where a source's tasks live.

The engine only lists tasks, creates, cancels, reruns them and records its side effects on
them (`POST /agent/tasks/{id}/source/reports`). `ConnectorTaskSide` does that through one of
the dashboard's connectors; an agent running its own engine can supply a TaskSide over its store.
Failures come back as the two errors below, whatever the task side is built on.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..dashboard.connectors.base import AgentError, Connector, Unavailable, reason_of


class TasksUnavailable(Exception):
    """The tasks cannot be reached right now (the agent is down or answers garbage)."""


class TaskRefused(Exception):
    """The task side refused one request for a reason of its own (a 4xx): that request alone failed."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class TaskSide(Protocol):
    async def list_tasks(self) -> list[dict[str, Any]]:
        """Every live task (all statuses), as the API answers a task."""
        ...

    async def create(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        """POST /agent/tasks with an Idempotency-Key: the new task, or the one made the first time."""
        ...

    async def cancel(self, task_id: str, reason: str) -> dict[str, Any]: ...

    async def rerun(self, task_id: str) -> dict[str, Any]: ...

    async def report(self, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /agent/tasks/{id}/source/reports: {granted, task}."""
        ...


class ConnectorTaskSide:
    """A TaskSide over a dashboard connector (the agent's HTTP API, or its store on disk)."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    async def _call(self, coro):
        try:
            return await coro
        except AgentError as exc:
            error = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
            if not isinstance(error, dict):
                error = {}
            if exc.status >= 500:  # the agent's own trouble, not a refusal of this request
                raise TasksUnavailable(reason_of(exc)) from None
            raise TaskRefused(exc.status, str(error.get("code", "refused")), reason_of(exc)) from None
        except Unavailable as exc:
            raise TasksUnavailable(str(exc)) from None

    async def list_tasks(self) -> list[dict[str, Any]]:
        grouped = await self._call(self.connector.tasks())
        return [task for items in grouped.values() if isinstance(items, list) for task in items]

    async def create(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        return await self._call(self.connector.create(body, idempotency_key=key))

    async def cancel(self, task_id: str, reason: str) -> dict[str, Any]:
        return await self._call(self.connector.cancel(task_id, reason=reason))

    async def rerun(self, task_id: str) -> dict[str, Any]:
        return await self._call(self.connector.rerun(task_id))

    async def report(self, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(self.connector.source_report(task_id, body))
