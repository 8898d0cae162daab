"""Run one child process, streaming its output, with time limits; stop everything it started.

The child gets a new session (so its own group), and every process of a task carries the
task's marker in its environment (`TASK_ID=<id>` and `BATON_PROJECT=<project dir>`, see
`task_marker`). Stopping a task stops the recorded group *and* every process whose
environment carries the whole marker, however it detached (`setsid`, double fork): SIGTERM to
all, a short grace period, then SIGKILL to whatever is left, rescanning as it goes. This runs
when the child exits, on a stop request, on the wall-clock and stall limits, and in crash
recovery. Limitation: a process that both loses the marker and leaves the group is found only
while a marked ancestor of it still lives (descendants of every process found are included):
`env -i`, a process title written over the environment (PostgreSQL, nginx), or an environment
we may not read (a non-dumpable process when Baton is not root). Only a cgroup would track it.

A CLI that talks back (Codex's app-server) gets a `Talk`: its stdin stays open, what the talk
answers to each line is written to it by a writer thread (so the reader never blocks on a
full pipe), and a stop first asks the talk for a polite interrupt and gives the process
INTERRUPT_GRACE to end its turn by itself before the kill.

Output is copied to a log file and to a per-line callback as it arrives, so memory stays flat
however long the log grows, and the limits are checked while output is still flowing. The
reader never waits on a pipe someone else still holds: once the task's processes are stopped
it drains what is buffered (briefly) and returns, flushing a trailing partial line.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.1  # how often limits and stop requests are looked at
GRACE_SECONDS = 2.0  # SIGTERM to SIGKILL; short enough that a cancel ends well within 5 s
EXIT_GRACE_SECONDS = 1.0  # for what a child left behind when it exited by itself
KILL_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.03
DRAIN_SECONDS = 1.0  # reading on after the task's processes are gone, if a stray writer lingers
INTERRUPT_GRACE = 1.5  # a talking CLI's own interrupt, before SIGTERM: a cancel still ends within 5 s


class StopRequest:
    """Asks a running process to stop, saying why ("cancelled", "interrupted", "shutdown")."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self._listeners: list[Callable[[], None]] = []

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()
            for listener in list(self._listeners):
                listener()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener` (once) when the stop is requested: a thread blocked on something
        else (a worker slot, the merge queue's verdict) wakes at once, without polling."""
        self._listeners.append(listener)
        if self._event.is_set():
            listener()

    def is_set(self) -> bool:
        return self._event.is_set()


@dataclass
class Say:
    """A talk's answer: lines for the process's stdin, whether to close it afterwards, and
    whether to end the run now (`end`: the reason, reported as ProcessOutcome.stopped)."""

    lines: list[str] = field(default_factory=list)
    close: bool = False
    end: str | None = None


class Talk(Protocol):
    def opening(self) -> Say: ...

    def on_line(self, line: str) -> Say: ...

    def interrupt(self) -> Say: ...


class _Writer(threading.Thread):
    """Writes a talk's lines to the child's stdin in order; a closed pipe ends it quietly."""

    _CLOSE = object()

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.end_reason: str | None = None
        self.ended = threading.Event()

    def handle(self, say: Say | None) -> None:
        if say is None:
            return
        for line in say.lines:
            self.queue.put((line.rstrip("\n") + "\n").encode("utf-8"))
        if say.close:
            self.queue.put(self._CLOSE)
        if say.end and not self.ended.is_set():
            self.end_reason = say.end
            self.ended.set()

    def run(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while True:
                item = self.queue.get()
                if item is self._CLOSE:
                    break
                stdin.write(item)
                stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the child exited or closed stdin; its exit says the rest
        finally:
            try:
                stdin.close()
            except (BrokenPipeError, OSError):
                pass

    def close(self) -> None:
        self.queue.put(self._CLOSE)


@dataclass
class ProcessOutcome:
    exit_code: int | None
    stopped: str | None  # None, "timeout", "stalled", or the StopRequest's reason
    duration: float
    pid: int


def task_marker(task_id: str, project: Path) -> dict[str, str]:
    """The environment entries every process of a task carries (the project too, so another
    project's task with the same id is never hit)."""
    return {"TASK_ID": task_id, "BATON_PROJECT": str(Path(project).resolve())}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat(pid: int | str) -> tuple[int, int, str, int] | None:
    """(ppid, pgid, state, start time) of a process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[2]), fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _has_marker(pid: int, wanted: set[bytes]) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return wanted.issubset(environ.split(b"\0"))


def find_processes(pgid: int | None, marker: Mapping[str, str] | None, *,
                   known: set[tuple[int, int]] | None = None, group_held: bool = False) -> dict[int, int]:
    """Live processes of a task, as {pid: start time}: members of group `pgid`, processes whose
    environment holds every entry of `marker`, and the descendants of all of those. Zombies
    (already exited) and this process are left out.

    A group id is a pid: once the group is empty and its leader reaped, the number can name a
    stranger's group. So members of `pgid` count only while it provably is still the task's
    group: `group_held` (the caller holds its leader unreaped), or one of its members is marked
    or was counted before (`known`: (pid, start time) pairs, updated here)."""
    wanted = {f"{k}={v}".encode() for k, v in (marker or {}).items()}
    me = os.getpid()
    table: dict[int, tuple[int, int, str, int]] = {}
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:  # no /proc: the process group is all we can see
        return {pgid: 0} if pgid and group_alive(pgid) else {}
    for name in entries:
        info = _stat(name)
        if info is not None and info[2] != "Z" and int(name) != me:
            table[int(name)] = info
    found = {pid for pid in table if wanted and _has_marker(pid, wanted)}
    members = {pid for pid, (_, group, _, _) in table.items() if pgid is not None and group == pgid}
    known = known if known is not None else set()
    if group_held or members & found or any((pid, table[pid][3]) in known for pid in members):
        known.update((pid, table[pid][3]) for pid in members)
        found |= members
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {pid: table[pid][3] for pid in found}


def _signal(pid: int, start: int, sig: int) -> None:
    """Signal `pid` only if it is still the process that was found (same start time)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd here: a (tiny) pid-reuse window remains
        info = _stat(pid)
        if info is not None and info[3] == start:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        return
    try:
        info = _stat(pid)
        if info is not None and info[3] == start:  # checked after pinning the process
            signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass
    finally:
        os.close(fd)


def stop_processes(pgid: int | None, marker: Mapping[str, str] | None = None,
                   proc: subprocess.Popen | None = None, grace: float = GRACE_SECONDS,
                   known: set[tuple[int, int]] | None = None) -> None:
    """SIGTERM every process of the task, wait up to `grace` for them to go, then SIGKILL
    whatever is left. Rescans while waiting: a process may fork on its way out. `known`:
    (pid, start time) of members of `pgid` already shown to be the task's (find_processes)."""
    term_until = time.monotonic() + grace
    kill_until: float | None = None
    sig = signal.SIGTERM
    signalled: set[tuple[int, int]] = set()
    known = set(known or ())
    # `proc` (the group's leader) is reaped only at the end: until then its pid, the group id,
    # cannot be given to another process.
    held = proc is not None and proc.pid == pgid and proc.returncode is None
    while True:
        now = time.monotonic()
        if proc is not None and _exited(proc):  # a zombie now: it does not count as alive
            # The grace is for the leader to wind down; what it leaves behind gets less.
            term_until = min(term_until, now + EXIT_GRACE_SECONDS)
        found = find_processes(pgid, marker, known=known, group_held=held)
        if not found:
            break
        if sig == signal.SIGTERM and now >= term_until:
            sig, signalled, kill_until = signal.SIGKILL, set(), now + KILL_WAIT_SECONDS
        if kill_until is not None and now >= kill_until:
            log.error("processes %s survived SIGKILL", sorted(found))
            break
        for pid, start in found.items():
            if (pid, start) not in signalled:
                _signal(pid, start, sig)
                signalled.add((pid, start))
        time.sleep(POLL_SECONDS)
    if proc is not None:
        try:
            proc.wait(timeout=KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            log.error("process %s did not exit after SIGKILL", proc.pid)


def _exited(proc: subprocess.Popen) -> bool:
    """True once `proc` has exited, without reaping it (see stop_processes)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _ExitWatch:
    """Waits for the child to exit without reaping it: a pidfd turns readable when it exits."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        try:
            self.fd: int | None = os.pidfd_open(proc.pid)  # our unreaped child: cannot be a reused pid
        except (AttributeError, OSError):
            self.fd = None

    def wait(self, timeout: float) -> bool:
        if self.fd is not None:
            poller = select.poll()  # not select(): the fd may be above FD_SETSIZE
            poller.register(self.fd, select.POLLIN)
            poller.poll(timeout * 1000)
        elif not _exited(self.proc):
            time.sleep(timeout)  # no pidfd (Linux < 5.3): look again after `timeout`
        return _exited(self.proc)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Reader(threading.Thread):
    """Copies a pipe to the log and to `on_line`, one complete line at a time. Never blocks
    for long: after `finish` is set it reads only what is already there (for at most
    DRAIN_SECONDS), so a process that escaped and still holds the pipe cannot hold us."""

    def __init__(self, fd: int, out, on_line: Callable[[str], None] | None, stdout_log: Path) -> None:
        super().__init__(daemon=True)
        self.fd, self.out, self.on_line, self.stdout_log = fd, out, on_line, stdout_log
        self.finish = threading.Event()
        self.last_output = time.monotonic()

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        partial: list[bytes] = []
        drain_until: float | None = None
        while True:
            if self.finish.is_set() and drain_until is None:
                drain_until = time.monotonic() + DRAIN_SECONDS
            if not poller.poll(0 if drain_until is not None else CHECK_INTERVAL * 1000):
                if drain_until is not None:
                    break  # nothing buffered and nobody of the task left to write
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not chunk:
                break  # every writer closed the pipe
            self.out.write(chunk)
            self.out.flush()
            self.last_output = time.monotonic()
            if self.on_line is None:
                continue  # only the log wants it
            *lines, rest = chunk.split(b"\n")
            if lines:
                self._emit(b"".join(partial) + lines[0] + b"\n")
                for line in lines[1:]:
                    self._emit(line + b"\n")
                partial = []
            if rest:
                partial.append(rest)
            if drain_until is not None and time.monotonic() > drain_until:
                log.warning("a process outside the task's reach still writes to %s; stopped reading", self.stdout_log)
                break
        if partial:
            self._emit(b"".join(partial))

    def _emit(self, raw: bytes) -> None:
        if self.on_line is None:
            return
        try:
            self.on_line(raw.decode("utf-8", "replace"))
        except Exception:  # a parser bug must not stop the copying
            log.exception("output handler failed on a line; line kept in %s", self.stdout_log)


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
    marker: Mapping[str, str] | None = None,
    talk: Talk | None = None,
    die_with_parent: bool = False,
) -> ProcessOutcome:
    """Run `argv`; append stdout to `stdout_log` (stderr to `stderr_log`, or into stdout if None).
    `marker`: environment entries (also set in `env`) that mark every process of this run; all
    of them are stopped when the run ends, however it ends. `talk`: a conversation over stdin
    (then `stdin_text` and `on_line` are not used). `die_with_parent`: the process gets SIGKILL
    when the thread that started it goes (a Dask worker killed mid-run leaves no agent behind)."""
    started = time.monotonic()
    with open(stdout_log, "ab") as out, open(stderr_log or os.devnull, "ab") as err:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE if stdin_text is not None or talk is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err if stderr_log is not None else subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        except OSError as exc:
            message = f"cannot start {argv[0]}: {exc}\n".encode()
            (err if stderr_log is not None else out).write(message)
            return ProcessOutcome(exit_code=127, stopped=None, duration=0.0, pid=0)
        pgid = proc.pid  # start_new_session: the child leads its own group
        assert proc.stdout is not None
        writer = _Writer(proc) if talk is not None else None
        if writer is not None and talk is not None:
            on_line = lambda line: writer.handle(talk.on_line(line))  # noqa: E731
        reader = _Reader(proc.stdout.fileno(), out, on_line, stdout_log)
        exit_watch = _ExitWatch(proc)
        stopped: str | None = "error"  # until _watch says otherwise: stop with the full grace
        grace = GRACE_SECONDS
        try:
            if on_start is not None:
                on_start(proc.pid)
            if writer is not None and talk is not None:
                writer.start()
                writer.handle(talk.opening())
            elif stdin_text is not None:
                threading.Thread(target=_feed, args=(proc, stdin_text), daemon=True).start()
            reader.start()
            stopped = _watch(exit_watch, reader, stop, started, wall_timeout, stall_timeout,
                             writer.ended if writer is not None else None)
            if stopped == "ended" and writer is not None:
                stopped = writer.end_reason
            elif stopped is not None and writer is not None and talk is not None:
                say = talk.interrupt()  # ask first; the kill below follows regardless
                if say.lines or say.close:
                    writer.handle(say)
                    asked = time.monotonic()
                    exit_watch.wait(INTERRUPT_GRACE)
                    # The time spent asking comes off the SIGTERM grace: a cancel still ends within 5 s.
                    grace = max(EXIT_GRACE_SECONDS, GRACE_SECONDS - (time.monotonic() - asked))
        finally:
            if writer is not None:
                writer.close()
            exit_watch.close()
            # Whatever the task left running goes too, however it detached; then the pipe has
            # no writer of ours left and the reader ends.
            stop_processes(pgid, marker, proc, grace=grace if stopped else EXIT_GRACE_SECONDS)
            reader.finish.set()
            if reader.is_alive():
                reader.join()
            proc.stdout.close()
    return ProcessOutcome(exit_code=proc.returncode, stopped=stopped, duration=time.monotonic() - started, pid=proc.pid)


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG


def _watch(exit_watch: _ExitWatch, reader: _Reader, stop: StopRequest, started: float,
           wall_timeout: float | None, stall_timeout: float | None,
           ended: threading.Event | None = None) -> str | None:
    """Wait for the child to exit (left unreaped) or a limit to pass; returns why it was
    stopped (or None; "ended" when the talk ended the run). The stopping itself (with the
    grace period) is left to the caller."""
    while True:
        if exit_watch.wait(CHECK_INTERVAL):
            return None
        now = time.monotonic()
        if ended is not None and ended.is_set():
            return "ended"
        if stop.is_set():
            return stop.reason
        if wall_timeout is not None and now - started > wall_timeout:
            return "timeout"
        if stall_timeout is not None and now - reader.last_output > stall_timeout:
            return "stalled"


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
