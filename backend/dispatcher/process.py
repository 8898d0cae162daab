"""Run one child process in its own process group, streaming its output, with time limits.

The child (and everything it starts) gets a new session, so the whole group can be stopped
with one signal: SIGTERM, a grace period, then SIGKILL. Output is copied line by line to a log
file and to a callback as it arrives, so memory stays flat however long the log grows, and the
wall-clock and stall limits are checked while output is still flowing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.1  # how often limits and stop requests are looked at
GRACE_SECONDS = 3.0


class StopRequest:
    """Asks a running process to stop, saying why ("cancelled", "interrupted", "shutdown")."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@dataclass
class ProcessOutcome:
    exit_code: int | None
    stopped: str | None  # None, "timeout", "stalled", or the StopRequest's reason
    duration: float
    pid: int


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, proc: subprocess.Popen | None = None, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM the whole group, wait up to `grace`, then SIGKILL whatever is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our direct child so it does not keep the group alive
            if not group_alive(pgid):
                break
            time.sleep(0.02)
        if not group_alive(pgid):
            break
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("process %s did not exit after SIGKILL", proc.pid)


def run_streaming(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    stdin_text: str | None,
    stdout_log: Path,
    stderr_log: Path | None,
    on_line: Callable[[str], None] | None,
    wall_timeout: float | None,
    stall_timeout: float | None,
    stop: StopRequest,
    on_start: Callable[[int], None] | None = None,
) -> ProcessOutcome:
    """Run `argv`; append stdout to `stdout_log` (stderr to `stderr_log`, or into stdout if None)."""
    started = time.monotonic()
    last_output = [started]
    with open(stdout_log, "ab") as out, open(stderr_log or os.devnull, "ab") as err:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err if stderr_log is not None else subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            message = f"cannot start {argv[0]}: {exc}\n".encode()
            (err if stderr_log is not None else out).write(message)
            return ProcessOutcome(exit_code=127, stopped=None, duration=0.0, pid=0)
        pgid = proc.pid  # start_new_session: the child leads its own group
        if on_start is not None:
            try:
                on_start(proc.pid)
            except BaseException:
                kill_group(pgid, proc)  # nobody would be watching it otherwise
                raise

        if stdin_text is not None:
            threading.Thread(target=_feed, args=(proc, stdin_text), daemon=True).start()

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                out.write(raw)
                out.flush()
                last_output[0] = time.monotonic()
                if on_line is not None:
                    try:
                        on_line(raw.decode("utf-8", "replace"))
                    except Exception:  # a parser bug must not stop the copying
                        log.exception("output handler failed on a line; line kept in %s", stdout_log)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()

        stopped: str | None = None
        while True:
            try:
                proc.wait(timeout=CHECK_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if stop.is_set():
                stopped = stop.reason
            elif wall_timeout is not None and now - started > wall_timeout:
                stopped = "timeout"
            elif stall_timeout is not None and now - last_output[0] > stall_timeout:
                stopped = "stalled"
            if stopped:
                kill_group(pgid, proc)
                break
        # Whatever the child left running in its group goes too, or it would hold our pipe open.
        if group_alive(pgid):
            kill_group(pgid, proc, grace=1.0)
        reader.join(timeout=10)
        if reader.is_alive():
            log.warning("output of pid %s still open after exit (a process left its group)", proc.pid)
    return ProcessOutcome(exit_code=proc.returncode, stopped=stopped, duration=time.monotonic() - started, pid=proc.pid)


def _feed(proc: subprocess.Popen, text: str) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(text.encode("utf-8"))
        proc.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the child exited or closed stdin early; its exit says the rest


def tail(path: Path, max_bytes: int = 4000) -> str:
    """The end of a log file (for feedback prompts and failure messages)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace")
    return text if size <= max_bytes else "…" + text
