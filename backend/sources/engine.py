"""The sync engine: keeps a project's tasks and its tracker's issues in step.

Two halves, run by backend/sources/runner.py:

- `poll()` reads the tracker only: the active issues, and the issues of open tasks that are no
  longer among them (one that is not found any more was deleted: treated as closed).
- `reconcile()` reads the tasks and acts on what the last poll saw: it creates a task for an
  active issue (idempotent by the issue: Idempotency-Key `source:<kind>:<issue id>`), stops and
  cancels a task whose issue closed or left the active states, reruns one stopped that way when
  its issue is active again, moves issues and comments as their tasks start, await review,
  land or fail, and retries failed tasks with backoff.

Exactly once: every side effect on the tracker (and every retry or rerun) is claimed on the task
first (`POST /agent/tasks/{id}/source/reports`, key `<what>:<run>`), acted on, then marked done; a
second engine, or this one after a restart, finds the claim and leaves it. A claim left by an
engine that died is granted again after STALE_SECONDS. Before any comment the issue's comments
are read, and one already carrying this side effect's marker line ("— Baton (task <id>, <key>)",
or the older "baton task <id> · <key>") is not posted twice: a post whose answer was lost (a
timeout) may have landed, and its claim was released for a retry.

A run Baton stops because its issue moved gets one comment saying so: its `stopnote:<run>` is
claimed before the cancel (the intent survives a restart) and kept claimed until the comment is
out; posted only once the task is cancelled (a run that ended otherwise meanwhile gets none).

Jira's search lags behind writes: an open task's issue that is in an active state but missing
from the search is taken as having left the source's filter only after UNLISTED_GRACE seconds.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ..models import CONTENT_MAX_BYTES, TITLE_MAX_CHARS
from ..trackers.base import BadQuery, Issue, NotFound, Tracker, TrackerError
from .config import SourceConfig
from .taskside import TaskRefused, TaskSide, TasksUnavailable

log = logging.getLogger(__name__)

TRACKER_NAMES = {"linear": "Linear", "jira": "Jira"}
OPEN = frozenset({"pending", "blocked", "plan_review", "in_progress", "review"})
# Tasks an issue leaving the active states stops. Not review: on_review is usually such a state.
STOPPABLE = frozenset({"pending", "blocked", "plan_review", "in_progress"})
REFUSALS_MAX = 3  # tries of a side effect the tracker refuses (BadQuery) before it is given up
STALE_SECONDS = 120  # a claim older than this was left by an engine that died
UNLISTED_GRACE = 60.0  # seconds an active-state issue may be missing from the search (index lag)
MESSAGE_MAX = 200  # characters of the first line of an error message quoted in a comment
REASON_MAX = 2000  # the agent's limit on a cancel reason
COUNTS = ("created", "cancelled", "moved", "commented", "rerun")
# The tracker's priority (1 urgent … 4 low; none/unknown: None) as a task's, at create only.
PRIORITIES = {1: "urgent", 2: "high", 3: "medium", 4: "low"}
STOP_NOTE = "stopnote"  # the report key of the comment on a run Baton stopped
# models.py ErrorReason in words (as the board's frontend/js/words.js says them).
REASONS = {
    "agent_error": "the coding agent reported an error",
    "timeout": "it took longer than its time limit",
    "stalled": "the coding agent stopped producing output",
    "tests_failed": "the tests failed",
    "tests_broken_on_base": "the tests already fail on the base branch",
    "conflict": "its work conflicts with the base branch",
    "push_failed": "the result could not be pushed",
    "agent_moved_refs": "the coding agent moved git refs it must not touch",
    "approval_required": "the coding agent asked for an approval nobody can give",
    "runtime_unavailable": "its coding agent runtime is not available",
    "internal": "an internal error in Baton",
    "pr_failed": "its pull request could not be opened",
    "pr_closed": "its pull request was closed without being merged",
    "template_error": "the WORKFLOW.md prompt template failed",
    "hook_failed": "a WORKFLOW.md hook failed",
    "max_turns": "its turns ran out while the issue was still active",
    # executor: dask: the machine running the agent crashed, froze or became unreachable, every attempt
    "worker_lost": "the worker machine running its coding agent was lost",
}
# Any marker line of either format, whoever's task: what an agent's own comment may not carry.
_MARKER_RE = re.compile(r"(?:—\s*)?baton\s*\(\s*task\s+[a-z0-9]{1,32}\s*,\s*[a-z_]{1,20}\s*:\s*[0-9]{1,6}\s*\)"
                        r"|baton\s+task\s+[a-z0-9]{1,32}\s*·\s*[a-z_]{1,20}\s*:\s*[0-9]{1,6}", re.IGNORECASE)

Task = dict[str, Any]  # a task as the agent's API answers it


def _source(task: Task) -> dict[str, Any]:
    source = task.get("source")
    return source if isinstance(source, dict) else {}


def _report(task: Task, key: str) -> dict[str, Any] | None:
    reports = _source(task).get("reports")
    entry = reports.get(key) if isinstance(reports, dict) else None
    return entry if isinstance(entry, dict) else None


def _is_done(task: Task, key: str) -> bool:
    return (_report(task, key) or {}).get("state") == "done"


def _done_count(task: Task, prefix: str) -> int:
    reports = _source(task).get("reports") or {}
    return sum(1 for key, entry in reports.items()
               if key.startswith(prefix + ":") and isinstance(entry, dict) and entry.get("state") == "done")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _folded(state: str | None) -> str:
    """A state as compared (SPEC 4.2: trimmed, lower-cased), as a WORKFLOW.md's run compares it."""
    return (state or "").strip().lower()


