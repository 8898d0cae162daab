"""The local executor: the turn runs in the task's worktree on this machine (Baton's default)."""

from __future__ import annotations

from ...dispatcher.process import run_streaming
from ..base import ExecutorProblem, TurnResult, TurnSpec
from ..talk import TurnTalk


class LocalExecutor:
    name = "local"
    remote = False

    def problem(self) -> ExecutorProblem | None:
        return None  # the runtimes' own checks (a missing CLI) are the dispatcher's

    def listen(self, listener) -> None:
        pass  # never changes

    def places(self, run_on: str | None) -> bool:
        return True  # one place: a pin (set while the project ran on Dask) means nothing here

    def run_turn(self, spec: TurnSpec) -> TurnResult:
        turn = spec.runtime.turn(spec.request)
        inv = turn.invocation
        spec.check(inv)
        talk = TurnTalk(turn, spec.record)
        try:
            outcome = run_streaming(
                inv.argv, cwd=inv.cwd, env=inv.env, stdin_text=inv.stdin,
                stdout_log=spec.raw_log, stderr_log=spec.stderr_log, on_line=talk.on_line,
                wall_timeout=spec.limits.timeout, stall_timeout=spec.limits.stall_timeout, stop=spec.stop,
                on_start=lambda pid: spec.on_start(pid, None), marker=spec.marker,
                talk=talk if inv.stdin is None else None,  # None: the CLI takes its prompt on stdin and only prints
            )
        finally:
            if talk.failure is not None and spec.summary.failure is None:
                spec.summary.failure = talk.failure
        return TurnResult(outcome=outcome, usage=None if spec.summary.result is not None else turn.usage())

    def close(self) -> None:
        pass
