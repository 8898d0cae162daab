"""The board's one live stream (GET /api/board/stream): every project's change feed, merged.

Each project is followed upstream ONCE by its ProjectHub (projecthub.py), whatever the number of
pages. A page joining a project subscribes to its hub first, then catches up with one
`changes(page cursor)` call and forwards the hub's items from there (a delta the catch-up already
covered is skipped). The page gets

- `project` (the project as in /api/board, without tasks, cursor and usage) whenever what it
  shows changes: health, dispatcher, counts, the dashboard-started agent's state, its issue
  tracker's sync, the project becoming unavailable with the reason, or coming back;
- `usage` ({project, usage}) only when the project's usage changed (it can be large);
- `tasks` ({project, reset, tasks, removed}) with SSE `id:` = the combined cursor
  "pid:epoch.rev,pid2:epoch.rev", which the browser sends back as Last-Event-ID to resume.

A page that falls QUEUE_LIMIT items behind (a stalled connection) is dropped by the hub and
catches up afresh from its own cursor. A catch-up that fails shows the project unavailable to
that page and is tried again when the hub next reports the project healthy (or after a backoff).
While nothing changes, only a keep-alive comment every 15 s.
"""

from __future__ import annotations

import asyncio
import logging
import re

from ..changefeed import parse_cursor
from ..models import STATUSES
from ..web.sse import sse_event
from .connectors.base import AgentError, Connector, Unavailable, reason_of, workflow_source
from .projecthub import (BACKOFF_FIRST, BACKOFF_MAX, QUEUE_LIMIT, WINDOW, ProjectHub, Subscription, agent_key,
                         lost_overview, state_overview)

log = logging.getLogger(__name__)

__all__ = ["WINDOW", "BoardFeed", "board_cursor", "describe", "group", "lost_overview", "parse_board_cursor",
           "state_overview"]

KEEPALIVE_SECONDS = 15.0
PAGE_QUEUE = 64  # events ready for the page; a page that stops reading backs up into its hub queues
_PROJECT_ID = re.compile(r"^[a-z0-9-]{1,64}$")


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


def describe(connector: Connector, overview: dict, agent: dict | None, source: dict | None = None) -> dict:
    """A project as /api/projects and the board show it. `agent`: the state of the baton-agent
    this dashboard runs for the project (null: not ours); `source`: the health of its issue
    tracker's sync (its `source:`), else the one its agent runs from a WORKFLOW.md (said in the
    agent's health, so it follows the health's changes), else null."""
    p = connector.project
    if source is None:
        source = workflow_source(overview.get("health"))
    return {"id": p.id, "name": p.name, "color": p.color, "description": p.description,
            "mode": connector.mode, "agent": agent, "source": source, **overview}


def group(tasks: list[dict]) -> dict[str, list[dict]]:
    """A flat list of summaries as {status: [summary in sort order]} (every status present)."""
    columns: dict[str, list[dict]] = {status: [] for status in STATUSES}
    for item in tasks:
        columns.setdefault(item["status"], []).append(item)
    for items in columns.values():
        items.sort(key=lambda item: item["sort"])
    return columns


def _same_epoch_and_not_newer(cursor: str, than: str | None) -> bool:
    """True when `cursor` is of the epoch of `than` and not after it (nothing new for the page)."""
    if than is None:
        return False
    (epoch, revision), (page_epoch, page_revision) = parse_cursor(cursor), parse_cursor(than)
    return epoch == page_epoch and revision <= page_revision


