"""What runs on a Dask worker: one agent turn, with its work coming and going through git only.

The worker keeps a bare clone of each project's origin (a cache, per box), fetches the attempt's
branch, checks that it holds exactly the commit the project host asked for (a stale cache can
only be behind, never wrong), and makes a worktree of it. The CLI runs there in its own process
group with the death signal set; its events go back to the project host as they come
(Worker.log_event, tagged with the attempt); a stop comes as the attempt's distributed.Event, or
as the run's key leaving the worker (the host released it, or is gone). Afterwards whatever the
agent left is committed and the branch is pushed back with a lease on its tip as the origin
holds it, so a branch the host has deleted (a newer attempt replaced this one) is never recreated.

Never raises: whatever goes wrong comes back in the result (`error`), never in Dask's logs of a
failed task, which would print the job's arguments.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ...dispatcher.process import StopRequest, run_streaming, stop_processes, tail
from ...dispatcher.refguard import RefGuard
from ...gitrepo import GitError, run_git
from ...runtimes.base import AgentEvent, Limits, Runtime, TurnRequest
from ..base import RemoteWork
from ..talk import TurnTalk

# The worker's own git: no hook, no fsmonitor, no replace refs, whatever a repository's
# configuration says (the agent may have written it).
SAFE_GIT = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]
SAFE_ENV = {"GIT_NO_REPLACE_OBJECTS": "1"}
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
RESULT_EVENTS = 5000  # the last events sent again with the result (the rest only live)
MOVED_MAX = 50
AGENT_GIT_TIMEOUT = 300.0
STOP_POLL = 0.2  # seconds between looks at the stop event: a cancel ends well within 5 s
UNREACHABLE_STOP = 5.0  # seconds the scheduler may not answer before the run stops itself
RAW_RETURN = 4 * 1024 * 1024  # bytes of the CLI's stdout sent back for the task's raw log
FALLBACK_IDENTITY = {"GIT_AUTHOR_NAME": "Baton", "GIT_AUTHOR_EMAIL": "baton@localhost",
                     "GIT_COMMITTER_NAME": "Baton", "GIT_COMMITTER_EMAIL": "baton@localhost"}


@dataclass
class RemoteJob:
    """One turn for a worker. Its repr names the attempt only: values (forwarded secrets, the
    prompt) never reach a log line."""

    attempt: str
    task_id: str
    project: str  # the project host's folder, only as the processes' marker
    runtime_name: str
    runtime: Runtime
    prompt: str
    resume: str | None
    model: str | None
    read_only: bool
    limits: Limits
    work: RemoteWork
    started_at: float = field(default_factory=time.time)

    def __repr__(self) -> str:
        return f"RemoteJob({self.attempt})"


def worker_root() -> Path:
    """Where a worker keeps its clone cache, worktrees and logs: BATON_WORKER_DIR, else
    ~/.cache/baton-worker. Never the project's folder (which a worker box does not have)."""
    configured = os.environ.get("BATON_WORKER_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "baton-worker"


# One topic for every run: the scheduler keeps a bounded log per topic, and topics are never
# forgotten (one per attempt would grow without end). Messages carry their attempt.
EVENT_TOPIC = "baton-events"


def stop_event_name(attempt: str) -> str:
    return f"baton-stop-{attempt}"


def started_event_name(attempt: str) -> str:
    return f"baton-started-{attempt}"


def run_remote_turn(job: RemoteJob) -> dict[str, Any]:
    from distributed import Event, get_client, get_worker

    worker = get_worker()
    key = worker.get_current_task()
    name = str(worker.name)
    # The last events, numbered, for the result: the host fills in any the live stream lost
    # (bounded: an agent printing without end must not fill the worker's memory).
    sent: deque[list] = deque(maxlen=RESULT_EVENTS)
    counts = {"events": 0, "results": 0}

    def send(message: dict) -> None:
        worker.log_event(EVENT_TOPIC, {**message, "attempt": job.attempt})

    def record(ev: AgentEvent) -> None:
        dumped = ev.model_dump(mode="json", exclude_none=True)
        counts["events"] += 1
        counts["results"] += ev.kind == "result"
        sent.append([counts["events"], dumped])
        send({"n": counts["events"], "event": dumped})

    result: dict[str, Any] = {"worker": name, "host": socket.gethostname(), "events": sent, "exit_code": None,
                              "stopped": None, "duration": 0.0, "failure": None, "usage": None, "head": None,
                              "raw": "", "stderr": "", "error": None, "moved": [], "counts": counts}
    # Dask may start a task again elsewhere although allowed-failures is 0 (its first worker was
    # retired gracefully): the second start of an attempt does nothing and says so.
    started = Event(started_event_name(job.attempt), client=get_client())
    if started.is_set():
        result["duplicate"] = True
        return result
    started.set()
    stop = StopRequest()
    watcher = _StopWatch(Event(stop_event_name(job.attempt), client=get_client()), worker, key, stop)
    watcher.start()
    run = _Workspace(job)
    try:
        try:
            run.prepare()
        except (GitError, OSError, ValueError) as exc:
            result["error"] = redact(f"worker {name}: could not prepare the worktree: {exc}")[:4000]
            return result
        try:
            _turn(job, run, record, send, stop, result, name)
        finally:
            try:
                result["head"] = run.save_and_push()
            except (GitError, OSError, ValueError) as exc:
                result["error"] = result["error"] or redact(f"worker {name}: could not push {job.work.branch}: "
                                                            f"{exc}")[:4000]
            result["raw"] = tail(run.raw, RAW_RETURN) if run.raw.exists() else ""
            result["stderr"] = tail(run.stderr, 64 * 1024) if run.stderr.exists() else ""
    except Exception as exc:  # noqa: BLE001 - a bug here is the host's to report, not Dask's
        result["error"] = redact(f"worker {name}: {type(exc).__name__}: {exc}")[:4000]
    finally:
        watcher.done.set()
        run.cleanup()
    result["events"] = list(sent)
    return result


def redact(text: str) -> str:
    """A URL's user and password never reach an error message (git repeats its arguments)."""
    return _USERINFO.sub(r"\1***@", text)


def _turn(job: RemoteJob, run: _Workspace, record, send, stop: StopRequest, result: dict, name: str) -> None:
    # As on the project host: the agent's git may push only its own (attempt) branch, and the refs
    # it moves in the worker's clone are reported (the host fails the turn for them).
    refs = RefGuard(run.dir, run.raw.parent, job.attempt, job.work.branch)
    env = refs.env(run.env())
    request = TurnRequest(prompt=job.prompt, cwd=run.dir, env=env, resume=job.resume, model=job.model,
                          scratch=run.scratch, read_only=job.read_only,
                          images=[run.dir / rel for rel in job.work.images], mcp_servers=[])
    turn = job.runtime.turn(request)
    inv = turn.invocation
    for var, value in job.work.forward_env.items():  # every local user can read a command line
        if len(value) >= 4 and any(value in arg for arg in inv.argv):
            result["failure"] = ["agent_error", f"refusing to start {job.runtime_name}: the value of {var} "
                                                "(dask.forward_env) is in its command line"]
            return
    talk = TurnTalk(turn, record)
    marker = {"TASK_ID": job.task_id, "BATON_PROJECT": job.project, "BATON_ATTEMPT": job.attempt}
    inv.env.update(marker)
    outcome = run_streaming(
        inv.argv, cwd=inv.cwd, env=inv.env, stdin_text=inv.stdin, stdout_log=run.raw, stderr_log=run.stderr,
        on_line=talk.on_line, wall_timeout=job.limits.timeout, stall_timeout=job.limits.stall_timeout, stop=stop,
        on_start=lambda pid: send({"started": True, "pid": pid, "box": name, "host": socket.gethostname()}),
        marker=marker, talk=talk if inv.stdin is None else None, die_with_parent=True,
    )
    result.update(exit_code=outcome.exit_code, stopped=outcome.stopped, duration=outcome.duration,
                  failure=list(talk.failure) if talk.failure else None,
                  moved=[move.describe() for move in refs.take()][:MOVED_MAX])
    if not result["counts"]["results"]:
        usage = turn.usage()
        result["usage"] = usage.model_dump(mode="json", exclude_none=True) if usage is not None else None


class _StopWatch(threading.Thread):
    """Stops the turn when the host sets the attempt's event, when the run's key leaves this
    worker (released by the host, or the host's client is gone), or when the scheduler stops
    answering: a run nobody waits for must not go on."""

    def __init__(self, event, worker, key, stop: StopRequest) -> None:
        super().__init__(name="baton-stop-watch", daemon=True)
        self.event, self.worker, self.key, self.stop = event, worker, key, stop
        self.done = threading.Event()

    def run(self) -> None:
        failing_since: float | None = None
        while not self.done.wait(STOP_POLL):
            state = getattr(self.worker.state.tasks.get(self.key), "state", None)
            if state not in ("executing", "long-running"):
                self.stop.set("released")
                return
            try:
                if self.event.is_set():
                    self.stop.set("stopped")
                    return
                failing_since = None
            except Exception:  # noqa: BLE001 - the scheduler is gone or not answering
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > UNREACHABLE_STOP:
                    self.stop.set("scheduler unreachable")
                    return


class _Workspace:
    """The attempt's repository: a clone of the worker's cache of the origin, its own.

    The cache (a bare repository per origin, shared by the box's runs) is not the agent's
    repository: each attempt gets a clone that borrows the cache's objects (`--shared`) with refs,
    config and hooks of its own, removed afterwards. What the agent's git does to that clone (a
    config, a hook, a replace ref) dies with it; a push to the clone's `origin` (the cache) is
    removed after the turn. The commit it leaves is fetched back into the cache and pushed from
    there, by the worker's own git (no hooks, no fsmonitor, no replace refs). An agent that writes
    into the cache's files itself (it runs as the same user) is not contained: like the refs
    guard, this keeps a confused agent from harming other runs, not a hostile one."""

    def __init__(self, job: RemoteJob) -> None:
        self.job = job
        self.root = root = worker_root()
        digest = hashlib.sha256(job.work.origin.encode()).hexdigest()[:16]
        self.cache = root / "repos" / f"{digest}.git"
        self.lock = FileLock(str(root / "repos" / f"{digest}.lock"))
        self.dir = root / "runs" / job.attempt
        self.scratch = root / "scratch" / job.attempt
        self.raw = root / "logs" / f"{job.attempt}.jsonl"
        self.stderr = root / "logs" / f"{job.attempt}.stderr.log"
        self.run_lock = FileLock(str(root / "runs" / f"{job.attempt}.lock"))
        self.fetched = f"refs/baton/{job.attempt}"
        self.returned = f"refs/baton/{job.attempt}-out"
        self.made = False
        self._ident: dict[str, str] | None = None

    def _git(self, args: list[str], cwd: Path | None = None) -> str:
        """The worker's own git, in the cache (never in the agent's clone): hooks, fsmonitor and
        replace refs off, whatever a repository says."""
        return run_git([*SAFE_GIT, *args], cwd or self.cache, env={**self._identity(), **SAFE_ENV})

    def _identity(self) -> dict[str, str]:
        """The box's git identity if it has one, else Baton's (commits need a name)."""
        if self._ident is None:
            try:
                run_git(["config", "user.name"], self.root)
                run_git(["config", "user.email"], self.root)
                self._ident = {}
            except GitError:
                self._ident = {} if os.environ.get("GIT_AUTHOR_NAME") else dict(FALLBACK_IDENTITY)
        return self._ident

    def prepare(self) -> None:
        work = self.job.work
        for folder in (self.root, self.cache.parent, self.dir.parent, self.scratch, self.raw.parent):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.root.chmod(0o700)  # placed files (a .env copy), logs and worktrees: this user's only
        except OSError:
            pass
        self.run_lock.acquire()  # held while the run lasts: its leftovers are not a dead run's
        _sweep(self.root)
        with self.lock:
            if not (self.cache / "HEAD").exists():
                # Empty, and filled only with the refs runs ask for (a clone would copy every branch).
                shutil.rmtree(self.cache, ignore_errors=True)
                run_git(["init", "--quiet", "--bare", str(self.cache)], self.cache.parent, env=SAFE_ENV)
                self._git(["config", "remote.origin.url", work.origin])  # names the origin it caches
            # The attempt's branch, whatever the cache held before: its tip must be the start. The
            # base too, so that the agent's origin/<base> is as fresh as at home.
            specs = [f"+refs/heads/{work.branch}:{self.fetched}"]
            if work.base:
                specs.append(f"+refs/heads/{work.base}:refs/heads/{work.base}")
            self._git(["fetch", "--quiet", "--no-tags", work.origin, *specs])
            tip = self._git(["rev-parse", "--verify", "--quiet", f"{self.fetched}^{{commit}}"]).strip()
            if tip != work.start_sha:
                raise ValueError(f"{work.branch} on the origin is at {tip[:12] or 'nothing'}, "
                                 f"not the starting commit {work.start_sha[:12]}")
            self.made = True
            run_git([*SAFE_GIT, "clone", "--quiet", "--shared", "--no-checkout", str(self.cache), str(self.dir)],
                    self.dir.parent, env=SAFE_ENV)
        # A fresh clone's configuration is the box's: checking out is safe here.
        run_git([*SAFE_GIT, "checkout", "--quiet", "-B", work.branch, work.start_sha], self.dir, env=SAFE_ENV)
        self._place_files()

    def _place_files(self) -> None:
        """Baton's files for the agent, written as plain files and never through a link the
        repository holds (a committed symlink must not send a write outside the worktree).
        A path the commit tracks keeps its committed version, as on the host."""
        top = self.dir.resolve()
        for rel, data in self.job.work.files.items():
            target = self.dir / rel
            if target.is_symlink() or target.exists():
                continue
            existing = target.parent
            while not existing.exists() and not existing.is_symlink():
                existing = existing.parent
            if not existing.resolve().is_relative_to(top):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def env(self) -> dict[str, str]:
        hidden = set(self.job.work.hidden_env)
        env = {k: v for k, v in os.environ.items() if k not in hidden and not k.startswith("DASK_")}
        env.update(self.job.work.forward_env)
        env.update(self._identity())
        env["TASK_PORT"] = str(_free_port())
        return env

    def _agent_git(self, args: list[str], marker: dict[str, str]) -> str:
        """git in the agent's clone: its configuration is the agent's to have written (a clean or
        smudge filter is a command), so it runs as the agent's processes do (the agent's
        environment, the task's markers; whatever it leaves is stopped) with hooks, fsmonitor
        and replace refs off."""
        env = {**self.env(), **marker, **SAFE_ENV, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        try:
            proc = subprocess.run(["git", *SAFE_GIT, *args], cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=AGENT_GIT_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise GitError(args, None, f"timed out after {AGENT_GIT_TIMEOUT}s") from exc
        finally:
            stop_processes(None, marker)
        if proc.returncode != 0:
            raise GitError(args, proc.returncode, proc.stderr, proc.stdout)
        return proc.stdout

    def save_and_push(self) -> str | None:
        """Commit what the agent left (Baton's files excepted), bring that commit into the cache and
        push it from there to the attempt's branch, with a lease on the branch's tip on the origin
        (the start, or what the agent pushed itself). Returns the commit the branch now holds."""
        if not self.made or not self.dir.is_dir():
            return None
        work, job = self.job.work, self.job
        marker = {"TASK_ID": job.task_id, "BATON_PROJECT": job.project, "BATON_ATTEMPT": job.attempt}
        self._agent_git(["add", "-A"], marker)
        placed = [rel for rel in work.files if (self.dir / rel).exists() or (self.dir / rel).is_symlink()]
        if placed:
            self._agent_git(["reset", "-q", "HEAD", "--", *placed], marker)
        try:
            self._agent_git(["commit", "--quiet", "--no-verify", "-m",
                             work.commit_message or f"wip({job.task_id}): the agent's uncommitted changes"], marker)
        except GitError as exc:
            if "nothing to commit" not in exc.stdout and "nothing added to commit" not in exc.stdout:
                raise
        head = self._agent_git(["rev-parse", "--verify", "HEAD^{commit}"], marker).strip()
        if head == work.start_sha:
            return head
        self._agent_git(["update-ref", f"refs/heads/{work.branch}", head], marker)
        with self.lock:
            self._git(["fetch", "--quiet", "--no-tags", str(self.dir), f"+refs/heads/{work.branch}:{self.returned}"])
            if self._git(["rev-parse", "--verify", "--quiet", f"{self.returned}^{{commit}}"]).strip() != head:
                raise ValueError(f"the agent's clone moved {work.branch} while it was read")
        # The branch as the origin holds it now: the start, or what the agent pushed there itself.
        # Gone means the host deleted it (a newer attempt replaced this one): never recreated.
        listed = self._git(["ls-remote", "--heads", work.origin, f"refs/heads/{work.branch}"]).split()
        if not listed:
            raise ValueError(f"{work.branch} is gone from the origin (a newer attempt replaced this one)")
        if listed[0] != head:
            self._git(["push", "--quiet", f"--force-with-lease=refs/heads/{work.branch}:{listed[0]}",
                       work.origin, f"{head}:refs/heads/{work.branch}"])
        return head

    def cleanup(self) -> None:
        try:
            with self.lock:
                if self.made:
                    for ref in (self.fetched, self.returned, f"refs/heads/{self.job.work.branch}"):  # agent's push
                        try:
                            self._git(["update-ref", "-d", ref])
                        except GitError:
                            pass
        except Exception:  # noqa: BLE001 - a leftover ref is not the run's outcome
            pass
        _remove_run(self.root, self.job.attempt)
        if self.run_lock.is_locked:
            self.run_lock.release()
        try:
            Path(self.run_lock.lock_file).unlink()
        except OSError:
            pass


def _remove_run(root: Path, attempt: str) -> None:
    shutil.rmtree(root / "runs" / attempt, ignore_errors=True)
    shutil.rmtree(root / "scratch" / attempt, ignore_errors=True)
    for log in (root / "logs" / f"{attempt}.jsonl", root / "logs" / f"{attempt}.stderr.log"):
        try:
            log.unlink()
        except OSError:
            pass


def _sweep(root: Path) -> None:
    """Remove what runs of a worker that died left on this box (their lock is free: a live run
    holds its own, whichever worker process on the box runs it)."""
    for lock_path in (root / "runs").glob("*.lock"):
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # a live run
        try:
            _remove_run(root, lock_path.name[:-len(".lock")])
        finally:
            lock.release()
            try:
                lock_path.unlink()
            except OSError:
                pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
