"""WorkflowRunner: the unattended side of a WORKFLOW.md, inside baton-agent.

It runs the workflow's tracker with the same sync engine the dashboard uses (a SourceRunner over
the agent's own store: backend/workflow/taskside.py), so the tracker's active issues become
tasks of the workflow's runtime, and hands the dispatcher the workflow's policy
(backend/workflow/policy.py: worktrees, hooks, prompts, continuation turns, per-state limits).

Live reload: the file is checked every second (LiveWorkflow.check, in a thread); each good edit
is applied on the event loop: the runtimes and their guardrails, the worker limit, the source's
states and poll interval; a changed filter gets a new client and engine. The policy reads the
workflow as it is now, so prompts, hooks and limits follow the file at once. An invalid edit
changes nothing here (the last good one keeps running; `health()` says so).

Some edits are refused like invalid ones (`accept`, asked by LiveWorkflow before a reload applies;
the file belongs to the repository, which a coding agent can write): a changed tracker kind,
endpoint or credential (the tracker's key must never follow an edit to another URL), a runtime
that bypasses its permission prompts when the guardrails flag was not on this agent's command
line, and a workspace.root that would hold --logs-root. Those need a restart.

The tracker tools' grants name this agent's URL: at start (and before each run of a task) a
grant this gate made for an earlier agent on another port is pointed at this one.

Workspaces are removed once their tasks are done with them (backend/workflow/cleanup.py): after
each reconcile, and at start-up for issues already terminal (SPEC 8.6; a tracker that cannot be
asked then only costs a warning).

The lifespan calls `start()` after the dispatcher's recovery and before it claims, and
`aclose()` before the dispatcher shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..models import Task, TaskStatus
from ..store import StoreError
from ..runtimes import RUNTIMES, build_configured
from ..sources.config import SourceConfig
from ..sources.runner import SourceRunner
from ..sources.tools import CALL_PATH, ToolGate
from ..dispatcher.process import StopRequest
from ..guardrails import FLAG as GUARDRAILS_FLAG, unguarded_reason
from ..agent.logsroot import inside_workspaces
from .cleanup import WorkspaceCleaner
from .policy import WorkflowPolicyImpl, normalized
from .taskside import StoreTaskSide

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # how often WORKFLOW.md is stat'ed
STARTUP_ASK_SECONDS = 30.0  # the start-up cleanup's bound on asking the tracker
TOOL_KEY_NAME = "tool-key"  # in the project's data/: signs the tracker tools' capability tokens
# What a changed value of rebuilds the tracker client and the engine (else they are updated).
_TRACKER_FIELDS = ("kind", "base_url", "api_key", "email", "api_token", "filter")
# Where the tracker's key goes and which key: a live edit may not change them (R1-H2).
_FIXED_FIELDS = {"kind": "tracker.kind", "base_url": "tracker.endpoint", "api_key": "tracker.api_key",
                 "api_token": "tracker.api_token", "email": "tracker.email"}


def agent_engine_id() -> str:
    """Who claims side effects: this agent process (a restart is another engine)."""
    return f"agent:{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"


class WorkflowSource(SourceRunner):
    """A SourceRunner that also tells the runner when a reconcile ended, follows an edited poll
    interval, and says whether a requested poll was already queued."""

    def __init__(self, *args, after_reconcile, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._after_reconcile = after_reconcile
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        await super().start()

    async def _reconcile(self) -> None:
        await super()._reconcile()
        self._after_reconcile()

    def _set_wake(self) -> None:
        loop = self._event_loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._wake.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def queue_poll(self) -> bool:
        """Poll now (from any thread). False when a poll was already queued and has not begun
        (this request is coalesced with it)."""
        queued = not self._poll_now
        self._poll_now = True
        self._set_wake()
        return queued

    def reschedule(self) -> None:
        """The poll interval changed: the next poll comes at most one new interval from now."""
        soonest = time.monotonic() + self.config.poll_seconds
        if soonest < self._next_poll:
            self._next_poll = soonest
        self._set_wake()


class WorkflowRunner:
    def __init__(self, settings, store, dispatcher, live, *, environ: Mapping[str, str] = os.environ,
                 transport=None, reconcile_seconds: float = 2.0, guardrails_flag: bool = False) -> None:
        """`guardrails_flag`: the guardrails flag was on this agent's command line (a reload may
        then switch to a runtime that bypasses its permission prompts)."""
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.live = live
        self.environ = environ
        self.transport = transport
        self.reconcile_seconds = reconcile_seconds
        self.project_id = settings.project_id
        # For /api/v1: the turn each running task is at, and when its run began.
        self.turns: dict[str, tuple[int, datetime]] = {}
        self.logs_dir = dispatcher.ctx.logs_dir
        self.writers = dispatcher.ctx.writers
        # Coding agents' tracker tools call this agent back (routes/trackertools.py): loopback.
        self.gate = ToolGate(settings.data_dir / TOOL_KEY_NAME, f"http://127.0.0.1:{settings.port}")
        self.engine_id = agent_engine_id()
        self.policy = WorkflowPolicyImpl(live, self)
        self.source: WorkflowSource | None = None
        self.runtime_name: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = StopRequest()  # set at aclose: a before_remove hook running then is stopped
        self.cleaner = WorkspaceCleaner(dispatcher.ctx.git, self.policy, self.logs_dir, self._hidden_env, self._stop)
        self._configs: tuple[Any, SourceConfig] | None = None  # (workflow, its SourceConfig)
        self._applied = None  # the Workflow last applied
        self._apply_lock = asyncio.Lock()
        self._started = False
        self._watch: asyncio.Task | None = None
        self._cleaning: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()
        self._asked_at_poll = -1  # the engine's poll count when issues outside its cache were last asked
        self._asked: dict[str, Any] = {}  # those issues, by id (None: the tracker has no such issue)
        self.guardrails_flag = guardrails_flag
        earlier = getattr(live, "accept", None)
        self._earlier_accept = earlier if callable(earlier) else None
        live.accept = self.accept  # LiveWorkflow asks before applying a good edit

    # ----- what others read -------------------------------------------------------------------

    @property
    def source_config(self) -> SourceConfig:
        """The current workflow's tracker as a SourceConfig (defaults filled in)."""
        workflow = self.live.current
        cached = self._configs
        if cached is None or cached[0] is not workflow:
            cached = (workflow, workflow.config.source_config())
            self._configs = cached
        return cached[1]

    @property
    def engine(self):
        source = self.source
        return source.engine if source is not None else None

    def tasks(self) -> list[Task]:
        """The live tasks the workflow governs (all statuses)."""
        return [task for task in self.store.snapshot().tasks.values() if self.policy.governs(task)]

    def refresh(self) -> bool:
        """Queue a poll and a reconcile now; False when one was queued already (coalesced)."""
        source = self.source
        return source.queue_poll() if source is not None else False

    def health(self) -> dict:
        """The `workflow` block of /agent/health."""
        source = self.source
        return {**self.live.status(), "tracker": source.health() if source is not None else None}

    def _hidden_env(self) -> set[str]:
        return set(self.settings.config.hidden_env_vars) | set(self.policy.hidden_env())

    # ----- edits that need a restart ------------------------------------------------------------

    def accept(self, old, new) -> str | None:
        """Why the good edit `new` may not replace `old` while this agent runs (one problem a
        line, each naming the file and the key), else None."""
        problems: list[str] = []
        if self._earlier_accept is not None and (said := self._earlier_accept(old, new)):
            problems.append(said)
        path = new.path
        before, after = old.config.source_config(), new.config.source_config()
        problems += [f"{path}: {key} changed: restart baton-agent to apply it (the running sync keeps the loaded one)"
                     for field, key in _FIXED_FIELDS.items() if getattr(before, field) != getattr(after, field)]
        if not self.guardrails_flag:
            problems += self._unguarded_change(old, new)
        logs_root = self.settings.logs_root
        if logs_root is not None and inside_workspaces(logs_root, [new.config.workspace.root]) is not None:
            problems.append(f"{path}: workspace.root: would contain --logs-root {logs_root}, where coding agents "
                            "could rewrite the logs; keep the edit out of it")
        return "\n".join(problems) or None

    def _unguarded_change(self, old, new) -> list[str]:
        """A runtime that bypasses its prompts, new with this edit, and the flag was not given."""
        try:
            name, section = new.config.runtime(self.settings.config)
        except Exception:  # noqa: BLE001 - a section agent.yaml cannot take: the apply says so
            return []
        why = unguarded_reason(name, section)
        if why is None:
            return []
        try:
            old_name, old_section = old.config.runtime(self.settings.config)
            before = (old_name, unguarded_reason(old_name, old_section))
        except Exception:  # noqa: BLE001
            before = None
        if before == (name, why):
            return []  # unchanged: this agent already runs it so
        return [f"{new.path}: {new.config.runtime_key}: {why}; that needs {GUARDRAILS_FLAG} on baton-agent's "
                "command line: restart with it"]

    # ----- the tracker tools' grants ------------------------------------------------------------

    def retarget_grant(self, task: Task) -> None:
        """Point the task's grant at this agent when this gate made it for another URL (an
        earlier agent on another port). A grant of another gate (a dashboard's) is left alone."""
        grants = self.store.grants
        grant = grants.get(task.id)
        if grant is None:
            return
        url = f"{self.gate.base_url}{CALL_PATH}"
        if grant.url == url:
            return
        try:
            ours = self.gate.verify(grant.token) is not None
        except Exception as exc:  # noqa: BLE001 - the key cannot be read: the tools fail anyway, said
            log.warning("task %s: tool grant not checked: %s", task.id, exc)
            return
        if not ours:
            return
        try:
            grants.put(task.id, grant.model_copy(update={"url": url}))
        except OSError as exc:  # its tools then miss this agent: said, and tried again before its next run
            log.warning("task %s: tool grant not updated: %s", task.id, exc.strerror or type(exc).__name__)
            return
        log.info("task %s: its tracker tools now reach this agent (port %s)", task.id, self.settings.port)

    def _retarget_grants(self) -> None:
        for task in self.store.list_tasks():
            if self.policy.governs(task):
                self.retarget_grant(task)

    # ----- start and stop -----------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self._apply(self.live.current)
        self.live.listen(self._reloaded)
        await asyncio.to_thread(self._retarget_grants)
        await self._startup_cleanup()
        self._started = True
        await self.source.start()
        self._watch = asyncio.create_task(self._watch_file(), name="workflow:watch")

    async def aclose(self) -> None:
        self._stop.set("shutdown")
        self._started = False
        tasks = [t for t in (self._watch, self._cleaning, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.loop = None  # the policy's tracker questions answer "unknown" from now on
        if self.source is not None:
            await self.source.aclose()

    async def _watch_file(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await asyncio.to_thread(self.live.check)  # a good edit calls _reloaded
            except Exception:  # noqa: BLE001 - check() must not raise; if it does, the next one may not
                log.exception("workflow: checking %s failed", self.live.status().get("path"))

    def _reloaded(self, workflow) -> None:
        """LiveWorkflow's listener (in whichever thread checked): apply on the loop."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._spawn_apply)

    def _spawn_apply(self) -> None:
        task = asyncio.create_task(self._apply(self.live.current))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # ----- applying a workflow ------------------------------------------------------------------

    async def _apply(self, workflow) -> None:
        async with self._apply_lock:
            if workflow is self._applied:
                return
            try:
                await self._apply_now(workflow)
            except Exception:  # noqa: BLE001 - a bad apply keeps what ran before
                if self._applied is None:
                    raise  # at start: the agent cannot run this workflow
                log.exception("workflow: applying the edited %s failed; the earlier settings stay", workflow.path)
                return
            self._applied = workflow  # live.py logs the reload itself

    async def _apply_now(self, workflow) -> None:
        config = workflow.config
        name, section = config.runtime(self.settings.config)
        runtimes = {**build_configured(self.settings.config), name: RUNTIMES[name].build(section)}
        source_config = config.source_config()
        # The dispatcher's lock may be held by a claim: not on the event loop.
        await asyncio.to_thread(self._apply_dispatcher, runtimes, {name: section}, config.agent.max_concurrent_agents)
        previous, self.runtime_name = self.runtime_name, name
        await self._apply_source(source_config, name)
        if previous is not None and previous != name:
            await asyncio.to_thread(self._tasks_to_runtime, name)

    def _tasks_to_runtime(self, runtime: str) -> None:
        """The edit changed the workflow's runtime: its tasks that may run again (pending, failed,
        in review, cancelled) run on the new one. A task keeps the runtime it was made with; the
        old one may not even be configured any more."""
        for task in self.store.list_tasks():
            if task.runtime == runtime or task.status in (TaskStatus.in_progress, TaskStatus.completed) \
                    or not self.policy.governs(task):
                continue
            try:
                self.store.update(task.id, expect={task.status}, runtime=runtime)
            except StoreError as exc:  # claimed or finished meanwhile: that run keeps what it has
                log.info("workflow: task %s stays on %s: %s", task.id, task.runtime, exc)

    def _apply_dispatcher(self, runtimes, sections, workers: int) -> None:
        self.dispatcher.set_runtimes(runtimes, sections)
        self.dispatcher.resize_workers(workers)
        self.dispatcher.set_workflow(self.policy)

    async def _apply_source(self, config: SourceConfig, runtime: str) -> None:
        old = self.source
        if old is not None and all(getattr(old.config, f) == getattr(config, f) for f in _TRACKER_FIELDS):
            interval_changed = old.config.poll_seconds != config.poll_seconds
            old.config = old.engine.config = config
            old.engine.task_defaults = {"runtime": runtime}
            old.engine.gate = self.gate if config.tools else None
            if interval_changed:
                old.reschedule()
            return
        self.source = self._build_source(config, runtime)
        if old is not None:
            await old.aclose()
            log.info("workflow: the tracker changed; its sync starts afresh")
            if self._started:
                await self.source.start()

    def _build_source(self, config: SourceConfig, runtime: str) -> WorkflowSource:
        from ..trackers import make_tracker  # the clients load only when a workflow runs

        extra = {"transport": self.transport} if self.transport is not None else {}
        tracker = make_tracker(config, environ=self.environ, **extra)
        return WorkflowSource(self.project_id, config, None, tracker, gate=self.gate if config.tools else None,
                              engine_id=self.engine_id, reconcile_seconds=self.reconcile_seconds,
                              tasks=StoreTaskSide(self.store, self.dispatcher), task_defaults={"runtime": runtime},
                              after_reconcile=self._after_reconcile)

    # ----- workspaces ---------------------------------------------------------------------------

    async def _startup_cleanup(self) -> None:
        """SPEC 8.6: remove the workspaces of tasks whose issues are terminal already."""
        try:
            tasks = await asyncio.to_thread(self.store.list_tasks)
            with_folder = await asyncio.to_thread(
                lambda: [t for t in tasks if self.policy.governs(t) and t.status is not TaskStatus.in_progress
                         and self.cleaner.existing(t) is not None])
            if not with_folder:
                return
            ids = sorted({t.source.id for t in with_folder})
            issues = await asyncio.wait_for(self.source.tracker.issues_by_ids(ids), STARTUP_ASK_SECONDS)
        except Exception as exc:  # noqa: BLE001 - SPEC 8.6: a warning, and the start goes on
            why = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.warning("workflow: start-up cleanup skipped: could not ask %s for the issues of existing "
                        "workspaces: %s", self.source_config.kind, why)
            return
        terminal = {normalized(s) for s in self.source_config.terminal_states}
        states = {issue.id: normalized(issue.state) for issue in issues}
        done = await asyncio.to_thread(self.cleaner.sweep, tasks, lambda t: states.get(t.source.id) in terminal,
                                       pending_too=True)
        for line in done:
            log.info("workflow start-up: %s", line)

    def _after_reconcile(self) -> None:
        """After each reconcile (on the loop): one cleanup round at a time, in the background."""
        if self._cleaning is None or self._cleaning.done():
            self._cleaning = asyncio.create_task(self._cleanup_round(), name="workflow:cleanup")

    async def _cleanup_round(self) -> None:
        try:
            await self._cleanup_once()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next reconcile tries again
            log.exception("workflow: workspace cleanup failed")

    async def _cleanup_once(self) -> None:
        source = self.source
        if source is None or not source.engine.polls:
            return  # nothing is known of the issues yet
        engine = source.engine
        tasks = await asyncio.to_thread(self.store.list_tasks)
        with_folder = await asyncio.to_thread(
            lambda: [t for t in tasks if self.policy.governs(t) and t.status is not TaskStatus.in_progress
                     and self.cleaner.existing(t) is not None])
        if not with_folder:
            return
        # Issues the engine does not follow (a failed task's): asked once per poll, by id.
        unknown = sorted({t.source.id for t in with_folder if t.source.id not in engine.issues
                          and t.source.id not in engine.deleted
                          and t.status not in (TaskStatus.completed, TaskStatus.cancelled)})
        if unknown and engine.polls != self._asked_at_poll:
            self._asked_at_poll = engine.polls
            try:
                found = {issue.id: issue for issue in await source.tracker.issues_by_ids(unknown)}
            except Exception as exc:  # noqa: BLE001 - those workspaces wait for a later round
                log.info("workflow: cleanup could not ask for %d issue(s): %s", len(unknown), exc)
            else:
                self._asked = {issue_id: found.get(issue_id) for issue_id in unknown}
        config = self.source_config
        active = {normalized(s) for s in config.active_states}
        handoff = {normalized(s) for s in config.handoff_states}
        terminal = {normalized(s) for s in config.terminal_states}

        def done_with(task: Task) -> bool:
            if task.status in (TaskStatus.completed, TaskStatus.cancelled):
                return True
            issue_id = task.source.id
            if issue_id in engine.deleted or (issue_id in self._asked and self._asked[issue_id] is None):
                return True
            issue = engine.issues.get(issue_id) or self._asked.get(issue_id)
            if issue is None:
                return False
            state = normalized(issue.state)
            if state in terminal:
                return True
            # A task waiting for a person keeps its workspace until its issue is closed.
            if task.status in (TaskStatus.review, TaskStatus.plan_review):
                return False
            return state not in active and state not in handoff

        done = await asyncio.to_thread(self._sweep, tasks, done_with)
        for line in done:
            log.info("workflow cleanup: %s", line)

    def _sweep(self, tasks: list[Task], done_with) -> list[str]:
        """cleaner.sweep while the dispatcher claims: each task is held from claims (dispatcher.hold)
        from the moment it is read again until the sweep ends, so a rerun meanwhile (the engine's,
        a person's) waits for its folder to be gone and makes it anew, rather than starting in
        a folder being removed under it."""
        held: list[str] = []

        def current(task_id: str) -> Task:
            if not self.dispatcher.hold(task_id):  # a run of it is under way here: its folder stays
                return self.store.get(task_id).model_copy(update={"status": TaskStatus.in_progress})
            held.append(task_id)
            return self.store.get(task_id)  # after the hold: any claim made before it shows

        try:
            return self.cleaner.sweep(tasks, done_with, self.dispatcher.winding_down, current=current)
        finally:
            for task_id in held:
                self.dispatcher.release(task_id)
