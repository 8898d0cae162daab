"""StoreTaskSide: the sync engine's TaskSide (backend/sources/taskside.py) over the agent's own
store, for the tracker a WORKFLOW.md names (the engine runs inside baton-agent).

It answers as POST /agent/tasks and friends would, with the same checks and refusals (a
TaskRefused carries the status and code the route would answer), so the engine cannot tell it
from the HTTP API; cancelling goes through the very function the route uses (agent/taskops.py).
Store calls block (file lock, fsync): each runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import ValidationError

from ..agent.runtimechoice import unconfigured
from ..agent.schemas import CancelRequest, SourceReportRequest
from ..agent.taskops import NotRunningHere, cancel_task
from ..dependencies import DependencyError
from ..models import NewTask, is_valid_task_id
from ..sources.taskside import TaskRefused, TasksUnavailable
from ..store import (
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    SourceError,
    StoreError,
    TaskNotFoundError,
    TaskStore,
)


def _validation(exc: ValidationError, prefix: str) -> TaskRefused:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
    where = ".".join(str(p) for p in (prefix, *first.get("loc", ())))
    return TaskRefused(422, "validation_error", f"{where}: {first.get('msg', 'invalid')}")


def _answer(task) -> dict[str, Any]:
    return json.loads(task.model_dump_json())


class StoreTaskSide:
    def __init__(self, store: TaskStore, dispatcher) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self._listed: tuple[object, list[dict[str, Any]]] | None = None  # (snapshot, its tasks parsed)

    async def _call(self, fn, *args):
        try:
            return await asyncio.to_thread(fn, *args)
        except TaskNotFoundError as exc:
            raise TaskRefused(404, "not_found", str(exc)) from None
        except InvalidTransitionError as exc:
            raise TaskRefused(409, "invalid_transition", str(exc)) from None
        except NotRunningHere as exc:
            raise TaskRefused(409, "invalid_transition", str(exc)) from None
        except IdempotencyKeyReusedError as exc:
            raise TaskRefused(409, "idempotency_key_reused", str(exc)) from None
        except DependencyError as exc:
            raise TaskRefused(422, "invalid_dependencies", str(exc)) from None
        except SourceError as exc:  # as the routes answer: a report refuses the task, a create the field
            if exc.loc == "source":
                raise TaskRefused(422, "no_source", exc.message) from None
            raise TaskRefused(422, "validation_error", f"body.{exc.loc}: {exc.message}") from None
        except (StoreError, OSError) as exc:  # busy, corrupt, unreadable, full: the store's trouble
            raise TasksUnavailable(f"task store: {exc}") from None

    # ----- TaskSide ------------------------------------------------------------------------------

    async def list_tasks(self) -> list[dict[str, Any]]:
        return await self._call(self._list)

    def _list(self) -> list[dict[str, Any]]:
        snap = self.store.snapshot()
        if self._listed is None or self._listed[0] is not snap:
            # Snapshots are replaced, never changed: the same one parses to the same tasks.
            self._listed = (snap, [json.loads(snap.task_json(task_id)) for task_id in snap.tasks])
        return list(self._listed[1])

    async def create(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        try:
            new = NewTask.model_validate(body)
        except ValidationError as exc:
            raise _validation(exc, "body") from None
        return _answer(await self._call(self._create, new, key))

    def _create(self, new: NewTask, key: str):
        # As the route: a repeat answers what was created then, even if the runtime went since.
        if not self.store.created_with(key):
            problem = unconfigured([new], list(self.dispatcher.ctx.runtimes))
            if problem is not None:
                raise TaskRefused(422, "runtime_not_configured", problem)
        return self.store.create(new, key)

    async def cancel(self, task_id: str, reason: str) -> dict[str, Any]:
        self._check_id(task_id)
        try:
            reason = CancelRequest(reason=reason).reason
        except ValidationError as exc:
            raise _validation(exc, "body") from None
        done = await self._call(cancel_task, self.store, self.dispatcher, task_id, reason)
        return _answer(done.task)

    async def rerun(self, task_id: str) -> dict[str, Any]:
        self._check_id(task_id)
        return _answer(await self._call(self.store.rerun, task_id))

    async def report(self, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_id(task_id)
        try:
            asked = SourceReportRequest.model_validate(body)
        except ValidationError as exc:
            raise _validation(exc, "body") from None
        granted, task = await self._call(self.store.source_report, task_id, asked.key, asked.action,
                                         asked.by, asked.stale_seconds)
        return {"granted": granted, "task": _answer(task)}

    @staticmethod
    def _check_id(task_id: str) -> None:
        if not is_valid_task_id(task_id):
            raise TaskRefused(400, "invalid_id", "task ids are 1-32 characters of a-z and 0-9")
