"""A person in the loop: follow-up messages, approve / request changes / reject (work in review or
a plan in plan_review), and a task's pull request read now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ... import review
from ...models import HumanMessage, NewMessage, Task, TaskStatus
from ...web.errors import ERROR_RESPONSES, ApiError
from ...web.params import TaskIdPath
from ..deps import DispatcherDep, StoreDep
from .tasks import check_id

router = APIRouter(prefix="/agent/tasks", tags=["review"], responses=ERROR_RESPONSES)


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha: Annotated[str | None, Field(
        description="The review_sha the person reviewed; another one gets 409 stale_review. Plans: leave out.",
        pattern=r"^[0-9a-f]{40}$")] = None


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str | None, Field(max_length=4000)] = None


class Posted(BaseModel):
    task: Task
    message: HumanMessage
    delivery: str = Field(description="queued: read at the running task's next turn; started: a new run starts")


def _say(dispatcher, task_id: str, subtype: str, text: str = "", comments=None) -> None:
    dispatcher.ctx.writers.for_task(task_id).append(review.human_event(subtype, text, comments))


def _checked(fn, *args):
    try:
        return fn(*args)
    except review.ReviewError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


@router.post("/{task_id}/messages", status_code=202, response_model=Posted)
async def post_message(task_id: TaskIdPath, body: NewMessage, store: StoreDep, dispatcher: DispatcherDep) -> dict:
    """A follow-up for the agent. Running or pending: queued for its next turn. In review, plan
    review, completed, failed or cancelled: a new run starts with it, in the same session where
    the runtime can continue it (a completed task whose branch is gone starts from the current
    base branch with the earlier context)."""
    check_id(task_id)

    def post() -> review.Posted:
        posted = _checked(review.post_message, store, task_id, body, dispatcher.winding_down)
        _say(dispatcher, task_id, posted.message.kind, body.text, body.comments)
        return posted

    return (await run_in_threadpool(post)).answer()


@router.post("/{task_id}/approve", response_model=Task)
async def approve(task_id: TaskIdPath, store: StoreDep, dispatcher: DispatcherDep, body: Approval | None = None) -> Task:
    """review: land the reviewed commit (rebased and tested again if the base moved; if landing it
    needs the agent to change it, it comes back to review). plan_review: run the task with its plan."""
    check_id(task_id)

    def act() -> Task:
        before = store.get(task_id).status
        task = _checked(review.approve, store, task_id, body.sha if body else None)
        _say(dispatcher, task_id, "plan_approved" if before is TaskStatus.plan_review else "approved",
             "" if before is TaskStatus.plan_review else f"approved {str(task.approved_sha)[:12]} to land")
        return task

    return await run_in_threadpool(act)


@router.post("/{task_id}/request-changes", response_model=Task)
async def request_changes(task_id: TaskIdPath, body: NewMessage, store: StoreDep, dispatcher: DispatcherDep) -> Task:
    """review: the agent gets the message and the line comments in the same session, then the
    task comes back to review. plan_review: another planning turn (a revision)."""
    check_id(task_id)

    def act() -> Task:
        task, message = _checked(review.request_changes, store, task_id, body)
        _say(dispatcher, task_id, message.kind, body.text, body.comments)
        return task

    return await run_in_threadpool(act)


@router.post("/{task_id}/reject", response_model=Task)
async def reject(task_id: TaskIdPath, store: StoreDep, dispatcher: DispatcherDep, body: Rejection | None = None) -> Task:
    """review or plan_review → cancelled, the branch kept; an open pull request is closed."""
    check_id(task_id)
    reason = body.reason if body else None

    def act() -> Task:
        # Rejected first: a pull request is closed only for a task that really was rejected.
        task = _checked(review.reject, store, task_id, reason)
        problem = dispatcher.prs.close(task) if task.pr is not None else None
        _say(dispatcher, task_id, "rejected", (reason or "").strip()
             + (f" (the pull request could not be closed: {problem})" if problem else ""))
        return task

    return await run_in_threadpool(act)


@router.post("/{task_id}/pr/refresh", response_model=Task)
async def refresh_pr(task_id: TaskIdPath, store: StoreDep, dispatcher: DispatcherDep) -> Task | JSONResponse:
    """Read the task's pull request from GitHub now (merged → completed, closed → failed)."""
    check_id(task_id)
    from ...github.client import GitHubError

    def act() -> Task:
        task = store.get(task_id)
        if task.pr is None:
            raise ApiError(409, "no_pull_request", f"task {task_id} has no pull request")
        if task.status is not TaskStatus.review:
            return task
        try:
            return dispatcher.prs.refresh(task_id)
        except GitHubError as exc:
            raise ApiError(502, "github_error", exc.message) from None

    return await run_in_threadpool(act)
