"""The answers of /api/v1 (Symphony's shapes, SPEC 13.3 and 13.7.2), built from an agent's
workflow runner (backend/workflow/runner.py: `tasks()`, `source`, `live`, `turns`, `logs_dir`).

Baton keeps no orchestrator state of its own beside the store, so every figure is read from
the workflow's live tasks, the sync engine's last poll and the tasks' event logs:

- running: tasks in progress. `turn_count` is this run's (the runner's `turns`), `tokens` the
  task's totals (input + output), the last event is the last line of its events file.
- retrying: failed tasks the sync engine will rerun (as `SyncEngine._maybe_retry` decides:
  fewer failures than max_attempts, the issue still active), `due_at` = finished_at +
  retry_delay(failures), `attempt` = that failure count; plus pending tasks that have run
  before (a retry, rerun or stopped run waiting to be claimed again) with `due_at` null and as
  `error` why they wait: "no available orchestrator slots" only when every worker slot (or
  the issue state's own limit) is taken, else "waiting to be claimed".
- codex_totals: tokens and cost over the live tasks; seconds_running sums each task's latest
  run (until now when it runs, else until it finished or its last agent activity).
- rate_limits: {"tracker": the latest rate-limit headers the tracker sent, "agent": null}: no
  runtime's CLI reports its model's rate limits to Baton today.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..dispatcher.events import TaskLogs
from ..models import Task, TaskStatus
from .keys import workspace_path

RECENT_EVENTS = 20
MESSAGE_MAX = 300  # characters of an event's text in last_message / recent_events
TAIL_CHUNK = 64 * 1024
TAIL_BYTES_MAX = 4 * 1024 * 1024  # how far back from its end an events file is read
SLOTS_FULL = "no available orchestrator slots"
WAITING = "waiting to be claimed"


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cut(text: str, limit: int = MESSAGE_MAX) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----- events --------------------------------------------------------------------------------------


def tail_events(path: Path, count: int) -> list[dict]:
    """The last `count` complete lines of an events file, oldest first, read from its end (a
    long transcript is never read whole); a line still being written is left out."""
    if count <= 0:
        return []
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return []
    with handle:
        end = pos = handle.seek(0, os.SEEK_END)
        data = b""
        # count + 1 newlines: the piece before the first one may be the end of an earlier line.
        while pos > 0 and data.count(b"\n") <= count and end - pos < TAIL_BYTES_MAX:
            step = min(TAIL_CHUNK, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + data
    lines = data.split(b"\n")[:-1]  # after the last newline: nothing, or a line not yet complete
    if pos > 0:
        lines = lines[1:]
    return [_decode(line) for line in lines[-count:] if line.strip()]


def _decode(line: bytes) -> dict:
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {"kind": "unparsed", "text": line.decode("utf-8", "replace")}


def _message(data: dict) -> str:
    """The event in a line: its text, else the tool it called, its errors or its subtype."""
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        if data.get("tool_name"):
            text = f"{data['tool_name']} {data.get('tool_input') or ''}"
        elif isinstance(data.get("errors"), list) and data["errors"]:
            text = "; ".join(str(e) for e in data["errors"])
        else:
            text = str(data.get("subtype") or "")
    return _cut(text)


def _at(data: dict) -> str | None:
    value = data.get("ts")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return iso(moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc))


def event_row(data: dict) -> dict[str, Any]:
    return {"at": _at(data), "event": str(data.get("kind") or "event"), "message": _message(data)}


# ----- what the runner knows ----------------------------------------------------------------------


def tracker_rate_limits(tracker: Any) -> dict | None:
    """The latest rate-limit answer of the tracker's HTTP client (backend/trackers/http.py)."""
    found = getattr(tracker, "rate_limits", None)
    return dict(found) if isinstance(found, dict) else None


def _done(task: Task, key: str) -> bool:
    entry = task.source.reports.get(key) if task.source is not None else None
    return entry is not None and entry.state == "done"


def failures_reported(task: Task) -> int:
    """Failed runs the sync engine has told the tracker about (its retry count)."""
    if task.source is None:
        return 0
    return sum(1 for key, entry in task.source.reports.items() if key.startswith("failed:") and entry.state == "done")