class BoardFeed:
    """One page's stream over the dashboard's hubs (one per project)."""

    def __init__(self, hubs: dict[str, ProjectHub], cursors: dict[str, str], window: int = WINDOW,
                 limit: int = QUEUE_LIMIT, buffer: int = PAGE_QUEUE) -> None:
        self.hubs = hubs
        self.cursors = {pid: c for pid, c in cursors.items() if pid in hubs}
        self.window = window
        self.limit = limit
        self.queue: asyncio.Queue = asyncio.Queue(buffer)
        self.sent: dict[str, tuple] = {}  # what the page was last told per project (for "changed?")

    async def events(self):
        """SSE text for the page, until the caller stops iterating (the page left)."""
        workers = [asyncio.create_task(self._relay(pid, hub)) for pid, hub in self.hubs.items()]
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
            # time, inside their clean-up (a catch-up request under way, a subscription).
            await asyncio.shield(asyncio.gather(*workers, return_exceptions=True))

    # ----- the page's events, in the order it gets them -----------------------------------

    def _apply(self, item: tuple) -> str | None:
        kind, pid, data = item
        if kind == "cursor":  # nothing for the page, but a resume starts from here
            self.cursors[pid] = data
            return None
        if kind == "tasks":
            self.cursors[pid] = data.pop("cursor")
            return sse_event("tasks", {"project": pid, **data}, board_cursor(self.cursors))
        if kind == "usage":
            return sse_event("usage", {"project": pid, "usage": data})
        overview, agent, source = data
        entry = describe(self.hubs[pid].connector, {k: v for k, v in overview.items() if k != "usage"}, agent, source)
        key = (repr({k: v for k, v in entry.items() if k != "agent"}), agent_key(agent))
        if self.sent.get(pid) == key:
            return None
        self.sent[pid] = key
        return sse_event("project", entry)

    # ----- one project for this page ------------------------------------------------------

    async def _relay(self, pid: str, hub: ProjectHub) -> None:
        cursor = self.cursors.get(pid)
        while True:  # once more after each overflow, from where the page got to
            sub = hub.subscribe(self.limit)
            try:
                cursor = await _PageOfProject(self, pid, hub, sub, cursor).run()
            finally:
                hub.unsubscribe(sub)


class _PageOfProject:
    """What one page knows of one project: its cursor, its usage, whether it caught up."""

    def __init__(self, feed: BoardFeed, pid: str, hub: ProjectHub, sub: Subscription, cursor: str | None) -> None:
        self.feed, self.pid, self.hub, self.sub = feed, pid, hub, sub
        self.cursor = cursor
        self.usage: dict | None = None
        self.failure: str | None = None  # why the catch-up failed, while it has not succeeded
        self.caught_up = False

    async def put(self, kind: str, data) -> None:
        await self.feed.queue.put((kind, self.pid, data))

    async def show(self) -> None:
        overview = lost_overview(self.failure) if self.failure is not None else self.hub.overview
        if overview is not None:  # None: the hub has not heard from the project yet; its first word will come
            await self.put("project", (overview, self.hub.agent, self.hub.source))

    async def catch_up(self) -> None:
        try:
            answer = await self.hub.connector.changes(self.cursor, self.feed.window)
        except (Unavailable, AgentError) as exc:
            self.failure = reason_of(exc)
            return
        except Exception:  # a bug must not silently stop this project's updates for good
            log.exception("catching up with project %s", self.pid)
            self.failure = "the dashboard failed reading this project (see its log)"
            return
        self.failure, self.caught_up = None, True
        self.cursor = answer["cursor"]
        if answer["reset"] or answer["tasks"] or answer.get("removed"):
            await self.put("tasks", {"reset": answer["reset"], "tasks": answer["tasks"],
                                     "removed": answer.get("removed", []), "cursor": self.cursor})
            if answer.get("usage") is not None:  # things changed since the page last heard: so may have usage
                await self.put("usage", answer["usage"])
        else:
            await self.put("cursor", self.cursor)
        self.usage = answer.get("usage")

    async def run(self) -> str | None:
        """Follows until the page's queue overflows; returns the cursor the page will have."""
        await self.catch_up()
        await self.show()
        retry_in = BACKOFF_FIRST
        while True:
            if self.caught_up:
                item = await self.sub.get()
            else:
                try:
                    item = await asyncio.wait_for(self.sub.get(), retry_in)
                except TimeoutError:
                    item = ("retry", None)
            if item is None:
                return self.cursor  # overflowed: catch up afresh
            kind, data = item
            if kind == "retry" or (kind == "overview" and data["healthy"] and not self.caught_up):
                await self.catch_up()
                retry_in = min(retry_in * 2, BACKOFF_MAX) if not self.caught_up else BACKOFF_FIRST
            if kind in ("overview", "agent", "source", "retry"):
                await self.show()
            if kind == "overview" and data.get("usage") is not None and data["usage"] != self.usage:
                self.usage = data["usage"]
                await self.put("usage", self.usage)
            elif kind == "tasks" and self.caught_up:
                if _same_epoch_and_not_newer(data["cursor"], self.cursor):
                    continue  # the catch-up already covered it
                self.cursor = data["cursor"]
                await self.put("tasks", dict(data))
            elif kind == "cursor" and self.caught_up and self.cursor is not None:
                if parse_cursor(data)[0] == parse_cursor(self.cursor)[0] and \
                        not _same_epoch_and_not_newer(data, self.cursor):
                    self.cursor = data
                    await self.put("cursor", data)
