"""LocalConnector: a project without a running agent, read through its store on disk.

It uses the same TaskStore (and lock) as the agent, so reads and writes are as safe as the
agent's own. What needs a running dispatcher (starting it, stopping a running task) is
refused with an explanation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ... import taskviews
from ...changefeed import ChangeFeed, change_events
from ...agent.logsroot import recorded_logs_dir
from ...agent.runtimechoice import RUN_ON_NEEDS_DASK, describe, unconfigured, unpinnable
from ...runtimes import build_configured
from ...agent.schemas import BulkCreate, CancelRequest, SourceReportRequest
from ...config import AgentConfig, ConfigError, load_agent_config
from ...dependencies import DependencyError
from ...dispatcher.events import EventWriter, TaskLogs, follow_task, read_events
from ...gitrepo import GitError, recent_commits, worktree_list
from ...mirrors import MirrorWriter
from ...models import STATUSES, NewMessage, NewTask, TaskStatus, is_valid_task_id
from ...store import (
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    SourceError,
    StoreError,
    StoreFullError,
    TaskNotFoundError,
    TaskStore,
)
from ..config import ProjectConfig
from .base import AgentError, ChangeEvent, Connector, Unavailable

_FILENAME_SUFFIX = ".md"
POLL_SECONDS = 1.0  # how soon another process's write (an agent-less CLI, a hand edit) shows


def _refuse(status: int, code: str, message: str) -> AgentError:
    return AgentError(status, {"error": {"status": status, "code": code, "message": message}})


class LocalConnector(Connector):
    mode = "local"

    def __init__(self, project: ProjectConfig) -> None:
        super().__init__(project)
        self.path = Path(project.path or "").expanduser()
        self.store = TaskStore(self.path / "data" / "dev-tasks.json", mirrors=MirrorWriter(self.path / "tasks"))
        self.feed = ChangeFeed(self.store)  # reads nothing until asked

    @property
    def logs_dir(self) -> Path:
        """Where the project's agent last kept its task logs (`--logs-root`), else <project>/logs."""
        return recorded_logs_dir(self.path)

    def _needs_agent(self, what: str) -> AgentError:
        return _refuse(409, "needs_agent",
                       f"{what} needs a running agent: start `baton-agent --project-dir {self.path}` and give "
                       "the project an agent_url")

    async def _run(self, fn, *args):
        try:
            return await run_in_threadpool(fn, *args)
        except TaskNotFoundError as exc:
            raise _refuse(404, "not_found", str(exc)) from None
        except InvalidTransitionError as exc:
            raise _refuse(409, "invalid_transition", str(exc)) from None
        except IdempotencyKeyReusedError as exc:
            raise _refuse(409, "idempotency_key_reused", str(exc)) from None
        except DependencyError as exc:  # create/bulk: as the agent's routes answer it
            raise _refuse(422, "invalid_dependencies", str(exc)) from None
        except SourceError as exc:  # as the agent answers: create refuses the field, a report the task
            if exc.loc == "source":
                raise _refuse(422, "no_source", exc.message) from None
            raise _refuse(422, "validation_error", f"body.{exc.loc}: {exc.message}") from None
        except StoreFullError as exc:
            raise _refuse(507, "insufficient_storage", f"task store: {exc}") from None
        except StoreError as exc:
            raise Unavailable(f"task store: {exc}") from None
        except (GitError, OSError) as exc:
            raise Unavailable(str(exc)) from None

    def _folder_missing(self) -> Unavailable | None:
        if not self.path.is_dir():
            return Unavailable(f"project folder {self.path} does not exist (the dashboard never creates it)")
        return None

    async def _write(self, fn, *args):
        """Every write: never into a project folder that is not there (the store would create it)."""
        if (missing := self._folder_missing()) is not None:
            raise missing
        return await self._run(fn, *args)

    async def health(self) -> dict:
        if (missing := self._folder_missing()) is not None:
            raise missing
        await self._run(self.store.snapshot)
        return {**self._health(), "uptime_seconds": None}

    def _health(self) -> dict:
        return {"status": "ok", "project": self.path.name, "version": "local"}

    def _dispatcher(self) -> dict:
        counts = taskviews.counts(self.store.snapshot())
        return {"state": "no agent", "workers": {"max": 0, "busy": 0}, "running": [],
                "queue_length": counts["pending"], "merge_queue": [], "counts": counts,
                "ports_in_use": {}}

    async def dispatcher(self) -> dict:
        return await self._run(self._dispatcher)

    # ----- the change feed: the agent's own ChangeFeed, over the store on disk -------------
    # Writes through this dashboard wake it; other processes' writes are caught by polling.

    def _state(self) -> dict:
        if (missing := self._folder_missing()) is not None:
            raise missing
        return {"health": self._health(), "dispatcher": self._dispatcher(), "usage": self.feed.usage()}

    async def changes(self, since: str | None, window: int) -> dict:
        if (missing := self._folder_missing()) is not None:
            raise missing
        try:
            return await self._run(self.feed.changes, since, window)
        except ValueError as exc:
            raise _refuse(400, "invalid_cursor", str(exc)) from None

    async def summaries(self, status: str, after: str | None, limit: int, q: str | None) -> dict:
        if (missing := self._folder_missing()) is not None:
            raise missing
        try:
            return await self._run(self.feed.summaries, status, after, limit, q)
        except ValueError as exc:
            raise _refuse(400, "bad_request", str(exc)) from None

    async def follow_changes(self, since: str | None, window: int) -> AsyncIterator[ChangeEvent]:
        await self.health()  # a missing folder or unreadable store: unavailable before anything is sent

        async def never() -> bool:
            return False  # the board's relay closes this generator when the page leaves

        try:
            async for item in change_events(self.feed, self._state, since, window, never,
                                            poll_seconds=POLL_SECONDS):
                yield item
        except StoreError as exc:
            raise Unavailable(f"task store: {exc}") from None
        except OSError as exc:
            raise Unavailable(str(exc)) from None
        except ValueError as exc:
            raise _refuse(400, "invalid_cursor", str(exc)) from None

    async def dispatcher_action(self, action: str, force: bool) -> dict:
        raise self._needs_agent(f"{action.capitalize()}ing the dispatcher")

    async def tasks(self) -> Any:
        return json.loads(taskviews.grouped_json(await self._run(self.store.snapshot)))

    async def task(self, status: str, filename: str) -> dict:
        task_id = filename.removesuffix(_FILENAME_SUFFIX)
        if (status not in STATUSES and status != "any") or not is_valid_task_id(task_id):
            raise _refuse(404, "not_found", f"no {status} task {filename!r}")
        snap = await self._run(self.store.snapshot)
        # Archived too (it left the live store, not the API): answered as the agent does.
        found = await self._run(taskviews.detail, snap, status, task_id, self.store.archive.get)
        if found is None:
            raise _refuse(404, "not_found", f"no {status} task with id {task_id!r}")
        return found

    async def create(self, body: dict, idempotency_key: str | None = None) -> dict:
        new = _validated(NewTask, body)
        await self._check_runtimes([new])
        task = await self._write(self.store.create, new, idempotency_key)
        return task.model_dump(mode="json")

    async def bulk(self, body: dict, idempotency_key: str | None = None) -> dict:
        new = _validated(BulkCreate, body).tasks
        await self._check_runtimes(new, bulk=True)
        tasks = await self._write(self.store.create_many, new, idempotency_key)
        return {"tasks": [t.model_dump(mode="json") for t in tasks]}

    # The project's agent.yaml says which runtimes a task may choose, as the agent would.
    def _config(self) -> AgentConfig:
        try:
            return load_agent_config(self.path / "agent.yaml")
        except ConfigError as exc:
            raise Unavailable(str(exc)) from None

    async def _check_runtimes(self, tasks: list[NewTask], bulk: bool = False) -> None:
        if all(task.runtime is None and task.run_on is None for task in tasks):
            return  # the default needs no agent.yaml read
        if (missing := self._folder_missing()) is not None:
            raise missing
        config = await self._run(self._config)
        problem = unconfigured(tasks, config.configured_runtimes, bulk=bulk)
        if problem is not None:
            raise _refuse(422, "runtime_not_configured", problem)
        problem = unpinnable(tasks, config.executor, bulk=bulk)
        if problem is not None:
            raise _refuse(422, RUN_ON_NEEDS_DASK, problem)

    async def runtimes(self) -> dict:
        if (missing := self._folder_missing()) is not None:
            raise missing
        return await self._run(self._describe_runtimes)

    def _describe_runtimes(self) -> dict:
        config = self._config()
        return describe(config, build_configured(config))

    async def rerun(self, task_id: str) -> dict:
        return (await self._write(self.store.rerun, task_id)).model_dump(mode="json")

    async def cancel(self, task_id: str, reason: str | None = None) -> dict:
        if reason is not None:
            reason = _validated(CancelRequest, {"reason": reason}).reason
        task = await self._write(self.store.get, task_id)  # the folder check comes first
        if task.status is TaskStatus.in_progress:
            raise self._needs_agent("Stopping a running task")
        return (await self._write(self.store.cancel, task_id, reason)).model_dump(mode="json")

    async def source_report(self, task_id: str, body: dict) -> dict:
        asked = _validated(SourceReportRequest, body)
        if not is_valid_task_id(task_id):
            raise _refuse(400, "invalid_id", "task ids are 1-32 characters of a-z and 0-9")
        granted, task = await self._write(self.store.source_report, task_id, asked.key, asked.action, asked.by,
                                          asked.stale_seconds)
        return {"granted": granted, "task": task.model_dump(mode="json")}

    async def workflow_refresh(self) -> dict:
        """Only a running agent polls a WORKFLOW.md's tracker; without one, nothing can."""
        if (self.path / "WORKFLOW.md").is_file():
            raise _refuse(409, "agent_not_running",
                          f"the agent is not running: start `baton-agent --project-dir {self.path}` (it runs the "
                          "project's WORKFLOW.md) and give the project an agent_url")
        raise _refuse(404, "not_found", f"project {self.project.id!r} has no source (add `source:` to it in "
                                        "projects.yaml, or a tracker to a WORKFLOW.md its agent runs)")

    # ----- a person in the loop: the agent's own store operations (backend/review.py), imported
    # when used. Nothing runs here (no dispatcher): a task sent back waits, pending, for whichever
    # agent starts next.

    async def _review(self, fn, *args):
        from ...review import ReviewError
        try:
            return await self._write(fn, self.store, *args)
        except ReviewError as exc:
            raise _refuse(exc.status, exc.code, exc.message) from None

    def _say(self, task_id: str, subtype: str, text: str = "", comments=None) -> None:
        """The person's words in the task's transcript, as the agent writes them."""
        from ...review import human_event
        EventWriter(TaskLogs(self.logs_dir, task_id).events).append(human_event(subtype, text, comments))

    async def message(self, task_id: str, body: dict) -> dict:
        from ...review import post_message
        new = _validated(NewMessage, body)
        posted = await self._review(post_message, task_id, new, lambda _id: False)
        await self._run(self._say, task_id, posted.message.kind, new.text, new.comments)
        return posted.answer()

    async def approve(self, task_id: str, body: dict) -> dict:
        from ...review import approve
        before = (await self._run(self.store.get, task_id)).status
        task = await self._review(approve, task_id, body.get("sha"))
        if before is TaskStatus.plan_review:
            await self._run(self._say, task_id, "plan_approved")
        else:
            await self._run(self._say, task_id, "approved", f"approved {str(task.approved_sha)[:12]} to land")
        return task.model_dump(mode="json")

    async def request_changes(self, task_id: str, body: dict) -> dict:
        from ...review import request_changes
        new = _validated(NewMessage, body)
        task, message = await self._review(request_changes, task_id, new)
        await self._run(self._say, task_id, message.kind, new.text, new.comments)
        return task.model_dump(mode="json")

    async def reject(self, task_id: str, body: dict) -> dict:
        from ...review import reject
        current = await self._run(self.store.get, task_id)
        if current.pr is not None and current.status is TaskStatus.review:
            raise self._needs_agent("Rejecting a task with a pull request (it closes the pull request)")
        task = await self._review(reject, task_id, body.get("reason"))
        await self._run(self._say, task_id, "rejected", (body.get("reason") or "").strip())
        return task.model_dump(mode="json")

    async def diff(self, task_id: str, context: int) -> dict:
        from ... import diff as task_diffs
        task = await self._run(self.store.get, task_id)
        try:
            return await self._run(self._diff, task_diffs, task, context)
        except task_diffs.NoDiff as exc:
            raise _refuse(404, "no_diff", str(exc)) from None

    def _diff(self, task_diffs, task, context: int) -> dict:
        # The base as the agent's ProjectGit names it: the remote's branch when there is a remote.
        from ...agent.basebranch import detect_base_branch
        from ...gitrepo import run_git
        config = self._config() if (self.path / "agent.yaml").is_file() else AgentConfig()
        name = config.base_branch or detect_base_branch(self.path, config.remote)
        has_remote = config.remote in run_git(["remote"], self.path).split()
        base_ref = f"refs/remotes/{config.remote}/{name}" if has_remote else f"refs/heads/{name}"
        return task_diffs.task_diff(self.path, base_ref, task, context)

    async def refresh_pr(self, task_id: str) -> dict:
        raise self._needs_agent("Reading a pull request from GitHub")

    async def events(self, task_id: str, after: int, limit: int) -> dict:
        await self._run(self.store.get, task_id)
        items = read_events(TaskLogs(self.logs_dir, task_id).events, after, limit)
        return {"task_id": task_id, "events": items, "next_after": items[-1]["seq"] if items else after}

    async def open_stream(self, task_id: str, after: int) -> AsyncIterator[bytes]:
        await self._run(self.store.get, task_id)  # an unknown task is a 404 before anything is sent
        return self._follow(task_id, after)

    async def _follow(self, task_id: str, after: int) -> AsyncIterator[bytes]:
        async def never() -> bool:
            return False  # the dashboard's own route notices the browser leaving

        async for text in follow_task(TaskLogs(self.logs_dir, task_id).events, after,
                                      lambda: self.store.get(task_id).status, never):
            yield text.encode()

    async def worktrees(self) -> dict:
        return {"worktrees": [w.to_dict() for w in await self._run(worktree_list, self.path)]}

    async def commits(self, count: int) -> list:
        return [c.to_dict() for c in await self._run(recent_commits, self.path, count)]

    # ----- chat -----
    async def context(self) -> dict:
        if (missing := self._folder_missing()) is not None:
            raise missing
        return await self._run(self._context)

    def _context(self) -> dict:
        from ...chat.context import base_ref, read_context
        config = self._config() if (self.path / "agent.yaml").is_file() else AgentConfig()
        ref = base_ref(self.path, config.base_branch, config.remote)
        project_id = self.project.expected_project_id
        return read_context(project_id, self.path, ref, self.store.list_tasks())

    # ----- plans -----
    # The agent's own plan files and code (backend/plans/) on the project folder. Without an
    # agent there is no follower thread: a plan catches up with its tasks whenever it is read
    # (a pass that finds nothing changed since the last one costs little: follow.Memory).
    @property
    def plans(self):
        from ...plans.follow import Memory
        from ...plans.store import PlanStore
        if getattr(self, "_plan_store", None) is None:
            self._plan_store, self._plan_memory = PlanStore(self.path), Memory()
        return self._plan_store

    async def _plans_call(self, fn, *args):
        from ...plans.store import PlanError
        try:
            return await self._write(fn, *args)
        except PlanError as exc:
            raise _refuse(exc.status, exc.code, exc.message) from None

    def _plans_sync(self) -> None:
        from ...plans import follow
        follow.sync(self.plans, self.store, self._plan_memory)

    def _plan_list(self) -> dict:
        from ...plans import views
        self._plans_sync()
        return views.plan_list(self.plans.listing(), self.store)

    def _plan_answer(self, fn, *args) -> dict:
        from ...plans import views
        self._plans_sync()
        return views.plan_view(fn(*args), self.store)

    async def list_plans(self) -> dict:
        return await self._plans_call(self._plan_list)

    async def create_plan(self, body: dict) -> dict:
        from ...plans.views import NewPlan
        new = _validated(NewPlan, body)
        return await self._plans_call(self._plan_answer, self.plans.create, new.plan, new.chat_id)

    async def get_plan(self, plan_id: str) -> dict:
        return await self._plans_call(self._plan_answer, self.plans.get, plan_id)

    async def update_plan(self, plan_id: str, body: dict) -> dict:
        from ...plans.views import PlanEdit
        edit = _validated(PlanEdit, body)
        return await self._plans_call(self._plan_answer, self.plans.edit, plan_id, edit.revision, edit.plan)

    async def approve_plan(self, plan_id: str, body: dict) -> dict:
        from ...plans.views import PlanApproval
        approval = _validated(PlanApproval, body)
        return await self._plans_call(self._plan_answer, self.plans.approve, plan_id, approval.revision)

    async def reopen_plan(self, plan_id: str) -> dict:
        return await self._plans_call(self._plan_answer, self.plans.reopen, plan_id)

    async def run_plan(self, plan_id: str, body: dict | None = None) -> dict:
        """The tasks are created in the store; they wait, pending, for the project's agent."""
        from ...plans.run import run_plan
        from ...plans.views import PlanRun
        revision = _validated(PlanRun, body).revision if body is not None else None
        return await self._plans_call(self._plan_answer, run_plan, self.plans, self.store, plan_id, revision)

    async def delete_plan(self, plan_id: str) -> None:
        """A ready plan whose tasks exist is recorded as executing and refused (plans.run.delete_plan)."""
        from ...plans.run import delete_plan
        await self._plans_call(delete_plan, self.plans, self.store, plan_id)

    # ----- attachments -----
    # The agent's own code (backend/attachments.py) on the project's data/attachments/.
    @property
    def attachment_store(self):
        from ...attachments import AttachmentStore
        if getattr(self, "_attachment_store", None) is None:
            self._attachment_store = AttachmentStore(self.path / "data")
        return self._attachment_store

    async def _attachments_call(self, call):
        from ...attachments import AttachmentError
        try:
            return await call
        except AttachmentError as exc:
            raise _refuse(exc.status, exc.code, exc.message) from None

    async def upload_attachments(self, task_id: str, content_type: str, body: AsyncIterator[bytes]) -> dict:
        from ...attachments import store_upload
        return await self._attachments_call(
            store_upload(self.store, self.attachment_store, task_id, body, content_type, self._write))

    async def attachments(self, task_id: str) -> dict:
        task = await self._run(self.store.get, task_id)
        return {"attachments": [a.model_dump(mode="json") for a in task.attachments]}

    async def attachment_file(self, task_id: str, name: str) -> bytes:
        task = await self._run(self.store.get, task_id)
        _, path = await self._attachments_call(self._run(self.attachment_store.file, task, name))
        return await self._run(path.read_bytes)


def _validated(model, body: dict):
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _refuse(422, "validation_error",
                      f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
