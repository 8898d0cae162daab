"""WorkflowPolicyImpl: the dispatcher's WorkflowPolicy (backend/dispatcher/policy.py) over the
live WORKFLOW.md and its runner (backend/workflow/runner.py).

Every answer reads the workflow as it is now (`live.current`), so an edit applies to the next
claim, run or turn. The tracker is asked on the runner's event loop (its client is async and
belongs to that loop); the dispatcher's threads wait for the answer, bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from datetime import datetime, timezone
from pathlib import Path

from ..dispatcher.policy import HookName, HookSpec, IssueCheck, IssueStatus
from ..models import Task
from ..sources.engine import REASON_MAX, TRACKER_NAMES
from ..trackers.base import Issue, NotFound
from .keys import workspace_path
from .template import issue_vars, render_continuation, render_first

log = logging.getLogger(__name__)

ISSUE_TIMEOUT = 30.0  # seconds a turn's end waits for the tracker before going on as "unknown"
# Hidden whatever the workflow says: the trackers' default secrets.
ALWAYS_HIDDEN = frozenset({"LINEAR_API_KEY", "JIRA_API_TOKEN"})


def normalized(state: str | None) -> str:
    """SPEC 4.2: states compare trimmed and lower-cased."""
    return (state or "").strip().lower()


class WorkflowPolicyImpl:
    def __init__(self, live, runner) -> None:
        self.live = live
        self.runner = runner
        # Every version's tracker secrets, not only the current one's: processes started before
        # an edit may still hold the old key, and an edit must not hand it to the agent (R1-M3).
        self._hidden_lock = threading.Lock()
        self._hidden: set[str] = set(ALWAYS_HIDDEN) | set(live.current.config.secret_vars())
        live.listen(self._loaded)

    def _loaded(self, workflow) -> None:
        with self._hidden_lock:
            self._hidden |= set(workflow.config.secret_vars())

    # ----- what it governs, and where -------------------------------------------------------

    def _kind(self) -> str:
        return self.runner.source_config.kind

    def governs(self, task: Task) -> bool:
        return task.source is not None and task.source.kind == self._kind()

    def workspace_path(self, task: Task) -> Path:
        return workspace_path(self.live.current.config.workspace.root, task.source.identifier)

    def hook(self, name: HookName) -> HookSpec | None:
        return self.live.current.hook(name)

    def hook_env(self, task: Task) -> dict[str, str]:
        return {"BATON_ISSUE_ID": task.source.id, "BATON_ISSUE_IDENTIFIER": task.source.identifier,
                "BATON_WORKSPACE": str(self.workspace_path(task))}

    def hidden_env(self) -> frozenset[str]:
        with self._hidden_lock:
            self._hidden |= set(self.live.current.config.secret_vars())
            return frozenset(self._hidden)

    def max_turns(self) -> int:
        return self.live.current.config.agent.max_turns

    # ----- prompts --------------------------------------------------------------------------

    def _variables(self, task: Task, issue: Issue | None = None) -> dict:
        if issue is None:
            engine = self.runner.engine
            issue = engine.issues.get(task.source.id) if engine is not None else None
        settings = self.runner.settings
        return {
            "issue": issue_vars(issue, task),
            "attempt": None if task.runs <= 1 else task.runs - 1,
            "project": {"id": settings.project_id, "name": settings.project_name,
                        "base_branch": self.runner.dispatcher.config.base_branch},
            "task": {"id": task.id, "branch": task.branch or f"task/{task.id}"},
        }

    def first_prompt(self, task: Task) -> str:
        self.live.check()  # cheap (a stat): a run starts on the file as it is now
        self.runner.retarget_grant(task)  # its tools reach this agent, whichever made the grant
        return render_first(self.live.current, **self._variables(task, self._fresh(task)))

    def _fresh(self, task: Task) -> Issue | None:
        """The issue as the tracker has it now (the engine's copy is as old as its last poll);
        None (the engine's copy is used) when the tracker cannot say, bounded like issue_status."""
        try:
            return self._fetch(task.source.id)
        except Exception as exc:  # noqa: BLE001 - NotFound or an outage: the turn's end finds out
            log.info("task %s: %s not read afresh for its prompt (%s); using the last poll's copy", task.id,
                     task.source.identifier, getattr(exc, "message", None) or type(exc).__name__)
            return None

    def continuation_prompt(self, task: Task, turn: int, max_turns: int, state: str | None) -> str:
        return render_continuation(self.live.current, **self._variables(task), turn=turn, max_turns=max_turns)

    def turn_started(self, task: Task, turn: int) -> None:
        started = task.started_at or datetime.now(timezone.utc)
        self.runner.turns[task.id] = (turn, started)

    # ----- the issue, now -------------------------------------------------------------------

    def issue_status(self, task: Task) -> IssueCheck:
        try:
            issue = self._fetch(task.source.id)
        except NotFound:
            name = TRACKER_NAMES.get(task.source.kind, task.source.kind)
            return IssueCheck(IssueStatus.terminal, None, f"{task.source.identifier} was deleted in {name}")
        except Exception as exc:  # noqa: BLE001 - an outage, a timeout, a closed runner: ask again next turn
            log.warning("task %s: could not read %s from the tracker: %s", task.id, task.source.identifier,
                        getattr(exc, "message", None) or type(exc).__name__)
            return IssueCheck(IssueStatus.unknown, None)
        return self.classify(task, issue)

    def _fetch(self, issue_id: str) -> Issue:
        loop, source = self.runner.loop, self.runner.source
        if loop is None or source is None or loop.is_closed():
            raise RuntimeError("the workflow's tracker is not running")

        async def get() -> Issue:
            issue = await source.tracker.get_issue(issue_id)
            source.engine.issues[issue.id] = issue  # on the loop: the engine's own thread
            return issue

        future = asyncio.run_coroutine_threadsafe(get(), loop)
        try:
            return future.result(timeout=ISSUE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def classify(self, task: Task, issue: Issue) -> IssueCheck:
        """Where the issue's state puts the task, by the workflow's states as they are now."""
        tracker = self.runner.source_config  # the current workflow's, defaults filled in
        state = normalized(issue.state)
        name = TRACKER_NAMES.get(task.source.kind, task.source.kind)
        if state in {normalized(s) for s in tracker.active_states}:
            return IssueCheck(IssueStatus.active, issue.state)
        if state in {normalized(s) for s in tracker.handoff_states}:
            return IssueCheck(IssueStatus.handoff, issue.state)
        if state in {normalized(s) for s in tracker.terminal_states}:
            return IssueCheck(IssueStatus.terminal, issue.state,
                              _cut(f"{issue.identifier} moved to {issue.state} in {name}"))
        return IssueCheck(IssueStatus.other, issue.state,
                          _cut(f"{issue.identifier} left the active states (now {issue.state}); "
                               "its work is kept on its branch"))

    # ----- per-state limits -----------------------------------------------------------------

    def claimable(self, task: Task, running: list[Task]) -> bool:
        """Called under the dispatcher's and the store's locks: reads only what is in memory."""
        if not self.governs(task):
            return True
        limits = self.live.current.config.agent.max_concurrent_agents_by_state
        if not limits:
            return True
        state = self._cached_state(task)
        limit = limits.get(state)
        if limit is None:
            return True
        busy = sum(1 for other in running if self.governs(other) and self._cached_state(other) == state)
        return busy < limit

    def _cached_state(self, task: Task) -> str:
        engine = self.runner.engine
        issue = engine.issues.get(task.source.id) if engine is not None else None
        return normalized(issue.state) if issue is not None else ""


def _cut(text: str) -> str:
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"

