"""One agent turn run the way the dispatcher runs it (runtime.turn, then run_streaming), for
tests that look at a single turn rather than a whole task."""

from __future__ import annotations

from pathlib import Path

from backend.dispatcher.process import StopRequest, run_streaming
from backend.executors.talk import TurnTalk
from backend.runtimes.base import AgentEvent, RunSummary, TurnRequest


def run_turn(runtime, request: TurnRequest, logs: Path) -> tuple[RunSummary, list[AgentEvent], int]:
    """One turn as the dispatcher runs it (runtime.turn, then run_streaming)."""
    turn = runtime.turn(request)
    inv = turn.invocation
    summary, events = RunSummary(), []

    def record(ev: AgentEvent) -> None:
        events.append(ev)
        summary.add(ev)

    talk = TurnTalk(turn, record)  # the executors' own adapter
    logs.mkdir(parents=True, exist_ok=True)
    outcome = run_streaming(inv.argv, cwd=inv.cwd, env=inv.env, stdin_text=inv.stdin, stdout_log=logs / "raw.log",
                            stderr_log=logs / "stderr.log", on_line=talk.on_line, wall_timeout=120,
                            stall_timeout=60, stop=StopRequest(), talk=talk if inv.stdin is None else None)
    summary.failure = summary.failure or talk.failure
    assert outcome.stopped is None, (outcome, (logs / "stderr.log").read_text()[-2000:])
    return summary, events, outcome.exit_code


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(folder).parts}