def _printable(value: str | None, limit: int) -> bool:
    return bool(value) and len(value) <= limit and all("\x21" <= c <= "\x7e" for c in value)


def marker(task_id: str, key: str) -> str:
    """The line that ends each comment of a side effect: unique to it and stable."""
    return f"— Baton (task {task_id}, {key})"


def old_marker(task_id: str, key: str) -> str:
    """The marker of earlier versions: still recognised, so an upgrade posts nothing twice."""
    return f"baton task {task_id} · {key}"


def carries_marker(text: str) -> bool:
    """Whether `text` holds a marker line of either format (any task, any side effect), also
    when invisible characters (zero-width, bidi: a tracker may drop them) are slipped in."""
    visible = "".join(c for c in (text or "") if unicodedata.category(c) != "Cf")
    return bool(_MARKER_RE.search(visible))


def task_title(issue: Issue) -> str:
    """The issue's title as a task title: one line of printable characters, at most 200."""
    # Control, format (bidi, zero-width) and line/paragraph separators are what a title refuses.
    cleaned = "".join(" " if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") else c
                      for c in issue.title)
    title = " ".join(cleaned.split())[:TITLE_MAX_CHARS].strip()
    return title or issue.identifier


def task_content(issue: Issue) -> str:
    """`<identifier>: <url>` and the description, cut to the content limit on a character boundary."""
    head = f"{issue.identifier}: {issue.url}" if issue.url else issue.identifier
    text = f"{head}\n\n{issue.description}" if issue.description else head
    data = text.encode("utf-8", errors="replace")  # a lone surrogate becomes "?"
    return data[:CONTENT_MAX_BYTES].decode("utf-8", errors="ignore")


