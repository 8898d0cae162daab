"""One upstream follow per project, shared by every page of the board (/api/board/stream).

A ProjectHub follows its project's change stream (the agent's SSE stream, or the local store's
ChangeFeed) once, however many pages are open, and checks the dashboard-started agent's state
each second, as it checks the health of the project's issue tracker sync (a `source:`). It keeps
the last overview, the agent state, the source's health and its cursor, and hands every item to
its subscribers' bounded queues. It starts with its first subscriber and stops LINGER_SECONDS
after its last one left (a page reload reuses it); stopping closes the upstream stream.

A lost upstream is followed again after 0.5 s, doubling to 5 s, from the last cursor (the agent
answers a reset when that cursor means nothing to it any more, e.g. after a restart). The backoff
starts over only after a `changes` event or once the stream stayed up STEADY_SECONDS: an agent that
says hello and dies is not asked again twice a second for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from .connectors.base import AgentError, Connector, Unavailable, reason_of, state_overview

log = logging.getLogger(__name__)

WINDOW = 50  # summaries per status on a reset (as /api/board): one page of a column, the page shows 50
AGENT_CHECK_SECONDS = 1.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0
STEADY_SECONDS = 3.0
LINGER_SECONDS = 10.0
QUEUE_LIMIT = 1000  # items a page may fall behind before it is made to catch up afresh
# What of a dashboard-started agent's state is worth an event (its countdown is not: the page
# counts down from next_attempt_at itself).
AGENT_KEYS = ("state", "reason", "restarts", "last_exit_code", "next_attempt_at", "pid", "port")


def agent_key(agent: dict | None) -> tuple | None:
    return None if agent is None else tuple(agent.get(k) for k in AGENT_KEYS)


def lost_overview(reason: str) -> dict:
    return {"healthy": False, "reason": reason, "health": None, "dispatcher": None, "counts": None,
            "problems": [], "usage": None, "tasks_error": reason}


class Subscription:
    """A page's bounded queue of hub items. Past `limit` it stops collecting and says
    `overflowed`: the page catches up from its own cursor instead of memory growing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque = deque()
        self.overflowed = False
        self._ready = asyncio.Event()

    def push(self, item: tuple) -> None:
        if self.overflowed:
            return
        if len(self.items) >= self.limit:
            self.overflowed = True
            self.items.clear()
        else:
            self.items.append(item)
        self._ready.set()

    async def get(self) -> tuple | None:
        """The next item; None once overflowed."""
        while not self.items and not self.overflowed:
            self._ready.clear()
            await self._ready.wait()
        return None if self.overflowed else self.items.popleft()


