"""What runs on a Dask worker: one agent turn, with its work coming and going through git only.

The worker keeps a bare clone of each project's origin (a cache, per box), fetches the attempt's
branch, checks that it holds exactly the commit the project host asked for (a stale cache can
only be behind, never wrong), and makes a worktree of it. The CLI runs there in its own process
group with the death signal set; its events go back to the project host as they come
(Worker.log_event, tagged with the attempt); a stop comes as the attempt's distributed.Event, or
as the run's key leaving the worker (the host released it, or is gone). Afterwards whatever the
agent left is committed and the branch is pushed back with a lease on the starting commit, so a
branch the host has deleted (a newer attempt replaced this one) is never recreated.

Never raises: whatever goes wrong comes back in the result (`error`), never in Dask's logs of a
failed task, which would print the job's arguments.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from ...dispatcher.process import StopRequest, run_streaming, tail
from ...dispatcher.refguard import RefGuard
from ...gitrepo import GitError, run_git
from ...runtimes.base import AgentEvent, Limits, Runtime, TurnRequest
from ..base import RemoteWork
from ..talk import TurnTalk

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


def run_remote_turn(job: RemoteJob) -> dict[str, Any]:
    from distributed import Event, get_client, get_worker

    worker = get_worker()
    key = worker.get_current_task()
    name = str(worker.name)
    sent: list[dict] = []

    def send(message: dict) -> None:
        worker.log_event(EVENT_TOPIC, {**message, "attempt": job.attempt})

    def record(ev: AgentEvent) -> None:
        dumped = ev.model_dump(mode="json", exclude_none=True)
        sent.append(dumped)
        send({"n": len(sent), "event": dumped})

    result: dict[str, Any] = {"worker": name, "host": socket.gethostname(), "events": sent, "exit_code": None,
                              "stopped": None, "duration": 0.0, "failure": None, "usage": None, "head": None,
                              "raw": "", "stderr": "", "error": None, "moved": []}
    stop = StopRequest()
    watcher = _StopWatch(Event(stop_event_name(job.attempt), client=get_client()), worker, key, stop)
    watcher.start()
    run = _Workspace(job)
    try:
        try:
            run.prepare()
        except (GitError, OSError, ValueError) as exc:
            result["error"] = f"worker {name}: could not prepare the worktree: {exc}"[:4000]
            return result
        try:
            _turn(job, run, record, send, stop, result, name)
        finally:
            try:
                result["head"] = run.save_and_push()
            except (GitError, OSError) as exc:
                result["error"] = result["error"] or f"worker {name}: could not push {job.work.branch}: {exc}"[:4000]
            result["raw"] = tail(run.raw, RAW_RETURN) if run.raw.exists() else ""
            result["stderr"] = tail(run.stderr, 64 * 1024) if run.stderr.exists() else ""
    except Exception as exc:  # noqa: BLE001 - a bug here is the host's to report, not Dask's
        result["error"] = f"worker {name}: {type(exc).__name__}: {exc}"[:4000]
    finally:
        watcher.done.set()
        run.cleanup()
    return result


def _turn(job: RemoteJob, run: _Workspace, record, send, stop: StopRequest, result: dict, name: str) -> None:
    # As on the project host: the agent's git may push only its own (attempt) branch, and the refs
    # it moves in the worker's clone are reported (the host fails the turn for them).
    refs = RefGuard(run.cache, run.raw.parent, job.attempt, job.work.branch)
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
                  moved=[move.describe() for move in refs.take()])
    if not any(e.get("kind") == "result" for e in result["events"]):
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
    """The attempt's worktree in the worker's clone of the origin."""

    def __init__(self, job: RemoteJob) -> None:
        self.job = job
        root = worker_root()
        digest = hashlib.sha256(job.work.origin.encode()).hexdigest()[:16]
        self.cache = root / "repos" / f"{digest}.git"
        self.lock = FileLock(str(root / "repos" / f"{digest}.lock"))
        self.dir = root / "runs" / job.attempt
        self.scratch = root / "scratch" / job.attempt
        self.raw = root / "logs" / f"{job.attempt}.jsonl"
        self.stderr = root / "logs" / f"{job.attempt}.stderr.log"
        self.fetched = f"refs/baton/{job.attempt}"
        self.made = False
        self._ident: dict[str, str] | None = None

    def _git(self, args: list[str], cwd: Path | None = None) -> str:
        return run_git(args, cwd or self.cache, env=self._identity())

    def _identity(self) -> dict[str, str]:
        """The box's git identity if it has one, else Baton's (commits need a name)."""
        if self._ident is None:
            try:
                run_git(["config", "user.name"], self.cache.parent)
                run_git(["config", "user.email"], self.cache.parent)
                self._ident = {}
            except GitError:
                self._ident = {} if os.environ.get("GIT_AUTHOR_NAME") else dict(FALLBACK_IDENTITY)
        return self._ident

    def prepare(self) -> None:
        work = self.job.work
        for folder in (self.cache.parent, self.scratch, self.raw.parent):
            folder.mkdir(parents=True, exist_ok=True)
        with self.lock:
            if not (self.cache / "HEAD").exists():
                shutil.rmtree(self.cache, ignore_errors=True)
                run_git(["clone", "--bare", "--quiet", work.origin, str(self.cache)], self.cache.parent)
            # The attempt's branch, whatever the cache held before: its tip must be the start.
            self._git(["fetch", "--quiet", "--no-tags", work.origin, f"+refs/heads/{work.branch}:{self.fetched}"])
            tip = self._git(["rev-parse", "--verify", "--quiet", f"{self.fetched}^{{commit}}"]).strip()
            if tip != work.start_sha:
                raise ValueError(f"{work.branch} on the origin is at {tip[:12] or 'nothing'}, "
                                 f"not the starting commit {work.start_sha[:12]}")
            self._git(["worktree", "add", "--quiet", "-B", work.branch, str(self.dir), work.start_sha])
            self.made = True
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

    def save_and_push(self) -> str | None:
        """Commit what the agent left (Baton's files excepted), push the branch back with a lease
        on the starting commit. Returns the commit the branch now holds."""
        if not self.made or not self.dir.is_dir():
            return None
        work = self.job.work
        self._git(["add", "-A"], self.dir)
        placed = [rel for rel in work.files if (self.dir / rel).exists() or (self.dir / rel).is_symlink()]
        if placed:
            self._git(["reset", "-q", "HEAD", "--", *placed], self.dir)
        try:
            self._git(["commit", "--quiet", "--no-verify", "-m",
                       work.commit_message or f"wip({self.job.task_id}): the agent's uncommitted changes"], self.dir)
        except GitError as exc:
            if "nothing to commit" not in exc.stdout and "nothing added to commit" not in exc.stdout:
                raise
        head = self._git(["rev-parse", "HEAD"], self.dir).strip()
        if head != work.start_sha:
            self._git(["push", "--quiet", f"--force-with-lease=refs/heads/{work.branch}:{work.start_sha}",
                       work.origin, f"{head}:refs/heads/{work.branch}"], self.dir)
        return head

    def cleanup(self) -> None:
        try:
            with self.lock:
                if self.made:
                    try:
                        self._git(["worktree", "remove", "--force", str(self.dir)])
                    except GitError:
                        shutil.rmtree(self.dir, ignore_errors=True)
                        self._git(["worktree", "prune"])
                    for ref in (f"refs/heads/{self.job.work.branch}", self.fetched):
                        try:
                            self._git(["update-ref", "-d", ref])
                        except GitError:
                            pass
        except Exception:  # noqa: BLE001 - a leftover folder is not the run's outcome
            pass
        shutil.rmtree(self.scratch, ignore_errors=True)
        for log in (self.raw, self.stderr):
            try:
                log.unlink()
            except OSError:
                pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
