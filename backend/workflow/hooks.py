"""A WORKFLOW.md hook (`after_create`, `before_run`, `after_run`, `before_remove`): one
`bash -lc <script>` in the task's worktree, bounded by its timeout.

It runs like any process of the task (dispatcher/process.py): its own process group, the
task's marker in its environment (so whatever it leaves running is stopped with it, and the
task's end finds anything it detached), stdin closed. Its output goes to the task's hook log
between a header and a footer line; the caller decides what a failure means, so nothing here
raises for a script that fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..dispatcher.policy import HookSpec
from ..dispatcher.process import StopRequest, run_streaming

TAIL_CHARS = 2000


@dataclass(frozen=True)
class HookResult:
    name: str
    ok: bool
    exit_code: int | None
    timed_out: bool
    stopped: bool  # the task was asked to stop while the hook ran (cancel, shutdown)
    seconds: float
    output_tail: str  # the end of what it printed (stdout and stderr), or why it could not start
    timeout: float = 0.0

    def summary(self) -> str:
        """In words, for the transcript: "ok in 0.4 s", "failed (exit 3) in 0.2 s", ..."""
        if self.ok:
            return f"ok in {self.seconds:.1f} s"
        if self.timed_out:
            return f"timed out after {self.timeout:g} s"
        if self.stopped:
            return f"stopped after {self.seconds:.1f} s (the task is stopping)"
        if self.exit_code is None:
            return f"could not run: {self.output_tail}"
        return f"failed (exit {self.exit_code}) in {self.seconds:.1f} s"


def run_hook(spec: HookSpec, *, cwd: Path, env: Mapping[str, str], log_file: Path, stop: StopRequest,
             marker: Mapping[str, str]) -> HookResult:
    """Run the hook; returns its outcome (never raises for a failing script or a missing bash)."""
    started = time.monotonic()

    def broken(reason: str) -> HookResult:
        return HookResult(name=spec.name, ok=False, exit_code=None, timed_out=False, stopped=False,
                          seconds=time.monotonic() - started, output_tail=reason, timeout=spec.timeout)

    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as handle:
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            handle.write(f"\n=== hook {spec.name} in {cwd} (timeout {spec.timeout:g} s) at {stamp} ===\n".encode())
            start = handle.tell()
        outcome = run_streaming(
            ["bash", "-lc", spec.script], cwd=cwd, env={**env, **marker}, stdin_text=None,
            stdout_log=log_file, stderr_log=None, on_line=None, wall_timeout=spec.timeout,
            stall_timeout=None, stop=stop, marker=marker)
    except OSError as exc:  # the log cannot be written, or bash cannot be started
        return broken(f"{type(exc).__name__}: {exc}")
    output = _read_from(log_file, start)
    if outcome.pid == 0:  # run_streaming could not start bash (missing, or the folder is gone)
        return broken(output.strip() or "bash could not be started")
    timed_out = outcome.stopped == "timeout"
    stopped = outcome.stopped is not None and not timed_out
    result = HookResult(name=spec.name, ok=outcome.exit_code == 0 and outcome.stopped is None,
                        exit_code=outcome.exit_code, timed_out=timed_out, stopped=stopped,
                        seconds=outcome.duration, output_tail=output, timeout=spec.timeout)
    try:
        with open(log_file, "ab") as handle:
            handle.write(f"\n=== hook {spec.name}: {result.summary()} ===\n".encode())
    except OSError:
        pass  # the outcome is in the result and the transcript
    return result


def _read_from(path: Path, offset: int) -> str:
    """The last TAIL_CHARS characters written to `path` after `offset`."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - TAIL_CHARS * 4))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return text[-TAIL_CHARS:] if len(text) > TAIL_CHARS else text