class ProjectHub:
    """Items handed to subscribers: ("overview", dict), ("agent", dict | None), ("source", dict | None),
    ("tasks", {reset, tasks, removed, cursor}), ("cursor", cursor)."""

    def __init__(self, connector: Connector, agent_state: Callable[[], dict | None], window: int = WINDOW,
                 linger: float = LINGER_SECONDS, source_state: Callable[[], dict | None] = lambda: None) -> None:
        self.connector = connector
        self.agent_state = agent_state
        self.source_state = source_state
        self.source: dict | None = source_state()  # the source's health (None: the project has none)
        self.window = window
        self.linger = linger
        self.overview: dict | None = None  # the last upstream word (None: none yet)
        self.agent: dict | None = agent_state()
        self.cursor: str | None = None
        self.subscribers: set[Subscription] = set()
        self._task: asyncio.Task | None = None
        self._stopper: asyncio.Task | None = None
        self._retry_now = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def subscribe(self, limit: int = QUEUE_LIMIT) -> Subscription:
        sub = Subscription(limit)
        self.subscribers.add(sub)
        if self._stopper is not None:  # a page came back within the linger: keep following
            self._stopper.cancel()
            self._stopper = None
        if not self.running:
            self.agent = self.agent_state()
            self.source = self.source_state()
            self._task = asyncio.create_task(self._run(), name=f"hub {self.connector.project.id}")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers and self.running and self._stopper is None:
            # Not awaited by the page leaving (its clean-up is cancelled at every await): a task of its own.
            self._stopper = asyncio.create_task(self._stop_later())

    async def _stop_later(self) -> None:
        await asyncio.sleep(self.linger)
        self._stopper = None
        if not self.subscribers:
            await self.close()

    async def close(self) -> None:
        """Stop following (at once): the upstream stream is closed before this returns."""
        if self._stopper is not None and self._stopper is not asyncio.current_task():
            self._stopper.cancel()
            self._stopper = None
        task, self._task = self._task, None
        self.overview = None  # stale once nobody follows; the cursor stays: a restart resumes from it
        if task is not None:
            task.cancel()
            # Shielded: a second cancellation inside the follow's clean-up would leave the
            # agent's stream open (and a pooled connection taken) for good.
            await asyncio.shield(asyncio.gather(task, return_exceptions=True))

    def _send(self, item: tuple) -> None:
        for sub in list(self.subscribers):
            sub.push(item)
            if sub.overflowed:
                self.subscribers.discard(sub)  # its page catches up on its own and subscribes again

    def _set_overview(self, overview: dict) -> None:
        if overview != self.overview:
            self.overview = overview
            self._send(("overview", overview))

    # ----- the follow ---------------------------------------------------------------------

    async def _run(self) -> None:
        watcher = asyncio.create_task(self._watch_agent())
        try:
            await self._follow()
        finally:
            watcher.cancel()
            await asyncio.shield(asyncio.gather(watcher, return_exceptions=True))

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_FIRST
        while True:
            started = loop.time()
            try:
                async with contextlib.aclosing(self.connector.follow_changes(self.cursor, self.window)) as events:
                    async for event, data, _ in events:
                        if event == "state":
                            self._set_overview(state_overview(data))
                        elif event == "changes":
                            backoff = BACKOFF_FIRST  # it delivers: the next loss retries quickly again
                            self._changes(data)
                reason = "the project's change stream ended"
            except (Unavailable, AgentError) as exc:
                reason = reason_of(exc)
            except Exception:  # a bug must not silently stop this project's updates for good
                log.exception("following project %s", self.connector.project.id)
                reason = "the dashboard failed following this project (see its log)"
            if loop.time() - started >= STEADY_SECONDS:
                backoff = BACKOFF_FIRST
            self._set_overview(lost_overview(reason))
            self._retry_now.clear()
            try:  # the backoff, cut short (and begun again) when the dashboard's own agent changed state
                await asyncio.wait_for(self._retry_now.wait(), backoff)
                backoff = BACKOFF_FIRST
            except TimeoutError:
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _changes(self, data: dict) -> None:
        reset = bool(data.get("reset")) or self.cursor is None
        self.cursor = data["cursor"]
        if reset or data.get("tasks") or data.get("removed"):
            self._send(("tasks", {"reset": reset, "tasks": data.get("tasks", []),
                                  "removed": data.get("removed", []), "cursor": self.cursor}))
        else:
            self._send(("cursor", self.cursor))

    async def _watch_agent(self) -> None:
        while True:
            await asyncio.sleep(AGENT_CHECK_SECONDS)
            agent = self.agent_state()
            if agent_key(agent) != agent_key(self.agent):
                self.agent = agent
                self._send(("agent", agent))
                self._retry_now.set()
            source = self.source_state()
            if source != self.source:  # a sync ended, failed or recovered
                self.source = source
                self._send(("source", source))


def build_hubs(connectors: dict[str, Connector], agent_state: Callable[[str], dict | None],
               source_state: Callable[[str], dict | None] = lambda pid: None) -> dict[str, ProjectHub]:
    return {pid: ProjectHub(c, lambda pid=pid: agent_state(pid), source_state=lambda pid=pid: source_state(pid))
            for pid, c in connectors.items()}
