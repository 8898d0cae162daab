"""The board's one live stream (GET /api/board/stream): every project's change feed, merged.

Per page, one upstream follow per project (the agent's SSE change stream, or the local store's
ChangeFeed) runs as a task feeding one queue; the page gets

- `project` (the project as in /api/board, without tasks and cursor) whenever what it shows
  changes: health, dispatcher, counts, usage, the dashboard-started agent's state (checked each
  second), the project becoming unavailable with the reason, or coming back;
- `tasks` ({project, reset, tasks, removed}) with SSE `id:` = the combined cursor
  "pid:epoch.rev,pid2:epoch.rev", which the browser sends back as Last-Event-ID to resume.

A lost upstream is followed again after 0.5 s, doubling to 5 s, from the last cursor it gave
(the agent answers a reset when that cursor means nothing to it any more, e.g. after a restart).
An agent that names another project is unavailable and none of its tasks are relayed (the HTTP
connector refuses its stream). While nothing changes, only a keep-alive comment every 15 s.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable

from ..changefeed import parse_cursor
from ..models import STATUSES
from ..web.sse import sse_event
from .connectors.base import AgentError, Connector, Unavailable, health_problems, reason_of

log = logging.getLogger(__name__)

WINDOW = 100  # summaries per status on a reset (as /api/board)
KEEPALIVE_SECONDS = 15.0
AGENT_CHECK_SECONDS = 1.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0
_PROJECT_ID = re.compile(r"^[a-z0-9-]{1,64}$")
# What of a dashboard-started agent's state is worth an event (its countdown is not: the page
# counts down from next_attempt_at itself).
_AGENT_KEYS = ("state", "reason", "restarts", "last_exit_code", "next_attempt_at", "pid", "port")


def parse_board_cursor(text: str | None) -> dict[str, str]:
    """{project id: its cursor} of a combined cursor; a part that is not one is left out (that
    project then starts from a reset, which is always correct)."""
    cursors: dict[str, str] = {}
    for part in (text or "").split(",")[:1000]:
        pid, sep, cursor = part.strip().partition(":")
        if not sep or not _PROJECT_ID.match(pid):
            continue
        try:
            parse_cursor(cursor)
        except ValueError:
            continue
        cursors[pid] = cursor
    return cursors


def board_cursor(cursors: dict[str, str]) -> str:
    return ",".join(f"{pid}:{cursor}" for pid, cursor in cursors.items())


def describe(connector: Connector, overview: dict, agent: dict | None) -> dict:
    """A project as /api/projects and the board show it. `agent`: the state of the baton-agent
    this dashboard runs for the project (null: not ours)."""
    p = connector.project
    return {"id": p.id, "name": p.name, "color": p.color, "description": p.description,
            "mode": connector.mode, "agent": agent, **overview}


def group(tasks: list[dict]) -> dict[str, list[dict]]:
    """A flat list of summaries as {status: [summary in sort order]} (every status present)."""
    columns: dict[str, list[dict]] = {status: [] for status in STATUSES}
    for item in tasks:
        columns.setdefault(item["status"], []).append(item)
    for items in columns.values():
        items.sort(key=lambda item: item["sort"])
    return columns


def state_overview(state: dict) -> dict:
    """The project part of an agent's `state` event: {healthy, reason, health, dispatcher, counts,
    problems, usage, tasks_error}."""
    health, dispatcher = state["health"], state["dispatcher"]
    status = health.get("status")
    healthy = status in ("ok", "degraded")  # degraded: still serving, with problems to show
    reason = None if healthy else f"agent reports status {status!r}"
    return {"healthy": healthy, "reason": reason, "health": health, "dispatcher": dispatcher,
            "counts": dispatcher.get("counts"), "problems": health_problems(health),
            "usage": state.get("usage"), "tasks_error": reason}


def lost_overview(reason: str) -> dict:
    return {"healthy": False, "reason": reason, "health": None, "dispatcher": None, "counts": None,
            "problems": [], "usage": None, "tasks_error": reason}


def _agent_key(agent: dict | None) -> tuple | None:
    return None if agent is None else tuple(agent.get(k) for k in _AGENT_KEYS)


class BoardFeed:
    def __init__(self, connectors: dict[str, Connector], agent_state: Callable[[str], dict | None],
                 cursors: dict[str, str], window: int = WINDOW) -> None:
        self.connectors = connectors
        self.agent_state = agent_state
        self.cursors = {pid: c for pid, c in cursors.items() if pid in connectors}
        self.window = window
        self.queue: asyncio.Queue = asyncio.Queue()
        self.overviews: dict[str, dict] = {}  # the last upstream word per project
        self.agents: dict[str, dict | None] = {}
        self.sent: dict[str, tuple] = {}  # what the page was last told per project (for "changed?")
        self.retry_now: dict[str, asyncio.Event] = {}

    async def events(self) -> AsyncIterator[str]:
        """SSE text for the page, until the caller stops iterating (the page left)."""
        workers = [asyncio.create_task(self._follow(pid, c)) for pid, c in self.connectors.items()]
        workers.append(asyncio.create_task(self._watch_agents()))
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        try:
            while True:
                try:
                    wait = max(0.0, last_sent + KEEPALIVE_SECONDS - loop.time())
                    item = await asyncio.wait_for(self.queue.get(), wait)
                except TimeoutError:
                    item = None
                text = self._apply(item) if item is not None else None
                if text is None and loop.time() - last_sent >= KEEPALIVE_SECONDS:
                    text = ": ka\n\n"  # words that changed nothing for the page do not count as said
                if text is not None:
                    last_sent = loop.time()
                    yield text
        finally:
            for worker in workers:
                worker.cancel()
            # Shielded: when the page leaves, this generator is cancelled again at every await
            # (Starlette's cancel scope); a cancelled gather would cancel the workers a second
            # time, inside their clean-up, and leave the agents' streams open (and pooled
            # connections taken) for good.
            await asyncio.shield(asyncio.gather(*workers, return_exceptions=True))

    # ----- what the workers report, turned into events -----------------------------------

    def _apply(self, item: tuple) -> str | None:
        kind, pid, data = item
        if kind == "cursor":  # nothing for the page, but a resume starts from here
            self.cursors[pid] = data
            return None
        if kind == "tasks":
            self.cursors[pid] = data.pop("cursor")
            return sse_event("tasks", {"project": pid, **data}, board_cursor(self.cursors))
        if kind == "overview":
            self.overviews[pid] = data
        elif kind == "agent":
            self.agents[pid] = data
        if pid not in self.overviews:
            return None  # nothing known of the project yet: its first word will carry the agent too
        agent = self.agents[pid] if pid in self.agents else self.agent_state(pid)
        entry = describe(self.connectors[pid], self.overviews[pid], agent)
        key = (repr({k: v for k, v in entry.items() if k != "agent"}), _agent_key(agent))
        if self.sent.get(pid) == key:
            return None
        self.sent[pid] = key
        return sse_event("project", entry)

    async def _follow(self, pid: str, connector: Connector) -> None:
        backoff = BACKOFF_FIRST
        since = self.cursors.get(pid)
        while True:
            try:
                async for event, data, _ in connector.follow_changes(since, self.window):
                    backoff = BACKOFF_FIRST  # it answered: the next loss retries quickly again
                    if event == "state":
                        await self.queue.put(("overview", pid, state_overview(data)))
                    elif event == "changes":
                        reset = bool(data.get("reset")) or since is None  # no cursor: the page starts over
                        since = data["cursor"]
                        if reset or data.get("tasks") or data.get("removed"):
                            await self.queue.put(("tasks", pid, {
                                "reset": reset, "tasks": data.get("tasks", []),
                                "removed": data.get("removed", []), "cursor": since}))
                        else:
                            await self.queue.put(("cursor", pid, since))
                reason = "the project's change stream ended"
            except (Unavailable, AgentError) as exc:
                reason = reason_of(exc)
            except Exception:  # a bug must not silently stop this project's updates for good
                log.exception("following project %s", pid)
                reason = "the dashboard failed following this project (see its log)"
            await self.queue.put(("overview", pid, lost_overview(reason)))
            retry = self.retry_now.setdefault(pid, asyncio.Event())
            retry.clear()
            try:  # the backoff, cut short (and begun again) when the dashboard's own agent changed state
                await asyncio.wait_for(retry.wait(), backoff)
                backoff = BACKOFF_FIRST
            except TimeoutError:
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _watch_agents(self) -> None:
        last = {pid: _agent_key(self.agent_state(pid)) for pid in self.connectors}
        while True:
            await asyncio.sleep(AGENT_CHECK_SECONDS)
            for pid in self.connectors:
                agent = self.agent_state(pid)
                if _agent_key(agent) != last[pid]:
                    last[pid] = _agent_key(agent)
                    await self.queue.put(("agent", pid, agent))
                    if pid in self.retry_now:
                        self.retry_now[pid].set()

