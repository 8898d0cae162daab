"""TaskRun: one claimed task, from worktree to landed commit (or a clear failure).

Order matters for "no work is lost": whatever the agent produced is committed to the task
branch before any worktree is removed; a task is marked completed before its branch is
deleted; a failed or cancelled task keeps its branch (pushed when push_to_remote).

What a run does depends on the task (see review.py for how a person gets it there):
- needs_plan_review without an approved plan: one read-only planning turn; the answer becomes
  the plan and the task waits in plan_review.
- approved in review (approved_sha is the branch's tip): no agent turn; straight to landing.
- otherwise an agent turn (the person's waiting messages in it, in the same session where the
  runtime can continue it), then landing: at once (landing auto), or tested and handed to a
  person (review) or to a GitHub pull request (pr). An approved run whose landing needs a
  feedback turn goes back to review: only what a person saw lands.

A task of the repository's WORKFLOW.md (`ctx.workflow` governs it, see policy.py) runs in its
issue's workspace, kept between its runs, with the workflow's hooks around its turns; its first
turn is the rendered template, and after each turn the issue is read again: still active, the
same session gets a continuation turn (up to max_turns); handed off, the work lands; anything
else stops the run and cancels the task (its work kept on its branch).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..attachments import WORKTREE_DIR
from ..config import AgentConfig
from ..executors.base import Executor, RemoteWork, TurnResult, TurnSpec
from ..executors.local import LocalExecutor
from ..github import GitHubError
from ..gitrepo import GitError
from ..models import PLAN_MAX_CHARS, ErrorReason, HumanMessage, Task, TaskStatus
from ..runtimes.base import AgentEvent, EventKind, Invocation, McpServer, Runtime, RunSummary, TurnRequest, event
from ..store import StoreError, TaskNotFoundError, TaskStore
from ..storeview import worktree_source
from ..workflow.hooks import HookResult, run_hook
from .basetests import BaseTests, BaseVerdict
from .events import EventWriter, EventWriters, TaskLogs
from .leftovers import discard_landing_leftovers, discard_test_leftovers, interrupted_while_landing
from .mergequeue import MergeQueue
from .policy import HookName, IssueStatus, PromptError, WorkflowPolicy
from .ports import PortPool
from .process import ProcessOutcome, StopRequest, run_streaming, tail, task_marker
from .prompts import (attachments_text, commit_message, follow_up_prompt, planning_prompt, revision_prompt,
                      task_prompt, work_prompt)
from .refguard import RefGuard
from .slots import WorkerSlots
from .trackertools import remove_token, tracker_server, write_token
from .workspace import ProjectGit, Workspace, WorkspaceInTheWay

log = logging.getLogger(__name__)

ACTIVITY_WRITE_INTERVAL = 5.0  # seconds between last_activity_at writes while output flows
REMOTE_FILES_MAX = 32 * 1024 * 1024  # bytes of Baton's placed files sent with a remote turn
START_FETCH_MAX_AGE = 2.0  # a worktree may start from a base fetched this recently; landing always fetches


@dataclass
class RunContext:
    """What every TaskRun of one dispatcher shares."""

    store: TaskStore
    config: AgentConfig
    git: ProjectGit
    runtimes: dict[str, Runtime]  # the configured ones, by name (config.configured_runtimes)
    logs_dir: Path
    follow_base: Callable[[str], None]
    ports: PortPool
    slots: WorkerSlots  # max_parallel_workers: held during agent turns only
    wake_dispatcher: Callable[[], None]
    base_tests: BaseTests = field(default_factory=BaseTests)  # verdicts on base commits, per process
    queue: MergeQueue | None = None  # set by the dispatcher once the context exists
    on_change: Callable[[], None] = lambda: None  # what the dispatcher reports changed (a phase, the queue)
    writers: EventWriters | None = None  # one transcript writer per task, shared with the API
    prs: Any = None  # PullRequests (landing pr): opens and reads GitHub pull requests
    workflow: WorkflowPolicy | None = None  # the project's WORKFLOW.md, for the tasks it governs
    executor: Executor = field(default_factory=LocalExecutor)  # where agent turns run (backend/executors/)
    local_executor: Executor = field(default_factory=LocalExecutor)  # for turns that must run here anyway


class AgentFailed(Exception):
    def __init__(self, reason: ErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Stopped(Exception):
    """The run was asked to stop (cancel, forced stop, shutdown)."""


class WorkerLost(Exception):
    """The remote worker running the turn went away: the attempt ends, the task is re-queued."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TaskRun:
    def __init__(self, ctx: RunContext, task: Task, port: int) -> None:
        self.ctx = ctx
        self.task = task
        self.port: int | None = port  # TASK_PORT, held during agent turns only
        self.holds_worker = True  # the claim took a worker slot
        self.stop = StopRequest()
        # Stops the hooks of the run's ending (after_run, before_remove): set by a shutdown or a
        # forced stop, never by a cancel, which lets them have their whole timeout.
        self.ending_stop = StopRequest()
        self.phase = "starting"
        self.runtime_name = task.runtime or ctx.config.runtime
        self.runtime: Runtime | None = ctx.runtimes.get(self.runtime_name)  # None: not configured
        # A WORKFLOW.md task: its worktree is its issue's workspace, kept between its runs.
        self.policy: WorkflowPolicy | None = ctx.workflow if ctx.workflow is not None and ctx.workflow.governs(task) \
            else None
        self._workspace_problem: str | None = None
        self._foreign_workspace = False  # its path held something Baton did not make: never touched
        self._kept_workspace = False  # no policy, but a kept WORKFLOW.md workspace of the task: reused
        workspace = None
        if self.policy is not None:
            try:
                workspace = self.policy.workspace_path(task)
            except Exception as exc:  # noqa: BLE001 - fails this run (in _execute), never the claim loop
                self._workspace_problem = f"no workspace for this task's issue: {exc}"
        self.ws = Workspace(ctx.git, task.id, workspace)
        self.logs = TaskLogs(ctx.logs_dir, task.id)
        self.refs = RefGuard(ctx.git.project, ctx.logs_dir, task.id, self.ws.branch)
        self.events = ctx.writers.for_task(task.id) if ctx.writers is not None else EventWriter(self.logs.events)
        self.landing = task.landing or ctx.config.landing
        self._last_summary: RunSummary | None = None
        self.finished = threading.Event()
        self._last_activity_write = 0.0
        self._started_fields: dict[str, Any] = {}
        self._earlier_branch = task.branch is not None
        self._landed = False  # completed: cleanup() removes the worktree and the branch
        self._announced: frozenset[tuple[str, str]] = frozenset()  # attachments the agent was told of
        self._said_tools_local = False
        self._turn_phase = ""  # a remote turn's phase, once a worker starts it

    # ----- entry point --------------------------------------------------------------------

    def execute(self) -> None:
        try:
            try:
                self._execute()
            finally:
                if self.ctx.queue is not None:
                    self.ctx.queue.forget(self)  # a place kept for a fix turn
                self._release_worker()
        except Stopped:
            self._end_stopped()
        except WorkerLost as exc:
            self._end_lost(exc.message)
        except AgentFailed as exc:
            self._end_failed(exc.reason, exc.message)
        except Exception as exc:  # noqa: BLE001 - a bug or git failure fails the task, not the dispatcher
            log.exception("task %s: internal error", self.task.id)
            self._end_failed("internal", f"{type(exc).__name__}: {exc}")
        finally:
            self.finished.set()

    def _execute(self) -> None:
        task, ctx = self.task, self.ctx
        # One per start, so a transcript that runs on across reruns can mark where each run began.
        self.events.append(event(EventKind.baton, subtype="attempt_started", attempt=task.runs,
                                 text=f"run {task.runs} started (attempt {task.attempts} since the last rerun)"))
        if self.runtime is None:
            raise AgentFailed("runtime_unavailable", f"runtime {self.runtime_name!r} is not configured for this project "
                                                     f"(agent.yaml); configured: {', '.join(ctx.runtimes)}")
        if self._workspace_problem is not None:
            raise AgentFailed("internal", self._workspace_problem)
        planning = task.needs_plan_review and not task.plan_approved
        continuing, start = self._prepare()
        if planning:
            self._plan(continuing, start)
            return

        # Approved in review: exactly the commit the person saw (rebased if the base moved).
        approved = task.approved_sha is not None and self.ws.head() == task.approved_sha
        if approved:
            self.say(f"approved in review: landing {task.approved_sha[:12]} without another agent turn")
        elif task.approved_sha is not None and not task.inbox:
            # E.g. a landing interrupted after its rebase: the work is done, but not what was seen.
            self.say(f"approved {task.approved_sha[:12]}, but {self.ws.branch} is at {self.ws.head()[:12]}: "
                     "it goes back to review instead of landing")
        else:
            self._work_turns(continuing)
        if not self._commit_work(commit_message(task)) and not approved:
            self._complete(None, no_changes=True)
            return
        self._land(approved)

    def _prepare(self) -> tuple[bool, str]:
        """The worktree on task/<id>, Baton's files placed. Returns (continuing an earlier
        branch, the commit it starts from)."""
        task, ctx = self.task, self.ctx
        self._phase("preparing worktree")
        ctx.git.fetch_base(max_age=START_FETCH_MAX_AGE)
        self._fetch_dependencies()
        if self.policy is None:
            kept = Workspace.kept_at(ctx.git, task.id, task.worktree)
            if kept is not None:  # e.g. baton-agent --no-workflow: the branch is checked out there
                self.ws = Workspace(ctx.git, task.id, kept)
                self._kept_workspace = True
        try:
            continuing = self.ws.create(earlier_branch=self._earlier_branch,
                                        reuse=self.policy is not None or self._kept_workspace)
        except WorkspaceInTheWay as exc:
            self._foreign_workspace = True
            raise AgentFailed("internal", str(exc)) from None
        if self.refs.take_and_restore(self.ctx.git.admin_lock):  # left by a run that crashed
            self.say("put back refs an earlier, interrupted run of this task had moved")
        if self.policy is not None:
            self._workspace_ready(continuing)
        elif self._kept_workspace and interrupted_while_landing(self.ws):
            discard_landing_leftovers(self.ws)  # the tests' leftovers, never the agent's work
        self.ws.place_files()
        # Recorded together with the agent's pid, in one write, once it starts.
        self._started_fields = dict(branch=self.ws.branch, worktree=str(self.ws.path), port=self.port,
                                    log_path=str(self.logs.raw), error_reason=None, error_message=None,
                                    agent_runtime=self.runtime_name)
        outside = self.policy is not None or self._kept_workspace
        where = str(self.ws.path) if outside else self.ws.path.name
        self.say(f"worktree {where} on {self.ws.branch}"
                 + (" (kept from an earlier run)" if outside and not self.ws.created_now
                    else " (continuing)" if continuing else "")
                 + f"; runtime {self.runtime_name}" + (f", model {task.model}" if task.model else ""))
        if self.policy is not None:
            self._hook_or_fail("before_run")
        return continuing, self.ws.head()

    def _workspace_ready(self, continuing: bool) -> None:
        """A workflow task's worktree just made or kept: a kept one interrupted while landing is
        put back to its branch; a new one gets the after_create hook (and is removed again
        when that fails, so the next run makes it, and runs the hook, anew)."""
        if not self.ws.created_now:
            if interrupted_while_landing(self.ws):
                discard_landing_leftovers(self.ws)  # the tests' leftovers, never the agent's work
            return
        result = self._hook("after_create")
        if result is None or result.ok:
            return
        try:
            self.ws.remove()
            if not continuing:
                self.ctx.git.delete_branch(self.ws.branch, maybe_pushed=False)  # nothing of its own yet
        except GitError as exc:
            log.warning("task %s: worktree not removed after its after_create hook failed: %s", self.task.id, exc)
        self._hook_failed(result)

    def _fetch_dependencies(self) -> None:
        """A dependency's landed commit must be in the base this task starts from. A pull request
        merged on GitHub a moment ago is newer than a recent fetch: then fetch again, now."""
        git = self.ctx.git
        landed = [dep.commit_sha for dep in self._dependencies() if dep.commit_sha]
        if not landed or all(git.is_ancestor(sha, git.base_ref) for sha in landed):
            return
        git.fetch_base(max_age=0)
        missing = [sha[:12] for sha in landed if not git.is_ancestor(sha, git.base_ref)]
        if missing:
            self.say(f"the base {git.base_ref} does not hold the landed work of its dependencies "
                     f"({', '.join(missing)}); starting from it anyway")

    def _dependencies(self) -> list[Task]:
        """The tasks this one depends on, as the store holds them now (live or archived)."""
        found = []
        for dep_id in self.task.depends_on:
            try:
                found.append(self.ctx.store.get(dep_id))
            except TaskNotFoundError:
                continue
        return found

    def _same_session(self) -> str | None:
        """The session a person's message continues: the task's latest, on this runtime."""
        task = self._current()
        return task.session_id if task.agent_runtime == self.runtime_name else None

    def _opening_turn(self, continuing: bool) -> str | None:
        """The run's first agent turn. Returns the workflow's rendered prompt when that was
        the turn's prompt (the unattended path: continuation turns may follow), else None."""
        task, ctx = self.task, self.ctx
        messages = self._take_inbox()
        landed_before = not continuing and task.base_sha is not None  # a follow-up of a completed task
        deps = self._dependencies()
        fresh = work_prompt(task, ctx.config, continuing=continuing, messages=messages, landed_before=landed_before,
                            dependencies=deps)
        # A completed task's branch is gone and its runtime's state was cleaned up with it: a
        # follow-up there starts a new session given the whole context instead.
        session = self._same_session() if messages and continuing else None
        if session is not None:
            # A person's follow-up goes to the session that did the work; a fresh session gets
            # the whole context if that one cannot be continued.
            self._agent_turn(follow_up_prompt(messages, ctx.config), resume=session, fresh=fresh)
            return None
        # A new attempt on a kept branch continues the earlier attempt's session where the
        # runtime can (and falls back to a fresh one itself); the prompt says what to do anyway.
        earlier = task.session_id if (continuing and task.agent_runtime == self.runtime_name
                                      and self.runtime.resume_after_restart and not messages) else None
        self._started_fields["session_id"] = earlier  # not an earlier attempt's session of another runtime
        templated = None
        if messages or task.plan_approved or landed_before:
            prompt = fresh  # a person's words, an approved plan, a follow-up: as without a workflow
        elif self.policy is not None:
            prompt = templated = self._first_prompt()
        else:
            prompt = task_prompt(task, ctx.config, continuing=continuing, dependencies=deps)
        self._agent_turn(prompt, resume=earlier)
        self._started_fields.pop("session_id", None)
        return templated

    # ----- a workflow task's turns (policy.py) -----------------------------------------------

    def _work_turns(self, continuing: bool) -> None:
        """The agent's turns before landing; for a workflow task, continued while its issue stays
        active, with the after_run hook after the last of them, however they ended."""
        if self.policy is None:
            self._opening_turn(continuing)
            return
        try:
            if self._handed_off_already():
                return
            first = self._opening_turn(continuing)
            if first is not None:
                self._continue_turns(first)
        finally:
            self._after_run()

    def _handed_off_already(self) -> bool:
        """A run of work done before (an earlier run, or commits on the branch) whose issue is in a
        handoff state already (e.g. a landing interrupted by Ctrl+C): it lands without another
        turn. Asked once; a first run with nothing on its branch starts its turns as usual."""
        assert self.policy is not None
        if self.task.runs <= 1 and not self.ws.has_own_commits():
            return False
        self._phase("asking the tracker")
        check = self.policy.issue_status(self._current())
        self._check_stop()
        if check.status is not IssueStatus.handoff:
            return False
        self.say(f"{self._identifier()} is in {check.state or 'a handoff state'} already: "
                 "landing its work without another turn")
        self._update(**self._started_fields)  # where it runs (no agent start records it this time)
        return True

    def _first_prompt(self) -> str:
        assert self.policy is not None
        try:
            prompt = self.policy.first_prompt(self._current())
        except PromptError as exc:
            raise AgentFailed("template_error", str(exc)) from None
        max_turns = self.policy.max_turns()
        self.say(f"turn 1 of {max_turns}: the workflow's prompt for {self._identifier()}")
        self.policy.turn_started(self._current(), 1)
        return prompt

    def _continue_turns(self, first: str) -> None:
        """Symphony's continuation: after each turn ask the tracker where the issue is now."""
        assert self.policy is not None
        ident, turn = self._identifier(), 1
        while True:
            self._check_stop()
            self._phase("asking the tracker")
            check = self.policy.issue_status(self._current())
            self._check_stop()
            state = check.state
            if check.status is IssueStatus.handoff:
                self.say(f"{ident} moved to {state or 'a handoff state'}: the agent handed it over; landing")
                return
            if check.status in (IssueStatus.terminal, IssueStatus.other):
                reason = check.reason or (f"{ident} moved to {state}" if state else f"{ident} left the active states")
                self.say(f"{ident} is {state or 'no longer active'}: stopping ({reason}); "
                         f"its work is kept on {self.ws.branch}")
                try:  # kept by the run's own `cancelled` write, as a person's cancel reason is
                    self.ctx.store.update(self.task.id, expect={TaskStatus.in_progress}, cancel_reason=reason)
                except StoreError as exc:
                    log.warning("task %s: cancel reason not recorded: %s", self.task.id, exc)
                # Recorded as the sync engine records its own stops: an issue that becomes active
                # again then reruns this task (the engine reruns only tasks stopped that way).
                key = f"stopped:{self.task.runs}"
                try:
                    self.ctx.store.source_report(self.task.id, key, "claim", "run", 0)
                    self.ctx.store.source_report(self.task.id, key, "done", "run", 0)
                except StoreError as exc:
                    log.warning("task %s: %s not recorded: %s", self.task.id, key, exc)
                self.stop.set("cancelled")
                raise Stopped()
            max_turns = self.policy.max_turns()  # as the workflow says now
            where = f"still in {state}" if state else "still active (its tracker could not be asked)"
            if turn >= max_turns:
                raise AgentFailed("max_turns", f"{turn} turns ran and {ident} is {where}; "
                                               f"its work is kept on {self.ws.branch}")
            turn += 1
            self.say(f"turn {turn} of {max_turns}: {ident} is {where}")
            self.policy.turn_started(self._current(), turn)
            try:
                prompt = self.policy.continuation_prompt(self._current(), turn, max_turns, state)
            except PromptError as exc:  # agent.continuation_prompt is a template too
                raise AgentFailed("template_error", str(exc)) from None
            whole = first.rstrip("\n") + "\n\n" + prompt  # for a new session, should this one be gone
            session = self._same_session()
            if session is not None:
                self._agent_turn(prompt, resume=session, fresh=whole)
            else:
                self._agent_turn(whole, resume=None)

    def _identifier(self) -> str:
        source = self.task.source
        return source.identifier if source is not None else self.task.id

    def _hook(self, name: HookName, stop: StopRequest | None = None) -> HookResult | None:
        """Run the workflow's hook `name` in the worktree, if it has one; say how it went."""
        assert self.policy is not None
        spec = self.policy.hook(name)
        if spec is None or not self.ws.path.is_dir():
            return None
        self._phase(f"hook {name}")
        env = {**self._env(), **self.policy.hook_env(self.task)}
        if self.port is None:
            env.pop("TASK_PORT", None)  # the run let its port go (an ending): no port to name
        result = run_hook(spec, cwd=self.ws.path, env=env, log_file=self.logs.hooks,
                          stop=stop or self.stop, marker=self._marker())
        tail = result.output_tail.strip()
        if len(tail) > 1000:
            tail = "…" + tail[-1000:]
        self.events.append(event(EventKind.baton, subtype="hook", ok=result.ok,
                                 duration_ms=int(result.seconds * 1000),
                                 text=f"hook {name}: {result.summary()}" + (f"\n{tail}" if tail else "")))
        if not result.ok:
            log.warning("task %s: hook %s %s", self.task.id, name, result.summary())
        return result

    def _hook_or_fail(self, name: HookName) -> None:
        result = self._hook(name)
        if result is not None and not result.ok:
            self._hook_failed(result)

    def _hook_failed(self, result: HookResult) -> None:
        if result.stopped:
            raise Stopped()  # the task was asked to stop: that is the ending, not the hook
        what = (f"timed out after {result.timeout:g}s" if result.timed_out
                else "could not run" if result.exit_code is None else f"failed (exit {result.exit_code})")
        tail = result.output_tail.strip()
        raise AgentFailed("hook_failed", f"{result.name} hook {what}" + (f": {tail[-1000:]}" if tail else ""))

    def _ending_hook(self, name: HookName) -> None:
        """after_run / before_remove: a failure is said and logged, never the task's outcome.
        A run already asked to stop (a cancel) still gives the hook its whole timeout; a
        shutdown or a forced stop ends it (ending_stop), so it never holds the agent's exit."""
        try:
            self._hook(name, stop=self.ending_stop)
        except Exception:  # noqa: BLE001 - the ending goes on whatever the hook did
            log.exception("task %s: hook %s", self.task.id, name)

    def _after_run(self) -> None:
        if self.stop.is_set() and self.stop.reason != "cancelled":
            # Shutting down (or a forced stop): the task goes back to pending at once, its
            # worktree kept; the next run's before_run follows.
            if self.policy is not None and self.policy.hook("after_run") is not None:
                self.say(f"hook after_run skipped: stopping ({self.stop.reason})")
            return
        self._ending_hook("after_run")

    def _deliver_waiting(self) -> bool:
        """Messages that came while the agent worked: another turn of its session. True if any."""
        if not self._current().inbox:
            return False
        messages = self._take_inbox()
        if not messages:
            return False
        if not self.holds_worker:  # they came while it waited in the merge queue
            self._take_worker()
        fresh = work_prompt(self.task, self.ctx.config, continuing=True, messages=messages,
                            dependencies=self._dependencies())
        session = self._same_session()
        if session is not None:
            self._agent_turn(follow_up_prompt(messages, self.ctx.config), resume=session, fresh=fresh)
        else:
            self._agent_turn(fresh, resume=None)
        self._commit_work(commit_message(self.task))
        return True

    def _land(self, approved: bool) -> None:
        task, ctx = self.task, self.ctx
        feedback_turns = 0
        while True:
            self._check_stop()
            if self._deliver_waiting():
                approved = False
            publish = self.landing == "auto" or approved
            # The agent is done: its worker and TASK_PORT go to the next task while this one
            # waits in the merge queue (tests take ports of their own).
            self._phase("waiting to land" if publish else "testing for review")
            result = ctx.queue.land(self, on_enqueued=self._release_worker, publish=publish)
            if result is None:
                raise Stopped()
            if result.landed:
                # Recorded completed by the queue, in landing order. Before any stop check: a
                # landing already under way when a cancel came counts.
                return
            self._check_stop()
            if result.ready:
                if self._current().inbox:
                    continue  # a person wrote while it was tested: the agent reads that first
                self._to_review(result.sha, result.base)
                return
            if result.feedback is None or (result.charged and feedback_turns >= ctx.config.max_merge_retries):
                raise AgentFailed(result.reason or "internal", result.message)
            if result.charged:
                feedback_turns += 1
                self.say(f"feedback turn {feedback_turns} of {ctx.config.max_merge_retries}: {result.message}")
            else:
                self.say(f"fix turn (not counted against max_merge_retries): {result.message}")
            if approved and self.landing != "auto":
                self.say("the approved work needs changes to land: it goes back to review after this turn")
                approved = False
            self._take_worker()
            fresh = (work_prompt(task, ctx.config, continuing=True, messages=[], dependencies=self._dependencies())
                     .rstrip("\n") + "\n\n" + result.feedback)  # for a new session, should this one be gone
            self._agent_turn(result.feedback, resume=self._same_session(), fresh=fresh)
            self._commit_work(commit_message(task))

    # ----- plans and reviews ----------------------------------------------------------------

    def _plan(self, continuing: bool, start: str) -> None:
        """A read-only planning turn (the CLI's permission system refuses writes); its answer is
        the plan a person reviews. Baton checks the worktree anyway and discards any change."""
        task, ctx = self.task, self.ctx
        messages = self._take_inbox()
        session = self._same_session() if (messages and task.plan) else None
        fresh = planning_prompt(task, ctx.config, messages=messages, dependencies=self._dependencies())
        before = self.ws.status_text()
        if session is not None:
            self._agent_turn(revision_prompt(messages), resume=session, fresh=fresh, read_only=True)
        else:
            self._agent_turn(fresh, resume=None, read_only=True)
        summary = self._last_summary
        plan = ((summary.result.text if summary and summary.result and summary.result.text else None)
                or (summary.last_text if summary else None) or "").strip()
        if self.ws.status_text() != before or not self.ws.on_branch() or self.ws.head() != start:
            self.say("the planning turn changed the worktree although it ran read-only; Baton discards the change")
        self._phase("finishing")
        try:
            self.ws.remove()
        except GitError as exc:
            log.warning("task %s: worktree not removed after planning: %s", task.id, exc)
        ref = f"refs/heads/{self.ws.branch}"
        if self.ctx.git.ref_exists(ref) and self.ctx.git.rev(ref) != start:
            self.ctx.git.git(["update-ref", ref, start])  # a plan changes no code
        if not continuing:
            self.ctx.git.delete_branch(self.ws.branch)  # nothing of its own: the work run starts afresh
        if not plan:
            raise AgentFailed("agent_error", "the planning turn ended without a plan (no final answer)")
        if len(plan) > PLAN_MAX_CHARS:
            plan = plan[:PLAN_MAX_CHARS - 1] + "…"
        self.say("plan ready for review")
        self.ctx.store.transition(task.id, TaskStatus.plan_review, expect={TaskStatus.in_progress},
                                  plan=plan, plan_approved=False, agent_pid=None, commit_sha=None)

    def _to_review(self, sha: str, base: str) -> None:
        """Tested on the base and not landed: the branch waits for a person (or a pull request)."""
        task, ctx = self.task, self.ctx
        self._phase("finishing")
        fields: dict[str, Any] = {"review_sha": sha, "review_base": base, "approved_sha": None}
        if self.landing == "pr":
            fields["pr"] = self._open_pull_request(sha)
            self.say(f"pull request #{fields['pr'].number} open: {fields['pr'].url}")
        else:
            self.say(f"tested {sha[:12]} on {ctx.config.base_branch} {base[:12]}; waiting for review")
        note = self._keep_work(f"wip({task.id}): {task.title} [review]", push=self.landing != "pr",
                               remove=self.policy is None)
        if note:
            fields["error_message"] = note
        self.ctx.store.transition(task.id, TaskStatus.review, expect={TaskStatus.in_progress},
                                  agent_pid=None, commit_sha=None, **fields)

    def _open_pull_request(self, sha: str):
        if self.ctx.prs is None:
            raise AgentFailed("pr_failed", "landing is pr, but this agent has no GitHub settings")
        if not self.ctx.git.has_remote:
            raise AgentFailed("pr_failed", f"landing is pr, but the project has no remote {self.ctx.config.remote!r} "
                                           "to push the branch to")
        error = self.ctx.git.push_branch(self.ws.branch)
        if error:
            raise AgentFailed("pr_failed", f"could not push {self.ws.branch}: {error}")
        try:
            return self.ctx.prs.open_for(self._current(), self.ws.branch, self.ctx.config.base_branch)
        except GitHubError as exc:
            raise AgentFailed("pr_failed", f"could not open the pull request: {exc}") from None

    def _take_inbox(self) -> list[HumanMessage]:
        """The messages waiting for the agent, taken out of the inbox in one write (a message
        posted meanwhile stays for the next turn)."""
        taken: list[HumanMessage] = []

        def decide(task: Task):
            if task.status is not TaskStatus.in_progress:
                raise StoreError(f"task {task.id} is {task.status.value}, not running")
            taken[:] = task.inbox
            return None, {"inbox": []}

        if not self._current().inbox:
            return []
        self.task = self.ctx.store.revise(self.task.id, decide)
        if taken:
            self.say(f"the agent reads {len(taken)} message{'s' if len(taken) > 1 else ''} from a person")
        return taken

    # ----- worker slot and port -----------------------------------------------------------

    def _release_worker(self) -> None:
        if self.port is not None:
            self.ctx.ports.release(self.port)
            self.port = None
        if self.holds_worker:
            self.holds_worker = False
            self.ctx.slots.give()
            self.ctx.wake_dispatcher()  # claim the next pending task now

    def _take_worker(self) -> None:
        self._phase("waiting for a worker")
        if not self.ctx.slots.take(self.stop):
            raise Stopped()
        self.holds_worker = True
        port = self.ctx.ports.acquire_wait(self.task.id, self.stop.is_set)
        if port is None:
            raise Stopped()
        self.port = port

    # ----- the coding agent ---------------------------------------------------------------

    def _agent_turn(self, prompt: str, resume: str | None, fresh: str | None = None, read_only: bool = False) -> None:
        """One agent turn. With `fresh`: if the session `resume` names cannot be continued (the
        turn fails before any session started), a new session gets `fresh` instead."""
        if resume is not None and self._turn_executor(read_only).remote:
            # A session lives in the CLI's state on the box, under the folder, that ran it; a
            # remote turn gets a new worktree (maybe on another box): it starts a new session.
            prompt, resume = fresh or prompt, None
        try:
            self._one_turn(prompt, resume, read_only)
        except AgentFailed as exc:
            summary = self._last_summary
            if resume is None or fresh is None or exc.reason != "agent_error" or (summary and summary.session_id):
                raise
            self.say(f"could not continue the agent's session {resume} ({exc.message[:300]}); "
                     "starting a new session with the whole context")
            self._one_turn(fresh, None, read_only)

    def _one_turn(self, prompt: str, resume: str | None, read_only: bool) -> None:
        self._phase("planning (read-only)" if read_only else "agent running")
        assert self.runtime is not None
        executor = self._turn_executor(read_only)
        self.logs.runtime_dir.mkdir(parents=True, exist_ok=True)
        prompt, images = self._attachments(prompt, resume)
        summary = self._last_summary = RunSummary()
        remote = executor.remote
        if executor is not self.ctx.executor and not self._said_tools_local:
            self.say(f"this task's tracker tools need this host: its turns run here, not on a "
                     f"{self.ctx.executor.name} worker")
            self._said_tools_local = True
        if remote:
            self._commit_work(commit_message(self.task))  # the worker sees only what is committed
            pin = self._current().run_on
            self._turn_phase = self.phase
            self._phase(f"waiting for a worker{f' on {pin}' if pin else ''}")  # until one starts it
        attempt = f"{self.task.id}-r{self.task.runs}-{uuid.uuid4().hex[:8]}"

        def record(ev: AgentEvent) -> None:
            self._record(self.events.append(ev), summary)

        spec: TurnSpec | None = None
        result: TurnResult | None = None
        try:
            request = TurnRequest(prompt=prompt, cwd=self.ws.path, env=self._env(), resume=resume,
                                  model=self.task.model, scratch=self.logs.runtime_dir, read_only=read_only,
                                  images=images, mcp_servers=[] if read_only or remote else self._mcp_servers())
            spec = TurnSpec(task_id=self.task.id, attempt=attempt, runtime_name=self.runtime_name,
                            runtime=self.runtime, request=request, limits=self.runtime.limits, stop=self.stop,
                            raw_log=self.logs.raw, stderr_log=self.logs.stderr, marker=self._marker(),
                            summary=summary, record=record, on_start=self._agent_started,
                            check=self._check_invocation, say=self.say,
                            remote=self._remote_work(attempt, images) if remote else None)
            try:
                result = executor.run_turn(spec)
            finally:
                if spec.remote is not None:
                    self._take_remote_work(spec.remote, result)
        finally:
            # The token lives as long as the turn: a server left behind can no longer act.
            remove_token(self.logs.runtime_dir)
        self._account(summary, result.usage)
        if result.lost is not None:
            raise WorkerLost(result.lost)
        if result.error is not None:
            self._check_stop()
            raise AgentFailed("internal", result.error)
        moved = self._undo_ref_moves()
        if result.moved:
            moved = (f"the agent changed git refs outside its branch on {result.worker or 'the worker'}: "
                     f"{'; '.join(result.moved)}")
            self.say(moved)
        self._check_stop()
        if moved:
            raise AgentFailed("agent_moved_refs", moved)
        self._judge(result.outcome, summary)

    def _turn_executor(self, read_only: bool) -> Executor:
        """Where this turn runs. A task's tracker tools talk to this host's loopback gateway, which
        no worker reaches (and a WORKFLOW.md task hands its issue over with them): its turns run
        here even when the project's run elsewhere."""
        executor = self.ctx.executor
        if executor.remote and not read_only and self.ctx.store.grants.get(self.task.id) is not None:
            return self.ctx.local_executor
        return executor

    def _check_invocation(self, inv: Invocation) -> None:
        self._refuse_secrets_in(inv.argv)
        if self.policy is not None and Path(inv.cwd).resolve() != self.ws.path.resolve():
            # Symphony's invariant: the agent works in its issue's workspace, nowhere else.
            raise AgentFailed("internal", f"refusing to start {self.runtime_name} in {inv.cwd}: "
                                          f"not the task's workspace {self.ws.path}")

    # ----- a turn on another machine (executors/dask) -----------------------------------------

    def _remote_work(self, attempt: str, images: list[Path]) -> RemoteWork:
        """The turn's start, pushed to its own attempt branch on the origin, and Baton's files for
        the worker's worktree (their bytes: a worker shares no folder with this host)."""
        git, config = self.ctx.git, self.ctx.config
        if not git.has_remote:
            raise AgentFailed("runtime_unavailable", f"executor: {self.ctx.executor.name} needs the project's remote "
                                                     f"{config.remote!r}: workers get their work only through git")
        url = git.git(["remote", "get-url", config.remote]).strip()
        if "://" in url and urlsplit(url).password:
            raise AgentFailed("runtime_unavailable", f"the URL of the remote {config.remote!r} carries a password: "
                                                     "workers must not get it (it would be on their command lines); "
                                                     "give each box its own credentials (an SSH key, a credential "
                                                     "helper) and drop it from the URL")
        if "://" not in url and ":" not in url.split("/")[0]:
            url = str((git.project / url).resolve())  # a path relative to the project means nothing elsewhere
        start = self.ws.head()
        branch = f"baton/attempts/{self.task.id}/{attempt}"
        self._drop_attempt_branches()
        try:
            git.git(["push", "--quiet", "--force", config.remote, f"{start}:refs/heads/{branch}"], self.ws.path)
        except GitError as exc:
            raise WorkerLost(f"could not push the turn's start to {config.remote} ({branch}): "
                             f"{exc.stderr.strip()[-500:]}") from None
        files: dict[str, bytes] = {}
        total = 0
        top = self.ws.path.resolve()
        for rel in self.ws.placed or []:
            # Read from where Baton placed them from, never through what the worktree holds now:
            # a link the agent made there must not send this host's files to another box.
            path = self.ws.path / rel
            source = worktree_source(git.project, rel) if rel in config.symlink_files else path
            try:
                inside = source is not path or (not path.is_symlink() and path.resolve().is_relative_to(top))
                data = source.read_bytes() if inside and source.is_file() else None
            except OSError:
                data = None
            if data is None or total + len(data) > REMOTE_FILES_MAX:
                continue
            files[rel] = data
            total += len(data)
        settings = config.dask
        hidden = config.hidden_env_vars | self._workflow_hidden()
        forward = {name: os.environ[name] for name in (settings.forward_env if settings else [])
                   if name in os.environ and name not in hidden}
        return RemoteWork(origin=url, start_sha=start, branch=branch, base=git.base or "", files=files,
                          commit_message=commit_message(self.task),
                          images=[str(p.relative_to(self.ws.path)) for p in images],
                          run_on=self._current().run_on,
                          hidden_env=sorted(hidden),
                          forward_env=forward)

    def _drop_attempt_branches(self) -> None:
        """Earlier attempts' branches of this task still on the origin (this host crashed mid-turn,
        or a lost worker's run came back and pushed): none of them is ever read again."""
        git, remote = self.ctx.git, self.ctx.config.remote
        try:
            listed = git.git(["ls-remote", "--heads", remote, f"refs/heads/baton/attempts/{self.task.id}/*"])
            stale = [line.split("\t", 1)[1] for line in listed.splitlines() if "\t" in line]
            if stale:
                git.git(["push", "--quiet", remote, *[f":{ref}" for ref in stale]])
        except GitError as exc:
            log.warning("task %s: could not drop earlier attempt branches: %s", self.task.id, exc)

    def _take_remote_work(self, work: RemoteWork, result: TurnResult | None) -> None:
        """Bring the commit the turn's result names into the task's worktree: only that commit,
        only from this attempt's branch, and only if it builds on the turn's start. Then the
        attempt's branch goes (a worker that comes back later cannot push to it: its push needs
        the branch to be there). A fetch that fails leaves it (the next attempt drops it)."""
        git, remote = self.ctx.git, self.ctx.config.remote
        head = result.head if result is not None and result.lost is None else None
        if head and head != work.start_sha:
            local = f"refs/baton/attempts/{work.branch.rsplit('/', 1)[1]}"
            try:
                git.fetch(f"+refs/heads/{work.branch}:{local}")
            except GitError as exc:
                raise WorkerLost(f"could not fetch the remote turn's work from {work.branch}: "
                                 f"{exc.stderr.strip()[-500:]}") from None
            try:
                tip = git.rev(local)
                if tip != head:
                    raise AgentFailed("internal", f"{work.branch} on {remote} is at {tip[:12]}, not the "
                                                  f"commit {head[:12]} the worker reported")
                if not git.is_ancestor(work.start_sha, head):
                    raise AgentFailed("agent_moved_refs", f"the remote turn's commit {head[:12]} does not build "
                                                          f"on its start {work.start_sha[:12]}")
                git.git(["reset", "--hard", "--quiet", head], self.ws.path)
                self.say(f"took {head[:12]} from {result.worker or 'the worker'} ({work.branch})")
            except GitError as exc:
                raise AgentFailed("internal", f"could not take the remote turn's work from {work.branch}: "
                                              f"{exc.stderr.strip()[-500:]}") from None
            finally:
                try:
                    git.git(["update-ref", "-d", local])
                except GitError:
                    pass
        try:
            git.git(["push", "--quiet", remote, "--delete", work.branch])
        except GitError as exc:
            log.warning("task %s: could not delete %s on %s: %s", self.task.id, work.branch, remote, exc)

    def _mcp_servers(self) -> list[McpServer]:
        """The task's tracker tools, when its source granted them: the token goes to a file in
        the scratch folder, the server is told only the file's path."""
        grant = self.ctx.store.grants.get(self.task.id)  # kept beside the store (toolgrants.py)
        if grant is None:
            return []
        token_file = write_token(self.logs.runtime_dir, grant.token)
        return [tracker_server(grant, token_file, self._marker())]

    def _attachments(self, prompt: str, resume: str | None) -> tuple[str, list[Path]]:
        """Place the task's attached files (an upload since the last turn included) and name them:
        in every new session, and in a continued one when they changed. Images go to the runtime."""
        placed = {rel.rsplit("/", 1)[1] for rel in self.ws.place_attachments()}
        attached = [a for a in self._current().attachments if a.name in placed]
        seen = frozenset((a.name, a.sha256) for a in attached)
        if not attached or (resume is not None and seen == self._announced):
            return prompt, []
        if seen != self._announced:
            self.say(f"{len(attached)} attached file{'s' if len(attached) > 1 else ''} in {WORKTREE_DIR}/")
        self._announced = seen
        images = [self.ws.path / WORKTREE_DIR / a.name for a in attached if a.image]
        return prompt.rstrip("\n") + "\n\n" + attachments_text(attached), images

    def _refuse_secrets_in(self, argv: list[str]) -> None:
        """Every local user can read a process's arguments: a secret (the value of a variable
        named in secret_env_vars) written into a runtime's extra_args or config never gets there."""
        for name in set(self.ctx.config.secret_env_vars) | self._workflow_hidden():
            value = os.environ.get(name, "")
            if len(value) >= 4 and any(value in arg for arg in argv):
                raise AgentFailed("runtime_unavailable", f"refusing to start {self.runtime_name}: the value of {name} "
                                  f"(listed in secret_env_vars) is in its command line; check "
                                  f"{self.runtime_name}.extra_args and {self.runtime_name}.config in agent.yaml")

    def _agent_started(self, pid: int | None, worker: str | None = None) -> None:
        """The CLI started: here (its pid: Baton's to stop after a crash), or on a worker (named on the card)."""
        if worker is not None and self._turn_phase:
            self._phase(self._turn_phase)
        self._update(agent_pid=pid, worker=worker, **{**self._started_fields, "port": self.port})
        self._last_activity_write = time.monotonic()

    def _record(self, ev: AgentEvent, summary: RunSummary) -> None:
        summary.add(ev)
        now = time.monotonic()
        # Throttled: the session id and activity time are written at most every few seconds
        # while the agent runs, and always when it ends (_account).
        if now - self._last_activity_write > ACTIVITY_WRITE_INTERVAL:
            self._update(last_activity_at=ev.ts, **self._session_fields(summary))
            self._last_activity_write = now

    def _account(self, summary: RunSummary, usage: AgentEvent | None) -> None:
        """Add this run's cost and tokens to the task's totals (feedback turns add up). A turn
        killed before its result still counts what it used (the runtime's usage so far)."""
        result = summary.result or usage
        if result is None:
            self._update(agent_pid=None, **self._session_fields(summary))
            return
        current = self._current()

        def plus(old: Any, new: Any) -> Any:
            return new if old is None else (old if new is None else old + new)

        self._update(
            cost_usd=plus(current.cost_usd, result.cost_usd),
            cost_estimated=current.cost_estimated or bool(result.cost_estimated and result.cost_usd is not None),
            input_tokens=plus(current.input_tokens, result.input_tokens),
            output_tokens=plus(current.output_tokens, result.output_tokens),
            cache_read_tokens=plus(current.cache_read_tokens, result.cache_read_tokens),
            cache_creation_tokens=plus(current.cache_creation_tokens, result.cache_creation_tokens),
            num_turns=plus(current.num_turns, result.num_turns),
            result_text=(result.text or ("; ".join(result.errors) if result.errors else current.result_text))
            if summary.result is not None else current.result_text,
            last_activity_at=result.ts,
            agent_pid=None,
            **self._session_fields(summary),
        )

    def _session_fields(self, summary: RunSummary) -> dict[str, Any]:
        fields = {"session_id": summary.session_id, "agent_model": summary.model}
        return {k: v for k, v in fields.items() if v is not None}

    def _judge(self, outcome: ProcessOutcome, summary: RunSummary) -> None:
        assert self.runtime is not None
        limits = self.runtime.limits
        if summary.failure is not None:
            raise AgentFailed(*summary.failure)
        if outcome.stopped == "timeout":
            raise AgentFailed("timeout", f"the agent ran longer than {limits.timeout}s and was stopped")
        if outcome.stopped == "stalled":
            hint = f" {self.runtime.stall_hint}" if self.runtime.stall_hint else ""
            stderr = tail(self.logs.stderr, 500).strip()
            raise AgentFailed("stalled", f"the agent printed nothing for {limits.stall_timeout}s and was stopped.{hint}"
                                         + (f" Its last error output: {stderr}" if stderr else ""))
        result = summary.result
        if outcome.exit_code == 0 and summary.succeeded:
            return
        if result is not None and not result.ok:
            detail = "; ".join(result.errors or []) or result.text or ""
            message = f"the agent ended with {result.subtype or 'an error'}" + (f": {detail}" if detail else "")
        else:
            stderr = tail(self.logs.stderr, 1000).strip()
            message = f"the agent exited with status {outcome.exit_code}" + (
                " without a result" if result is None else "") + (f": {stderr}" if stderr else "")
        raise AgentFailed("agent_error", message)

    def _workflow_hidden(self) -> set[str]:
        """The workflow's tracker secret: hidden from every task's processes, not only its own."""
        return set(self.ctx.workflow.hidden_env()) if self.ctx.workflow is not None else set()

    def _env(self, port: int | None = None) -> dict[str, str]:
        hidden = self.ctx.config.hidden_env_vars | self._workflow_hidden()
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        env["TASK_PORT"] = str(port if port is not None else self.port)
        env.update(self._marker())  # TASK_ID and BATON_PROJECT: how the task's processes are found
        return self.refs.env(env)  # git in the task's processes reports the refs it moves

    def _marker(self) -> dict[str, str]:
        return task_marker(self.task.id, self.ctx.git.project)

    # ----- what the merge queue calls (from its threads) -------------------------------------

    def run_tests(self, argv: list[str], port: int, stop: StopRequest,
                  base: tuple[str, Path] | None = None) -> tuple[ProcessOutcome, str]:
        """Run the test command in the task's worktree, or with `base` = (sha, folder) in a
        checkout of the base commit."""
        with open(self.logs.tests, "ab") as handle:
            where = f"on the base {base[0][:12]}: " if base else ""
            handle.write(f"\n=== {where}{shlex.join(argv)} ===\n".encode())
        start = self.logs.tests.stat().st_size
        tested = None if base else self.ws.head()
        outcome = run_streaming(
            argv, cwd=base[1] if base else self.ws.path, env=self._env(port), stdin_text=None,
            stdout_log=self.logs.tests, stderr_log=None, on_line=None,
            wall_timeout=self.ctx.config.test_timeout, stall_timeout=None, stop=stop,
            on_start=lambda pid: self._update(agent_pid=pid), marker=self._marker(),
        )
        self._update(agent_pid=None)
        # The test command is the agent's code too: before anything resets the worktree, put
        # back whatever refs it moved and its worktree's HEAD.
        moved = self._undo_test_ref_moves(tested)
        if tested is not None:
            discard_test_leftovers(self.ws, tested)  # caches and reports never reach a commit
        if moved and not stop.is_set():
            raise AgentFailed("agent_moved_refs", moved)
        size = self.logs.tests.stat().st_size
        return outcome, tail(self.logs.tests, min(4000, max(0, size - start)))

    def check_base(self, argv: list[str], base: str, port: int, stop: StopRequest) -> BaseVerdict | None:
        """The test command's verdict on the base commit itself (cached per base sha)."""
        config = self.ctx.config
        self.say(f"checking whether the tests pass on {self.ctx.git.base} itself ({base[:12]})")
        try:
            verdict, cached = self.ctx.base_tests.verdict(
                self.ctx.git, config.test_command.strip(), argv, base, config.test_timeout,
                lambda args, folder: self.run_tests(args, port, stop, base=(base, folder)))
        except (GitError, OSError) as exc:  # no verdict: the agent gets its feedback turn as before
            log.warning("task %s: could not run the tests on %s: %s", self.task.id, base[:12], exc)
            return None
        if verdict is not None:
            self.say(f"tests on {base[:12]} " + ("pass" if verdict.passed else f"fail too ({verdict.summary})")
                     + (" (known from an earlier run)" if cached else ""))
        return verdict

    def tested_candidate_problem(self, candidate: str, built_on: str) -> str | None:
        """Before publishing: task/<id> must be checked out at exactly the tested candidate,
        which contains what it was rebased onto. Anything else is not Baton's to publish."""
        tip = self.ctx.git.rev(f"refs/heads/{self.ws.branch}") if self.ctx.git.ref_exists(
            f"refs/heads/{self.ws.branch}") else ""
        if tip != candidate or not self.ws.on_branch() or self.ws.head() != tip:
            return f"{self.ws.branch} moved away from the tested commit {candidate[:12]}"
        if not self.ctx.git.is_ancestor(built_on, candidate):
            return f"{self.ws.branch} ({candidate[:12]}) does not contain {built_on[:12]} it was rebased onto"
        return None

    def record_commit(self, sha: str | None, base: str | None = None) -> None:
        self._update(commit_sha=sha, base_sha=base)

    def complete_landed(self, sha: str) -> None:
        self._complete(sha, no_changes=False)

    # ----- refs the task must not move (see refguard.py) ------------------------------------

    def _undo_ref_moves(self) -> str | None:
        """After an agent turn: if the agent moved protected refs, keep its commits on
        task/<id> first, then put those refs back. Returns the failure message, or None."""
        moves = self.refs.take()
        if not moves:
            return None
        try:
            try:
                self.ws.settle_head()
            except GitError:
                if not self.ws.remove_stale_index_lock():  # the agent's processes are gone
                    raise
                self.ws.settle_head()
        except (GitError, OSError) as exc:
            log.warning("task %s: could not bring the agent's commits onto %s: %s", self.task.id, self.ws.branch, exc)
        lines = self.refs.restore(moves, self.ctx.git.admin_lock)
        message = (f"the agent changed git refs outside its branch {self.ws.branch}: {'; '.join(lines)}. "
                   f"Its commits are kept on {self.ws.branch}")
        self.say(message)
        return message

    def _undo_test_ref_moves(self, tested: str | None) -> str | None:
        problems = []
        if tested is not None:
            own = f"refs/heads/{self.ws.branch}"
            if not self.ws.on_branch():
                self.ctx.git.git(["symbolic-ref", "HEAD", own], self.ws.path)  # back on the branch, files as they are
                problems.append(f"switched its worktree away from {self.ws.branch}")
            tip = self.ctx.git.rev(own) if self.ctx.git.ref_exists(own) else ""
            if tip != tested:  # discard_test_leftovers moves it back
                problems.append(f"moved {self.ws.branch} away from the tested commit {tested[:12]}")
        problems += self.refs.restore(self.refs.take(), self.ctx.git.admin_lock)
        if not problems:
            return None
        message = f"the test command changed git refs: {'; '.join(problems)}"
        self.say(message)
        return message

    def _commit_work(self, message: str) -> bool:
        """Commit leftovers, keep Baton's files out of history; True if the branch changes anything."""
        committed, stripped, changed = self.ws.save_work(message)
        if committed:
            self.say("committed the agent's uncommitted changes")
        if stripped:
            self.say("removed Baton's own files from the task's commits")
        return changed

    # ----- endings ------------------------------------------------------------------------
    #
    # A completed task is recorded first and cleaned up afterwards (possibly after the worker's
    # slot is free): completed is final, so nothing can claim it again meanwhile. Every other
    # ending saves the work and removes the worktree *before* recording the outcome, so a rerun
    # or a fresh claim never meets a worktree that is still being cleaned up.

    def _complete(self, sha: str | None, *, no_changes: bool, note: str | None = None) -> None:
        self._phase("finishing")
        if no_changes and self.task.base_sha is not None and note is None:
            note = "the follow-up changed nothing; the task's earlier work is on the base branch"
        # Said first: a stream that sees the task finished has every event of it.
        self.say(("completed with no changes" if no_changes else f"completed: {sha}") + (f" ({note})" if note else ""))
        self.ctx.store.transition(self.task.id, TaskStatus.completed, expect={TaskStatus.in_progress},
                                  commit_sha=sha, no_changes=no_changes, error_message=note,
                                  review_sha=None, review_base=None, approved_sha=None)
        self._landed = True

    def _end_failed(self, reason: ErrorReason, message: str) -> None:
        self._phase("failing")
        self.say(f"failed ({reason}): {message}")
        # A workflow task's worktree stays for its next run (the engine retries it).
        note = self._keep_work(f"wip({self.task.id}): {self.task.title} [failed run]", push=True,
                               remove=self.policy is None)
        if note:
            message = f"{message} ({note})"
        self._record_end(TaskStatus.failed, error_reason=reason, error_message=message[:4000],
                         log_path=str(self.logs.raw))

    def _end_lost(self, message: str) -> None:
        """The worker went away mid-turn: nothing of that turn is taken. The task goes back to the
        queue as a new attempt, or fails once its attempts (claims since its last rerun) reach
        dask.max_attempts."""
        if self.stop.is_set():  # a cancel or a shutdown came too: that is the ending
            self.say(f"worker lost: {message}")
            self._end_stopped()
            return
        settings = self.ctx.config.dask
        limit = settings.max_attempts if settings is not None else 1
        again = self.task.attempts < limit
        log.warning("task %s: worker lost (attempt %d of %d): %s", self.task.id, self.task.attempts, limit, message)
        self._phase("failing")
        self.say(f"worker lost: {message}; " + ("the task goes back to the queue as a new attempt"
                                               f" ({self.task.attempts} of {limit})" if again
                                               else f"attempt {self.task.attempts} of {limit}: the task fails"))
        note = self._keep_work(f"wip({self.task.id}): {self.task.title} [worker lost]", push=not again,
                               remove=self.policy is None)
        message = f"{message} ({note})" if note else message
        if again:
            self._record_end(TaskStatus.pending, error_reason="worker_lost", error_message=message[:4000])
        else:
            self._record_end(TaskStatus.failed, error_reason="worker_lost", error_message=message[:4000],
                             log_path=str(self.logs.raw))

    def _end_stopped(self) -> None:
        reason = self.stop.reason or "interrupted"
        self._phase("stopping")
        self.say(f"stopped: {reason}")
        target = TaskStatus.cancelled if reason == "cancelled" else TaskStatus.pending
        # Back to pending, a workflow task keeps its worktree for the next run; cancelled, it goes.
        note = self._keep_work(f"wip({self.task.id}): {self.task.title} [{reason}]", push=reason == "cancelled",
                               remove=self.policy is None or target is TaskStatus.cancelled)
        self._record_end(target, error_message=note)

    def _record_end(self, status: TaskStatus, **fields: Any) -> None:
        try:
            self.ctx.store.transition(self.task.id, status, expect={TaskStatus.in_progress}, agent_pid=None,
                                      commit_sha=None, **fields)
        except StoreError:
            log.exception("task %s: could not record the outcome %s", self.task.id, status.value)

    def _keep_work(self, message: str, push: bool, remove: bool = True) -> str | None:
        """Commit what the worktree holds to the task branch, push it if asked, and remove the
        worktree (if `remove`; a workflow task's before_remove hook first), unless saving
        failed: then the worktree stays and the note says so."""
        if self._foreign_workspace:
            return None  # what stands at the workspace's path is someone else's: left as it is
        if self.ws.path.exists():
            try:
                self._save_with_retry(message)
            except (GitError, OSError) as exc:
                log.exception("task %s: could not save the work", self.task.id)
                return f"could not commit the remaining work ({exc}); it is left in {self.ws.path}"
        note = None
        if push and self.ctx.config.push_to_remote and self.ctx.git.ref_exists(f"refs/heads/{self.ws.branch}"):
            error = self.ctx.git.push_branch(self.ws.branch)
            if error:
                note = f"branch {self.ws.branch} kept locally; push failed: {error}"
        if not remove:
            return note
        if self.policy is not None:
            self._ending_hook("before_remove")
        try:
            self.ws.remove()
        except GitError as exc:
            log.warning("task %s: worktree not removed: %s", self.task.id, exc)
        return note

    def _save_with_retry(self, message: str) -> None:
        try:
            self._commit_work(message)
        except GitError:
            # The agent's group is dead by now, so an index.lock in this worktree is its
            # leftover, not a live git's: remove it and try once more.
            if not self.ws.remove_stale_index_lock():
                raise
            self._commit_work(message)

    def cleanup(self) -> None:
        """After a landing is recorded: remove the worktree, the landed branch and the
        runtime's files for the task."""
        if not self._landed:
            return
        if self.policy is not None:
            self._ending_hook("before_remove")
        try:
            self.ws.remove()
            self.ctx.git.delete_branch(self.ws.branch, maybe_pushed=self._earlier_branch)
        except GitError:
            log.exception("task %s: cleanup failed", self.task.id)
        # The runtime's files (configs, isolated CLI state) served resumes; a completed task has none.
        shutil.rmtree(self.logs.runtime_dir, ignore_errors=True)

    # ----- small helpers ------------------------------------------------------------------

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped()

    def _phase(self, phase: str) -> None:
        self.phase = phase
        self.ctx.on_change()

    def say(self, text: str) -> None:
        self.events.append(event(EventKind.baton, text=text))

    def _current(self) -> Task:
        return self.ctx.store.get(self.task.id)

    def _update(self, **fields: Any) -> None:
        self.task = self.ctx.store.update(self.task.id, expect={TaskStatus.in_progress}, **fields)
