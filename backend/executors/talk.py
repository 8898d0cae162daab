"""A runtime's Turn adapted to the process layer (dispatcher/process.py): each reply's events go
where the executor sends them, as they come; a reply's failure is kept for the turn's verdict."""

from __future__ import annotations

from collections.abc import Callable

from ..dispatcher.process import Say
from ..runtimes.base import AgentEvent, FailureReason, Reply, Turn


class TurnTalk:
    def __init__(self, turn: Turn, record: Callable[[AgentEvent], None]) -> None:
        self.turn, self.record = turn, record
        self.failure: tuple[FailureReason, str] | None = None

    def _say(self, reply: Reply) -> Say:
        for ev in reply.events:
            self.record(ev)
        if reply.fail is not None and self.failure is None:
            self.failure = reply.fail
        return Say(lines=reply.send, close=reply.close_stdin, end=reply.fail[0] if reply.fail else None)

    def opening(self) -> Say:
        return self._say(self.turn.opening())

    def on_line(self, line: str) -> Say:
        return self._say(self.turn.on_line(line))

    def interrupt(self) -> Say:
        return self._say(self.turn.interrupt())
