"""Runs each project's sync engine in the dashboard: polls its tracker, reconciles its tasks.

One `SourceRunner` per project with a `source:` (an asyncio task in the dashboard's loop), held
by the `SourceHub` the dashboard's lifespan starts and stops (app.state.sources). A runner polls
every `poll_seconds` (at once on `trigger()`, the board's "Sync now"), reconciles right after a
poll and every `reconcile_seconds` in between (cheap: it reads the tasks, and calls the tracker
only when something must change). A tracker that fails is retried after
min(poll_seconds * 2^(n-1), 300) s (never sooner than it asked); meanwhile the tasks keep
running and only what needs no tracker call goes on. A "Sync now" that fails does not count
towards that backoff (pressing it during an outage must not push the next try further away). A
side effect the tracker refuses (BadQuery: this request, not an outage) is a `warning`, not an
error. Until the first reconcile succeeds, for at most START_GRACE seconds, an agent that does
not answer yet (the dashboard may have just started it) shows as "starting", not as an error.
The loop never raises: what went wrong is in `health()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from ..trackers.base import BadQuery, RateLimited, Tracker, TrackerError
from .config import SourceConfig
from .engine import TRACKER_NAMES, SyncEngine
from .taskside import ConnectorTaskSide, TaskRefused, TaskSide, TasksUnavailable

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300.0
START_GRACE = 30.0  # seconds an agent may take to answer after the runner started


def default_engine_id() -> str:
    """Who claims side effects: this process (a restart is another engine; its claims go stale)."""
    return f"dashboard:{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


class SourceRunner:
    def __init__(self, project_id: str, config: SourceConfig, connector, tracker: Tracker, *, gate=None,
                 engine_id: str, reconcile_seconds: float = 2.0, start_grace: float = START_GRACE,
                 tasks: TaskSide | None = None, task_defaults: dict[str, Any] | None = None) -> None:
        """`connector`: the dashboard's way to the project's agent; an agent running its own
        engine (WORKFLOW.md) passes None and `tasks`, a TaskSide over its store."""
        self.project_id = project_id
        self.config = config
        self.connector = connector
        self.tracker = tracker
        self.reconcile_seconds = reconcile_seconds
        self.start_grace = start_grace
        side = tasks if tasks is not None else ConnectorTaskSide(connector)
        self.engine = SyncEngine(config, tracker, side, project_id=project_id,
                                 engine_id=engine_id, gate=gate, task_defaults=task_defaults)
        self.name = TRACKER_NAMES[config.kind]
        self.tracker_error: str | None = None
        self.agent_error: str | None = None
        self.tracker_errors = 0  # consecutive
        self.agent_errors = 0
        self.last_sync_at: datetime | None = None
        self.next_sync_at: datetime | None = None
        self._next_poll = 0.0  # monotonic
        self._next_reconcile = 0.0
        self._poll_now = False
        self._tracker_ok = True  # false after a tracker error, until a poll succeeds
        self._started = time.monotonic()
        self._reconciled = False  # a reconcile has succeeded since start
        self.polls_done = 0  # polls finished, failed or not
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    # ----- control --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._started = time.monotonic()
            self._task = asyncio.create_task(self._loop(), name=f"source:{self.project_id}")

    def trigger(self) -> None:
        """Poll now (and reconcile right after), even while backing off after an error."""
        self._poll_now = True
        self._wake.set()

    async def aclose(self) -> None:
        """Stop the loop and close the tracker client (the runner owns it)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.tracker.aclose()

    # ----- the loop -------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # a bug: said in the log, the loop goes on
                log.exception("source %s: sync round failed", self.project_id)
            timeout = max(0.0, min(self._next_poll, self._next_reconcile) - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def round(self) -> None:
        """One round: a poll when due (or triggered) followed by a reconcile, else a reconcile when due."""
        now = time.monotonic()
        if self._poll_now or now >= self._next_poll:
            triggered = self._poll_now and now < self._next_poll
            self._poll_now = False
            await self._poll(triggered=triggered)
        elif now < self._next_reconcile:
            return
        await self._reconcile()
        self._next_reconcile = time.monotonic() + self.reconcile_seconds

    async def _poll(self, *, triggered: bool = False) -> None:
        try:
            await self._poll_once(triggered)
        finally:
            self.polls_done += 1

    async def _poll_once(self, triggered: bool) -> None:
        try:
            await self.engine.poll()
        except TrackerError as exc:
            self._tracker_failed(exc, triggered=triggered)
            return
        except Exception as exc:  # a client bug must not stop the loop: shown like a tracker error
            log.exception("source %s: poll failed", self.project_id)
            self._tracker_failed(TrackerError(f"{self.name} sync failed unexpectedly: {exc}"), triggered=triggered)
            return
        now = datetime.now(timezone.utc)
        self.tracker_error, self.tracker_errors, self._tracker_ok = None, 0, True
        self.last_sync_at = now
        self.next_sync_at = now + timedelta(seconds=self.config.poll_seconds)
        self._next_poll = time.monotonic() + self.config.poll_seconds

    def _tracker_failed(self, exc: TrackerError, *, triggered: bool = False) -> None:
        """`triggered`: a "Sync now" between scheduled polls failed: it does not raise the count
        (the backoff), and the next poll stays when it was unless this failure's delay is sooner."""
        scheduled = self._next_poll
        self.tracker_errors = max(self.tracker_errors, 1) if triggered else self.tracker_errors + 1
        self._tracker_ok = False
        poll = self.config.poll_seconds
        delay = max(poll, min(poll * 2 ** (self.tracker_errors - 1), MAX_BACKOFF_SECONDS))
        if triggered:
            delay = min(delay, max(0.0, scheduled - time.monotonic()))
        if exc.retry_after:
            delay = max(delay, exc.retry_after)  # never sooner than the tracker asked
        at = datetime.now(timezone.utc) + timedelta(seconds=delay)
        if isinstance(exc, RateLimited):
            self.tracker_error = f"rate limited by {self.name}; retrying at {at.astimezone():%H:%M:%S}"
        else:
            self.tracker_error = exc.message
        self.next_sync_at = at
        self._next_poll = time.monotonic() + delay
        log.warning("source %s: %s (attempt %d; next in %.0f s)", self.project_id, self.tracker_error,
                    self.tracker_errors, delay)

    async def _reconcile(self) -> None:
        try:
            await self.engine.reconcile(tracker_effects=self._tracker_ok)
        except TasksUnavailable as exc:
            self._agent_failed(f"agent unreachable: {exc}")
            return
        except TaskRefused as exc:
            self._agent_failed(f"the agent refused: {exc.message}")
            return
        except BadQuery as exc:  # the tracker refused one side effect: said, retried (then given up) by the engine
            if self.engine.warning is None:
                self.engine.note_warning("refused", exc.message)
        except TrackerError as exc:  # a side effect failed (its claim was released): retried after a poll
            self._tracker_failed(exc)
        except Exception as exc:
            log.exception("source %s: reconcile failed", self.project_id)
            self._agent_failed(f"sync failed unexpectedly: {exc}")
            return
        self.agent_error, self.agent_errors = None, 0
        self._reconciled = True

    def _agent_failed(self, reason: str) -> None:
        if reason != self.agent_error:
            log.warning("source %s: %s", self.project_id, reason)
        self.agent_error = reason
        self.agent_errors += 1

    # ----- what the board shows -------------------------------------------------------------------

    def starting(self) -> bool:
        """No reconcile has succeeded yet, and the agent still has time to come up."""
        return not self._reconciled and time.monotonic() - self._started < self.start_grace

    def health(self) -> dict[str, Any]:
        starting = self.starting()
        agent_error = None if starting else self.agent_error
        reasons = [r for r in (self.tracker_error, agent_error) if r]
        state = "error" if reasons else ("ok" if self.engine.polls and not starting else "starting")
        return {
            "kind": self.config.kind,
            "state": state,
            "healthy": state != "error",
            "reason": "; ".join(reasons) or None,
            "warning": self.engine.warning,
            "last_sync_at": _iso(self.last_sync_at),
            "next_sync_at": _iso(self.next_sync_at),
            "issues": len(self.engine.active_ids),
            "tasks": self.engine.source_tasks,
            "calls": self.tracker.counter.calls,
            "errors": self.tracker_errors + (0 if starting else self.agent_errors),
            "counts": dict(self.engine.counts),
        }


class SourceHub:
    """The runners of every project with a source (app.state.sources)."""

    def __init__(self, runners: Mapping[str, SourceRunner] | None = None) -> None:
        self.runners: dict[str, SourceRunner] = dict(runners or {})

    @classmethod
    def from_config(cls, projects: Iterable, connectors: Mapping[str, Any], gate=None,
                    environ: Mapping[str, str] = os.environ, *, engine_id: str | None = None,
                    reconcile_seconds: float = 2.0, transport=None) -> SourceHub:
        """A runner per project (a ProjectConfig) with a `source:` and a connector."""
        from ..trackers import make_tracker  # the clients load only when a source is configured

        engine_id = engine_id or default_engine_id()
        runners: dict[str, SourceRunner] = {}
        for project in projects:
            if project.source is None or project.id not in connectors:
                continue
            extra = {"transport": transport} if transport is not None else {}
            tracker = make_tracker(project.source, environ=environ, **extra)
            runners[project.id] = SourceRunner(project.id, project.source, connectors[project.id], tracker,
                                               gate=gate, engine_id=engine_id,
                                               reconcile_seconds=reconcile_seconds)
        return cls(runners)

    def get(self, project_id: str) -> SourceRunner | None:
        return self.runners.get(project_id)

    async def start(self) -> None:
        for runner in self.runners.values():
            await runner.start()

    async def aclose(self) -> None:
        await asyncio.gather(*(runner.aclose() for runner in self.runners.values()), return_exceptions=True)