class Observer:
    """One answer's view of the runner: read once, so every row of it agrees."""

    def __init__(self, runner: Any, now: datetime | None = None) -> None:
        self.runner = runner
        self.now = now or datetime.now(timezone.utc)
        # No source while the runner starts or rebuilds its tracker: nothing polled, nothing due.
        self.source = runner.source
        engine = self.source.engine if self.source is not None else None
        self.engine_config = engine.config if engine is not None else None
        self.issues = dict(engine.issues) if engine is not None else {}
        self.active_ids = set(engine.active_ids) if engine is not None else set()
        self.config = runner.live.current.config
        self.turns = dict(runner.turns)
        self.logs_dir = Path(runner.logs_dir)
        self.tasks: list[Task] = [t for t in runner.tasks() if t.source is not None]
        self._in_progress: int | None = None

    # ----- per task -----

    def issue_state(self, task: Task) -> str | None:
        issue = self.issues.get(task.source.id)
        return issue.state if issue is not None else None

    def issue_url(self, task: Task) -> str | None:
        issue = self.issues.get(task.source.id)
        return task.source.url or (issue.url if issue is not None else None)

    def turn_count(self, task: Task) -> int:
        """This run's turns; an entry from an earlier run (it started before this one) is not."""
        entry = self.turns.get(task.id)
        if task.status is not TaskStatus.in_progress or entry is None:
            return 0
        turn, started = entry
        if task.started_at is not None and started is not None and started < task.started_at:
            return 0
        return int(turn)

    @staticmethod
    def tokens(task: Task) -> dict[str, int]:
        given, taken = task.input_tokens or 0, task.output_tokens or 0
        return {"input_tokens": given, "output_tokens": taken, "total_tokens": given + taken}

    def seconds(self, task: Task) -> float:
        """How long the task's latest run took (so far)."""
        if task.started_at is None:
            return 0.0
        if task.status is TaskStatus.in_progress:
            end = self.now
        else:
            end = task.finished_at or task.last_activity_at
        return max(0.0, (end - task.started_at).total_seconds()) if end is not None else 0.0

    def events(self, task: Task, count: int) -> list[dict]:
        return tail_events(TaskLogs(self.logs_dir, task.id).events, count)

    def retry_due(self, task: Task) -> tuple[int, datetime] | None:
        """(failures, when) for a failed task the engine will rerun; None when it will not."""
        if task.status is not TaskStatus.failed or task.finished_at is None:
            return None
        runs = task.runs
        if _done(task, f"retry:{runs}"):
            return None
        # The engine reports the failure to the tracker first, then counts it.
        failures = failures_reported(task) + (0 if _done(task, f"failed:{runs}") else 1)
        if task.source.id not in self.active_ids or failures >= self.engine_config.max_attempts:
            return None
        return failures, task.finished_at + timedelta(seconds=self.engine_config.retry_delay(failures))

    def waiting_reason(self, task: Task) -> str:
        if self._in_progress is None:
            self._in_progress = sum(1 for t in self.runner.store.list_tasks() if t.status is TaskStatus.in_progress)
        agent = self.config.agent
        if self._in_progress >= agent.max_concurrent_agents:
            return SLOTS_FULL
        state = (self.issue_state(task) or "").strip().lower()
        limit = (getattr(agent, "max_concurrent_agents_by_state", None) or {}).get(state)
        if limit is not None:
            running = sum(1 for t in self.tasks if t.status is TaskStatus.in_progress
                          and (self.issue_state(t) or "").strip().lower() == state)
            if running >= limit:
                return SLOTS_FULL
        return WAITING

    def retry(self, task: Task) -> dict[str, Any] | None:
        """{attempt, due_at, error} when the task is in the retry queue."""
        due = self.retry_due(task)
        if due is not None:
            failures, when = due
            reason = task.error_reason or "failed"
            error = f"{reason}: {_cut(task.error_message, MESSAGE_MAX)}" if task.error_message else reason
            return {"attempt": failures, "due_at": iso(when), "error": error}
        if task.status is TaskStatus.pending and task.runs >= 1:
            return {"attempt": task.runs, "due_at": None, "error": self.waiting_reason(task)}
        return None

    def status(self, task: Task) -> str:
        if task.status is TaskStatus.in_progress:
            return "running"
        if task.status is TaskStatus.failed and self.retry_due(task) is not None:
            return "retrying"
        return task.status.value

    def workspace(self, task: Task) -> str | None:
        """The issue's workspace folder, while it exists (a landed or cancelled task's is gone)."""
        if task.worktree:
            path = Path(task.worktree)
        else:
            try:
                path = workspace_path(self.config.workspace.root, task.source.identifier)
            except ValueError:
                return None
        return str(path) if path.is_dir() else None

    def _ident(self, task: Task) -> dict[str, Any]:
        return {"issue_id": task.source.id, "issue_identifier": task.source.identifier,
                "issue_url": self.issue_url(task)}

    def running_fields(self, task: Task, last: dict | None) -> dict[str, Any]:
        row = event_row(last) if last is not None else None
        return {
            "state": self.issue_state(task),
            "session_id": task.session_id,
            "turn_count": self.turn_count(task),
            "last_event": row["event"] if row else None,
            "last_message": row["message"] if row else None,
            "started_at": iso(task.started_at),
            "last_event_at": row["at"] if row else None,
            "tokens": self.tokens(task),
        }

    # ----- answers -----

    def state(self) -> dict[str, Any]:
        running, retrying = [], []
        for task in self.tasks:
            if task.status is TaskStatus.in_progress:
                last = self.events(task, 1)
                running.append({**self._ident(task), **self.running_fields(task, last[-1] if last else None)})
                continue
            retry = self.retry(task)
            if retry is not None:
                retrying.append({**self._ident(task), **retry})
        tokens = [self.tokens(t) for t in self.tasks]
        totals = {key: sum(t[key] for t in tokens) for key in ("input_tokens", "output_tokens", "total_tokens")}
        totals["seconds_running"] = round(sum(self.seconds(t) for t in self.tasks), 1)
        totals["cost_usd"] = round(sum(t.cost_usd or 0.0 for t in self.tasks), 6)
        return {
            "generated_at": iso(self.now),
            "counts": {"running": len(running), "retrying": len(retrying)},
            "running": running,
            "retrying": retrying,
            "codex_totals": totals,
            "rate_limits": {"tracker": tracker_rate_limits(getattr(self.source, "tracker", None)), "agent": None},
        }

    def find(self, identifier: str) -> Task | None:
        """The task of the issue: the identifier as written first, then ignoring case."""
        exact = [t for t in self.tasks if t.source.identifier == identifier]
        if exact:
            return _latest(exact)
        folded = [t for t in self.tasks if t.source.identifier.casefold() == identifier.casefold()]
        return _latest(folded) if folded else None

    def issue(self, identifier: str) -> dict[str, Any] | None:
        task = self.find(identifier)
        if task is None:
            return None
        recent = self.events(task, RECENT_EVENTS)
        raw = TaskLogs(self.logs_dir, task.id).raw
        logs = [{"label": "latest", "path": str(raw), "url": f"/agent/tasks/{task.id}/events"}] if raw.exists() else []
        retry = self.retry(task) if task.status is not TaskStatus.in_progress else None
        return {
            **self._ident(task),
            "status": self.status(task),
            "workspace": {"path": self.workspace(task)},
            "attempts": {"restart_count": max(task.runs - 1, 0), "current_retry_attempt": failures_reported(task)},
            "running": self.running_fields(task, recent[-1] if recent else None)
            if task.status is TaskStatus.in_progress else None,
            "retry": retry,
            "logs": {"codex_session_logs": logs},
            "recent_events": [event_row(e) for e in recent],
            "last_error": task.error_message,
            "tracked": {
                "task_id": task.id, "task_status": task.status.value, "branch": task.branch,
                "commit_sha": task.commit_sha, "cost_usd": task.cost_usd,
                "runtime": task.agent_runtime or task.runtime, "session_id": task.session_id,
                "cancel_reason": task.cancel_reason,
            },
        }


def _latest(tasks: list[Task]) -> Task:
    # One task per issue normally (its Idempotency-Key); should two name it, the newest answers.
    return max(tasks, key=lambda t: t.created_at)


def state(runner: Any, now: datetime | None = None) -> dict[str, Any]:
    """GET /api/v1/state."""
    return Observer(runner, now).state()


def issue(runner: Any, identifier: str, now: datetime | None = None) -> dict[str, Any] | None:
    """GET /api/v1/<issue_identifier>; None when no live task of the workflow names the issue."""
    return Observer(runner, now).issue(identifier)