def duration_text(seconds: float) -> str:
    """"14 s", "2 min 5 s", "1 h 3 min": whole units, the two largest."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def _first_line(text: str, limit: int) -> str:
    """The first non-blank line, cut: an agent's stderr is never published wholesale. A line
    ending with ":" ("Its output ends:") also takes the next non-blank one, which it announces."""
    lines = (line for line in str(text).splitlines() if line.strip())
    line = next(lines, "")
    if line.rstrip().endswith(":"):
        line = f"{line.rstrip()} {next(lines, '')}"
    return _cut(line, limit)


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SyncEngine:
    def __init__(self, config: SourceConfig, tracker: Tracker, tasks: TaskSide, *, project_id: str,
                 engine_id: str, gate=None, clock: Callable[[], float] = time.time,
                 task_defaults: dict[str, Any] | None = None) -> None:
        self.config = config
        # Added to every task the engine creates (WORKFLOW.md: the workflow's runtime).
        self.task_defaults = dict(task_defaults or {})
        self.tracker = tracker
        self.tasks = tasks
        self.project_id = project_id
        self.engine_id = engine_id
        self.gate = gate
        self.clock = clock
        self.name = TRACKER_NAMES[config.kind]
        self.issues: dict[str, Issue] = {}  # last known, by id: the active ones and those of open tasks
        self.active_ids: set[str] = set()
        self.active_order: list[str] = []  # the tracker's order: tasks are created in it
        self.deleted: set[str] = set()  # ids of open tasks' issues the tracker no longer has
        self.polls = 0  # successful polls; nothing is decided from issues before the first
        self.live: list[Task] | None = None  # the tasks as last listed
        self.source_tasks = 0  # live tasks of this source, as last listed
        self.counts = dict.fromkeys(COUNTS, 0)
        self._made: dict[str, str | None] = {}  # issue id -> its task (a create answered it; maybe archived)
        self._refused: dict[str, int] = {}  # issue id -> the poll whose create the agent refused
        self._refusals: dict[tuple[str, str], int] = {}  # (task id, report key) -> the tracker's refusals
        self._unlisted_since: dict[str, float] = {}  # issue id -> when found active by id, not by search
        self.seen_active: set[str] = set()  # every issue id the filtered search answered, since start
        self._foreign: set[str] = set()  # issue ids that tasks name but the filter does not cover
        # The last side effect the tracker would not take (shown on the board), and its kind: a
        # later success of that kind clears it.
        self.warning: str | None = None
        self._warning_kind: str | None = None
        self._stop_why: dict[str, str] = {}  # task id -> why this engine stopped its run (for its note)

    # ----- poll: the tracker --------------------------------------------------------------------

    def _mine(self, tasks: list[Task]) -> list[Task]:
        return [t for t in tasks if _source(t).get("kind") == self.config.kind and isinstance(_source(t).get("id"), str)]

    def _needs_issue(self, task: Task) -> bool:
        """Whether a poll must know this task's issue even when it is not active: open tasks
        (to stop them when it closes) and landed ones still to be moved to on_complete."""
        status = task.get("status")
        if status in OPEN:
            return True
        return status == "completed" and self.config.on_complete is not None and \
            not _is_done(task, f"done:{task.get('runs', 0)}")

    async def poll(self) -> None:
        """Read the tracker (raises TrackerError). Needs the tasks as last listed; before any
        listing it asks for them once (and does without them if the agent cannot answer)."""
        active = await self.tracker.active_issues(list(self.config.active_states or []))
        tasks = self.live
        if tasks is None:
            try:
                tasks = await self.tasks.list_tasks()
            except (TasksUnavailable, TaskRefused):  # the agent is down: its tasks' issues are read next poll
                tasks = []
        active_ids = {issue.id for issue in active}
        wanted = sorted({_source(t)["id"] for t in self._mine(tasks) if self._needs_issue(t)} - active_ids)
        found = await self.tracker.issues_by_ids(wanted) if wanted else []
        issues = {issue.id: issue for issue in found}
        issues.update((issue.id, issue) for issue in active)
        self.issues = issues
        self.active_ids = active_ids
        self.seen_active |= active_ids
        self.active_order = list(dict.fromkeys(issue.id for issue in active))
        self.deleted = set(wanted) - {issue.id for issue in found}
        now, states = self.clock(), set(self.config.active_states or [])
        self._unlisted_since = {issue.id: self._unlisted_since.get(issue.id, now)
                                for issue in found if issue.state in states}
        self.polls += 1

    def _in_scope(self, issue: Issue) -> bool:
        """Whether the tracker's own answer puts this issue under the source's filter. Never
        taken from a task's `source`: anyone who reaches the agent's API (a coding agent, through
        TASK_PORT) can create a task naming any issue the tracker key can see. Jira: the key's
        project; Linear: the identifier's team key; a project-only Linear filter (an issue does
        not say its project here): the issues its filtered search has answered since start."""
        wanted = self.config.filter.project if self.config.kind == "jira" else self.config.filter.team
        if wanted:
            prefix, dash, number = issue.identifier.rpartition("-")
            return bool(dash) and number.isdigit() and prefix.casefold() == wanted.casefold()
        return issue.id in self.seen_active

    async def _acts_on(self, task: Task) -> bool:
        """Whether the engine may move or comment on the task's issue (see _in_scope)."""
        issue_id = _source(task)["id"]
        if issue_id in self._foreign:
            return False
        issue = self.issues.get(issue_id)
        if issue is None:
            try:
                issue = await self.tracker.get_issue(issue_id)
            except NotFound:
                return True  # gone: the side effect itself finds that out and is skipped
            self.issues[issue.id] = issue
        if self._in_scope(issue):
            return True
        if self.config.kind == "jira" or self.config.filter.team:
            self._foreign.add(issue_id)  # a verdict of the identifier: asked once
        log.warning("source %s: task %s names %s, which is not an issue of this source: no move or comment on it",
                    self.project_id, task.get("id"), issue.identifier)
        return False

    def _remember(self, issue: Issue) -> None:
        """An issue as the engine itself just changed it: later decisions see the move."""
        self.issues[issue.id] = issue
        if issue.state in (self.config.active_states or []):
            self.active_ids.add(issue.id)
        else:
            self.active_ids.discard(issue.id)

    # ----- reconcile: the tasks -------------------------------------------------------------------

    async def reconcile(self, *, tracker_effects: bool = True) -> None:
        """List the tasks and act on them (TasksUnavailable when the agent cannot be reached;
        TrackerError, once every task was seen, when a side effect failed: its claim is released
        for the next round).
        `tracker_effects=False` (the tracker is failing) does only what needs no tracker call."""
        tasks = await self.tasks.list_tasks()
        self.live = tasks
        mine = self._mine(tasks)
        self.source_tasks = len(mine)
        if not self.polls:
            return
        by_issue = {_source(t)["id"]: t for t in mine}
        for issue_id in self.active_order:
            if issue_id not in by_issue and issue_id not in self._made and self._refused.get(issue_id) != self.polls:
                issue = self.issues.get(issue_id)
                if issue is not None:
                    await self._create(issue)
        failed: TrackerError | None = None
        for task in mine:
            # One task's failing side effect must not hold up the others (stops, reruns): after a
            # failure the rest do only what needs no tracker call, unless it was that request alone.
            effects = tracker_effects and (failed is None or isinstance(failed, BadQuery))
            try:
                await self._settle(task, effects)
            except TaskRefused as exc:  # the task moved on meanwhile (archived, finished): next round
                log.info("source %s: task %s: %s", self.project_id, task.get("id"), exc.message)
            except TrackerError as exc:  # its claim was released: retried next round
                failed = failed or exc
        if failed is not None:
            raise failed

    async def _create(self, issue: Issue) -> None:
        kind = self.config.kind
        if not _printable(issue.id, 100) or not _printable(issue.identifier, 100):
            log.warning("source %s: issue id %r / %r cannot name a task; skipped", self.project_id, issue.id,
                        issue.identifier)
            self._made[issue.id] = None
            return
        if not self._in_scope(issue):  # e.g. a Jira `filter.jql` that reached past the project
            log.warning("source %s: %s is outside the source's project or team; no task made", self.project_id,
                        issue.identifier)
            self._made[issue.id] = None
            return
        url = issue.url if issue.url and len(issue.url) <= 2000 and issue.url.startswith(("http://", "https://")) \
            and _printable(issue.url, 2000) else None
        body: dict[str, Any] = {
            **self.task_defaults,
            "title": task_title(issue), "content": task_content(issue),
            "priority": PRIORITIES.get(issue.priority, "medium"),
            "source": {"kind": kind, "id": issue.id, "identifier": issue.identifier, "url": url},
        }
        if self.config.tools and self.gate is not None:
            grant = self.gate.grant(self.project_id, kind, issue.id)
            body["tool_grant"] = grant.model_dump(mode="json") if hasattr(grant, "model_dump") else dict(grant)
        try:
            task = await self.tasks.create(body, f"source:{kind}:{issue.id}")
        except TaskRefused as exc:
            if exc.code == "idempotency_key_reused":  # a task was made for it before (its title has changed since)
                self._made[issue.id] = None
                return
            self._refused[issue.id] = self.polls  # tried again after the next poll, not every round
            log.warning("source %s: the agent refused a task for %s: %s", self.project_id, issue.identifier,
                        exc.message)
            return
        self._made[issue.id] = task.get("id")
        self.counts["created"] += 1  # creates answered (another engine's may have made the task)

    async def _settle(self, task: Task, tracker_effects: bool) -> None:
        issue_id, status, runs = _source(task)["id"], task.get("status"), int(task.get("runs") or 0)
        if tracker_effects:
            await self._stop_notes(task)
        issue = self.issues.get(issue_id)
        active = issue_id in self.active_ids
        closed = issue_id in self.deleted or (
            issue is not None and issue.state in (self.config.terminal_states or []))
        if status in OPEN:
            if closed:
                await self._stop(task, *self._closed_reason(task, issue))
                return
            if status in STOPPABLE and issue is not None and not active and not self._moved_by_us(task, issue) \
                    and not self._handed_off(task, issue) and not self._maybe_unindexed(issue_id):
                await self._stop(task, *self._left_reason(task, issue))
                return
            if not tracker_effects:
                return
            # Not a landing run (a person approved the work): the issue stays where review put it.
            # Nor one whose issue was handed over already (the start's move came late, e.g. after
            # a tracker outage): moving it back would undo the handoff and restart the turns.
            if status == "in_progress" and self.config.on_start and not task.get("approved_sha") \
                    and not (issue is not None and self._handed_off(task, issue)):
                await self._effect(task, f"started:{runs}", self._on_start)
            elif status == "review":
                await self._effect(task, f"review:{runs}", self._on_review)
        elif status == "cancelled":
            # Only a task this engine stopped (a person's cancel has no such report) comes back.
            if active and not closed and _is_done(task, f"stopped:{runs}") and task.get("cancel_reason"):
                await self._rerun_stopped(task, runs)
        elif status == "completed":
            if tracker_effects:
                await self._effect(task, f"done:{runs}", self._on_done)
        elif status == "failed":
            if tracker_effects:
                await self._effect(task, f"failed:{runs}", self._on_failed)
            await self._maybe_retry(task, runs)

    def _moved_by_us(self, task: Task, issue: Issue) -> bool:
        """The issue is where this engine put it when the task went to review (a person then
        sent the task back, or approved it: it runs again, its issue still "In Review")."""
        ours = {self.config.on_review, self.config.on_complete} - {None}
        return issue.state in ours and _done_count(task, "review") > 0

    def _handed_off(self, task: Task, issue: Issue) -> bool:
        """The agent handed a running task's issue over (a handoff state): its run ends its turns
        and lands; stopping it now would throw the finished work away. So also for a task that
        ran before and is pending again (a landing interrupted by Ctrl+C or a crash): its next
        run finds the handoff and lands without another turn."""
        status = task.get("status")
        if status != "in_progress" and not (status == "pending" and int(task.get("runs") or 0) >= 1):
            return False
        # Compared as the run compares them (workflow/policy.py), so the two never disagree on it.
        return _folded(issue.state) in {_folded(s) for s in self.config.handoff_states}

    def _maybe_unindexed(self, issue_id: str) -> bool:
        """The issue is in an active state but the search left it out only recently: it may not
        be indexed yet (another engine made its task from a fresher search)."""
        since = self._unlisted_since.get(issue_id)
        return since is not None and self.clock() - since < UNLISTED_GRACE

    def _closed_reason(self, task: Task, issue: Issue | None) -> tuple[str, str]:
        """(the cancel reason, why in the stop comment)."""
        identifier = _source(task).get("identifier", "the issue")
        if issue is None:
            return f"{identifier} was deleted in {self.name}", f"{identifier} was deleted"
        return (_cut(f"{identifier} moved to {issue.state} in {self.name}", REASON_MAX),
                _cut(f"{identifier} moved to {issue.state}", 300))

    def _left_reason(self, task: Task, issue: Issue) -> tuple[str, str]:
        identifier = _source(task).get("identifier", "the issue")
        if issue.state in (self.config.active_states or []):
            why = f"{identifier} no longer matches the source's filter in {self.name}"
        else:
            why = f"{identifier} left the active states (now {issue.state})"
        return _cut(f"{why}; its work is kept on its branch", REASON_MAX), _cut(why, 300)

    async def _claim(self, task: Task, key: str) -> dict[str, Any]:
        return await self.tasks.report(task["id"], {"key": key, "action": "claim", "by": self.engine_id,
                                                    "stale_seconds": STALE_SECONDS})

    async def _mark(self, task: Task, key: str, action: str) -> None:
        await self.tasks.report(task["id"], {"key": key, "action": action, "by": self.engine_id})

    async def _stop(self, task: Task, reason: str, why: str) -> None:
        """Cancel the task with `reason`; a running one also gets a comment saying `why`."""
        runs = task.get("runs", 0)
        key = f"stopped:{runs}"
        answer = await self._claim(task, key)
        current = answer.get("task") or task
        if current.get("status") not in OPEN:
            if answer.get("granted"):
                await self._mark(task, key, "release")
            return
        if not answer.get("granted") and not _is_done(current, key):
            return  # another engine is stopping it right now
        if current.get("status") == "in_progress" and current.get("cancel_reason"):
            return  # asked to stop already; the run is ending
        # Not granted but done: stopped once in this run, rerun, and its issue left again (it
        # has not run since: no note).
        note = answer.get("granted") and current.get("status") == "in_progress"
        if note:
            # The intent, before the cancel: kept claimed until the comment is out.
            note = bool((await self._claim(task, f"{STOP_NOTE}:{runs}")).get("granted"))
            if note:
                self._stop_why[task["id"]] = why
        try:
            await self.tasks.cancel(task["id"], reason)
        except TaskRefused:
            if answer.get("granted"):
                await self._mark(task, key, "release")
            if note:
                await self._mark(task, f"{STOP_NOTE}:{runs}", "release")
            raise
        if answer.get("granted"):
            await self._mark(task, key, "done")
        self.counts["cancelled"] += 1
        log.info("source %s: task %s cancelled: %s", self.project_id, task["id"], reason)

    async def _effect(self, task: Task, key: str, act: Callable[[Task, str], Awaitable[None]]) -> None:
        """Claim `key` on the task, act, mark it done; released again if the tracker failed."""
        if _is_done(task, key):
            return
        if not await self._acts_on(task):
            return
        answer = await self._claim(task, key)
        if not answer.get("granted"):
            return
        try:
            # As listed: the claim has just changed the task's updated_at (a review's end).
            await act(task, key)
        except NotFound as exc:  # the issue is gone: nothing left to tell it
            log.info("source %s: %s for task %s skipped: %s", self.project_id, key, task["id"], exc.message)
        except BadQuery as exc:
            if not self._given_up(task, key, exc):
                await self._mark(task, key, "release")
                raise
        except Exception:
            await self._mark(task, key, "release")
            raise
        await self._mark(task, key, "done")

    def _given_up(self, task: Task, key: str, exc: BadQuery) -> bool:
        """The tracker refuses this one request (not an outage): a few more tries, then it is
        given up, so one bad request never holds the source in error or retries forever."""
        refusals = self._refusals.get((task["id"], key), 0) + 1
        self._refusals[(task["id"], key)] = refusals
        if refusals < REFUSALS_MAX:
            return False
        log.error("source %s: %s for task %s given up after %d refusals: %s", self.project_id, key,
                  task["id"], refusals, exc.message)
        return True

    async def _rerun_stopped(self, task: Task, runs: int) -> None:
        """Rerun a task this engine (or another) stopped, its issue active again: claimed, so
        of two engines one reruns; released after, as the same run may be stopped again."""
        key = f"rerun:{runs}"
        answer = await self._claim(task, key)
        if not answer.get("granted"):
            return
        try:
            current = answer.get("task") or task
            if current.get("status") == "cancelled" and current.get("cancel_reason"):
                await self.tasks.rerun(task["id"])
                self.counts["rerun"] += 1
        finally:
            await self._mark(task, key, "release")

    async def _stop_notes(self, task: Task) -> None:
        """Post the comment of each run Baton stopped whose note is still owed (claimed)."""
        reports = _source(task).get("reports") or {}
        for key, entry in list(reports.items()):
            if key.startswith(STOP_NOTE + ":") and isinstance(entry, dict) and entry.get("state") == "claimed":
                await self._stop_note(task, key)

    async def _stop_note(self, task: Task, key: str) -> None:
        run = int(key.partition(":")[2])
        status, runs = task.get("status"), int(task.get("runs") or 0)
        if runs == run and status == "in_progress":
            return  # the run is ending
        if runs == run and status in ("completed", "failed", "review"):
            await self._mark(task, key, "done")  # it ended otherwise before the cancel took: no note
            self._stop_why.pop(task["id"], None)
            return
        # Ours, or left by an engine that died (a stale claim is granted again): else another's.
        answer = await self._claim(task, key)
        entry = _report(answer.get("task") or {}, key) or {}
        if entry.get("state") != "claimed" or entry.get("by") != self.engine_id:
            return
        if not await self._acts_on(task):
            await self._mark(task, key, "done")
            return
        identifier = _source(task).get("identifier", "the issue")
        why = self._stop_why.get(task["id"]) or self._why_from(task.get("cancel_reason")) or \
            f"{identifier} left the active states"
        branch = task.get("branch") or f"task/{task['id']}"
        text = f"Baton stopped its run: {why}. Its work so far is kept on branch {branch}."
        try:
            await self._comment(task, key, text)
        except NotFound:
            pass  # the issue is gone
        except BadQuery as exc:
            if not self._given_up(task, key, exc):
                raise  # the claim stays ours: tried again next round
        await self._mark(task, key, "done")
        self._stop_why.pop(task["id"], None)

    def _why_from(self, cancel_reason: Any) -> str | None:
        """The stop's cause from the cancel reason this engine wrote (after a restart)."""
        if not isinstance(cancel_reason, str) or not cancel_reason:
            return None
        why = cancel_reason.removesuffix("; its work is kept on its branch").removesuffix(f" in {self.name}")
        return _cut(why, 300)

    # ----- warnings: what the tracker would not take ----------------------------------------------

    def note_warning(self, kind: str, text: str) -> None:
        self.warning, self._warning_kind = _cut(text, 500), kind

    def _clear_warning(self, kind: str) -> None:
        if self._warning_kind == kind:
            self.warning = self._warning_kind = None

    async def _issue(self, task: Task) -> Issue:
        issue_id = _source(task)["id"]
        issue = self.issues.get(issue_id)
        if issue is None:
            issue = await self.tracker.get_issue(issue_id)
            self.issues[issue.id] = issue
        return issue

    async def _move(self, task: Task, state: str | None) -> None:
        if not state:
            return
        issue = await self._issue(task)
        if issue.state == state:
            return
        try:
            moved = await self.tracker.move(issue, state)
        except NotFound as exc:  # no such state, or (Jira) no transition to it from here: say so, go on
            self.note_warning("move", f"could not move {issue.identifier} to {state}: {exc.message}")
            log.warning("source %s: cannot move %s to %s: %s", self.project_id, issue.identifier, state, exc.message)
            return
        except BadQuery as exc:
            self.note_warning("move", f"could not move {issue.identifier} to {state}: {exc.message}")
            raise
        self._clear_warning("move")
        self._remember(moved)
        self.counts["moved"] += 1

    async def _comment(self, task: Task, key: str, text: str) -> None:
        issue_id = _source(task)["id"]
        # Visible text: Jira has no hidden comments. Looked for even when the claim is fresh: an
        # earlier attempt whose answer was lost (then released) may have posted it. One read.
        markers = (marker(task["id"], key), old_marker(task["id"], key))
        try:
            if any(m in comment.body for comment in await self.tracker.comments(issue_id) for m in markers):
                return
            await self.tracker.add_comment(issue_id, f"{text}\n\n{markers[0]}")
        except BadQuery as exc:
            identifier = _source(task).get("identifier", issue_id)
            self.note_warning("comment", f"could not comment on {identifier}: {exc.message}")
            raise
        self._clear_warning("comment")
        self.counts["commented"] += 1

    # ----- what each side effect does ------------------------------------------------------------

    def _facts(self, task: Task, end_key: str = "finished_at") -> str:
        """" · 2 min 5 s · $0.42": how long the run took and what it cost, when known."""
        parts = []
        start, end = _time(task.get("started_at")), _time(task.get(end_key)) or _time(task.get("updated_at"))
        if start is not None and end is not None:
            parts.append(duration_text((end - start).total_seconds()))
        cost = task.get("cost_usd")
        if isinstance(cost, (int, float)):
            parts.append(f"${cost:.2f}" + (" (estimated)" if task.get("cost_estimated") else ""))
        return "".join(f" · {part}" for part in parts)

    @staticmethod
    def _pr_url(task: Task) -> str | None:
        pr = task.get("pr") if isinstance(task.get("pr"), dict) else None
        return pr.get("url") if pr and isinstance(pr.get("url"), str) else None

    async def _on_start(self, task: Task, key: str) -> None:
        await self._move(task, self.config.on_start)

    async def _on_review(self, task: Task, key: str) -> None:
        await self._move(task, self.config.on_review)
        url = self._pr_url(task)
        lines = [("Pull request opened by Baton" if url else "Ready for review in Baton") +
                 self._facts(task, "updated_at")]
        if url:
            lines.append(f"Pull request: {url}")
        await self._comment(task, key, "\n".join(lines))

    async def _on_done(self, task: Task, key: str) -> None:
        await self._move(task, self.config.on_complete)
        sha = task.get("commit_sha")
        if task.get("no_changes"):
            head = "Finished by Baton: no changes were needed"
        elif isinstance(sha, str) and sha:
            head = f"Landed on the base branch as {sha[:7]}"
        else:
            head = "Completed by Baton"
        lines = [head + self._facts(task)]
        url = self._pr_url(task)
        if url:
            lines.append(f"Pull request: {url}")
        await self._comment(task, key, "\n".join(lines))

    async def _on_failed(self, task: Task, key: str) -> None:
        failures = _done_count(task, "failed") + 1  # this one, being reported
        code = task.get("error_reason")
        why = REASONS.get(code) or (str(code).replace("_", " ") if code else "it did not finish")
        lines = [f"Baton's run failed: {why}" + self._facts(task)]
        message = _first_line(task.get("error_message") or "", MESSAGE_MAX)
        if message:
            lines.append(f"Error: {message}")
        issue_id = _source(task)["id"]
        if failures >= self.config.max_attempts:
            lines.append(f"Baton will not retry it: {failures} of {self.config.max_attempts} attempts failed.")
        elif issue_id not in self.active_ids:
            lines.append("Baton will not retry it: the issue is no longer in an active state.")
        else:
            delay = duration_text(self.config.retry_delay(failures))
            lines.append(f"Baton will retry it in {delay} (attempt {failures + 1} of {self.config.max_attempts}).")
        await self._comment(task, key, "\n".join(lines))

    async def _maybe_retry(self, task: Task, runs: int) -> None:
        if not _is_done(task, f"failed:{runs}"):
            return  # told the tracker first: the comment says whether it is retried
        failures = _done_count(task, "failed")
        if failures >= self.config.max_attempts or _source(task)["id"] not in self.active_ids:
            return
        finished = _time(task.get("finished_at"))
        if finished is None or self.clock() < finished.timestamp() + self.config.retry_delay(failures):
            return
        key = f"retry:{runs}"
        if _is_done(task, key):
            return
        answer = await self._claim(task, key)
        if not answer.get("granted"):
            return
        try:
            await self.tasks.rerun(task["id"])
        except Exception:
            await self._mark(task, key, "release")
            raise
        await self._mark(task, key, "done")
        self.counts["rerun"] += 1
