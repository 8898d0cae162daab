"""AgentSupervisor: the baton-agents the dashboard starts itself (`start: true`, `--start-agents`).

Each agent runs as `python -m backend.agent.cli --project-dir PATH --port PORT` (plus the
guardrails flag when the project says `unattended: true`: a WORKFLOW.md whose runtime bypasses
its permission prompts starts only with it) in its own session (so a Ctrl+C in the dashboard's
terminal reaches only the dashboard, whose shutdown stops them), its output appended to
`<path>/logs/baton-agent.log`. One thread per agent waits on it; an agent that dies is started
again after a backoff (1 s, 2 s, 4 s … capped at 30 s, reset once it ran 60 s), except when its
exit status says a restart cannot help: 2 (its configuration) and 1 (another agent holds the
project) leave it `failed` with the reason.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from ..config import resolve_secret
from ..guardrails import FLAG as GUARDRAILS_FLAG
from .config import ProjectConfig

log = logging.getLogger("baton.dashboard.supervisor")

# Seconds. Tests may shorten them through the environment variables named in Timing.from_env.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
HEALTHY_RESET = 60.0  # a run this long forgets earlier failures: the next backoff is BACKOFF_FIRST again
STOP_GRACE = 10.0  # SIGTERM, then this long, then SIGKILL
PROBE_INTERVAL = 0.2  # while starting: how often the port is tried

LOG_NAME = "baton-agent.log"
MAX_TAIL_LINES = 2000
_NOT_RESTARTED = {
    1: "another baton-agent already runs for this repository",
    2: "configuration or start-up problem",
}
# With the guardrails flag (`unattended: true`), an agent that finds another one running for the
# project exits 0 after its acknowledgement, saying this (agent/cli.py): that is exit 1's case.
_HANDED_OVER = "; it picks the acknowledgement up"
_NOTE_PREFIX = "---- baton-dashboard: "  # the supervisor's own lines in an agent's log
_START_MARK = _NOTE_PREFIX + "starting baton-agent"
# Secrets of the dashboard itself never reach an agent's environment.
_DROPPED_ENV = ("BATON_DASHBOARD_TOKEN", "BATON_TOKEN", "BATON_PROJECT_DIR")


@dataclass(frozen=True)
class Timing:
    backoff_first: float = BACKOFF_FIRST
    backoff_max: float = BACKOFF_MAX
    healthy_reset: float = HEALTHY_RESET
    stop_grace: float = STOP_GRACE

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ = os.environ) -> Timing:
        def number(name: str, default: float) -> float:
            raw = env.get(name)
            try:
                value = float(raw) if raw else default
            except ValueError:
                return default
            return value if value > 0 else default

        return cls(number("BATON_AGENT_BACKOFF_FIRST", BACKOFF_FIRST), number("BATON_AGENT_BACKOFF_MAX", BACKOFF_MAX),
                   number("BATON_AGENT_HEALTHY_RESET", HEALTHY_RESET), number("BATON_AGENT_STOP_GRACE", STOP_GRACE))


def describe_exit(code: int | None) -> str:
    if code is None:
        return "not started"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of `path`, read from its end (a long log is not read whole)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            position = handle.tell()
            data = b""
            while position > 0 and data.count(b"\n") <= count:
                step = min(64 * 1024, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-count:] if count else []


class ManagedAgent:
    """One project's agent: its process, its state, the thread that watches it."""

    def __init__(self, project: ProjectConfig, timing: Timing, stopping: threading.Event,
                 drop_env: tuple[str, ...] = ()) -> None:
        self.project = project
        self.drop_env = {*_DROPPED_ENV, *drop_env}
        self.timing = timing
        self.stopping = stopping
        parts = urlsplit(project.agent_url or "")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 0
        self.path = Path(project.path or "").expanduser().resolve()
        self.log_path = self.path / "logs" / LOG_NAME
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.state = "starting"
        self.reason: str | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self.next_attempt: float | None = None  # time.time() of the next start, while restarting
        self.started_at: float | None = None
        self.thread = threading.Thread(target=self._watch, name=f"agent-{project.id}", daemon=True)

    # ----- what the board shows --------------------------------------------------------------

    def status(self) -> dict:
        with self.lock:
            wait = max(0.0, self.next_attempt - time.time()) if self.next_attempt is not None else None
            exit_text = f" ({describe_exit(self.last_exit)})" if self.last_exit is not None else ""
            if self.state == "restarting":
                message = f"agent restarting in {wait:.0f} s{exit_text}…"
            elif self.state == "failed":
                message = f"agent failed{exit_text}: {self.reason}; not restarted" + (
                    " (see its log)" if self.last_exit is not None else "")
            elif self.state == "running":
                message = f"agent running (pid {self.proc.pid if self.proc else '?'})"
            else:
                message = f"agent {self.state}"
            return {
                "state": self.state, "reason": self.reason, "restarts": self.restarts, "last_exit_code": self.last_exit,
                "next_attempt_at": (datetime.fromtimestamp(self.next_attempt, timezone.utc).isoformat()
                                    if self.next_attempt is not None else None),
                "next_attempt_in_seconds": None if wait is None else round(wait, 1),
                "pid": self.proc.pid if self.proc and self.state in ("starting", "running") else None,
                "port": self.port, "log": str(self.log_path), "message": message,
            }

    # ----- the process ---------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self.drop_env}
        token = resolve_secret(self.project.token)
        if token:
            env["BATON_TOKEN"] = token
        # The checkout Baton runs from, so `-m backend.agent.cli` imports this very code.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def _note(self, text: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(f"{_NOTE_PREFIX}{text} ({stamp} UTC) ----\n")
        except OSError as exc:  # a full disk must not stop the supervision itself
            log.warning("cannot write %s: %s", self.log_path, exc)

    def _spawn(self) -> subprocess.Popen | None:
        """Start the agent, unless the dashboard is stopping. Called with self.lock held."""
        if self.stopping.is_set():
            return None
        command = [sys.executable, "-m", "backend.agent.cli", "--project-dir", str(self.path),
                   "--host", self.host, "--port", str(self.port)]
        if self.project.unattended:
            command.append(GUARDRAILS_FLAG)
        if not self.path.is_dir():  # never created here: a typo must not make an empty project
            self.state, self.reason, self.proc = "failed", f"project folder {self.path} does not exist", None
            return None
        try:
            self.log_path.parent.mkdir(exist_ok=True)
            self._note(f"starting baton-agent on {self.host}:{self.port}" +  # _START_MARK
                       (f" (restart {self.restarts})" if self.restarts else ""))
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(command, cwd=self.path, env=self._env(), stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self.state, self.reason, self.proc = "failed", f"cannot start it in {self.path}: {exc.strerror or exc}", None
            return None
        self.state, self.reason, self.next_attempt = "starting", None, None
        self.started_at = time.monotonic()
        log.info("started baton-agent for %s (pid %d, port %d)", self.project.id, self.proc.pid, self.port)
        return self.proc

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _last_problem(self) -> str | None:
        """The agent's own one-line reason (`baton-agent: ...`) from its last run's log lines."""
        for line in reversed(tail_lines(self.log_path, 200)):
            if line.startswith("baton-agent: "):
                return line.removeprefix("baton-agent: ")
            if line.startswith(_START_MARK):  # an earlier run's reason is not this one's
                return None
        return None

    def _watch(self) -> None:
        failures = 0  # consecutive short runs: the backoff's exponent
        while True:
            with self.lock:
                proc = self._spawn()
            if proc is None:
                return
            while self.state == "starting":
                try:
                    proc.wait(timeout=PROBE_INTERVAL)
                    break
                except subprocess.TimeoutExpired:
                    if self._answers():
                        with self.lock:
                            if self.state == "starting":
                                self.state = "running"
            code = proc.wait()
            if self.stopping.is_set():
                return
            ran = time.monotonic() - (self.started_at or time.monotonic())
            failures = 0 if ran >= self.timing.healthy_reset else failures
            delay = min(self.timing.backoff_first * 2 ** failures, self.timing.backoff_max)
            failures += 1
            why = _NOT_RESTARTED.get(code)
            if code == 0 and self.project.unattended and (self._last_problem() or "").endswith(_HANDED_OVER):
                why = _NOT_RESTARTED[1]
            with self.lock:
                self.last_exit = code
                if why is not None:
                    own = self._last_problem()
                    self.state, self.reason = "failed", why + (f": {own}" if own else "")
                    self.next_attempt = None
                else:
                    own = self._last_problem() if code > 0 else None  # e.g. exit 3: its port is busy
                    self.state, self.reason = "restarting", f"it stopped ({describe_exit(code)})" + (
                        f": {own}" if own else "")
                    self.next_attempt = time.time() + delay
            self._note(f"baton-agent stopped ({describe_exit(code)})" +
                       (f"; not restarted: {self.reason}" if why else f"; restarting in {delay:g} s"))
            log.warning("baton-agent for %s stopped (%s)", self.project.id, describe_exit(code))
            if why is not None or self.stopping.wait(delay):
                return
            with self.lock:
                self.restarts += 1

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """SIGTERM the agent's process group, wait STOP_GRACE, SIGKILL it, reap it."""
        with self.lock:
            proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: pgid == pid
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.timing.stop_grace)
            except subprocess.TimeoutExpired:
                log.warning("baton-agent for %s ignored SIGTERM for %g s: killing it", self.project.id,
                            self.timing.stop_grace)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            self._note(f"baton-agent stopped by the dashboard ({describe_exit(proc.returncode)})")
            log.info("stopped baton-agent for %s (%s)", self.project.id, describe_exit(proc.returncode))
        self.thread.join(timeout=self.timing.stop_grace)
        with self.lock:
            self.state, self.next_attempt = "stopped", None


class AgentSupervisor:
    """The agents of the projects marked `start` (see config.start_problem for what they need).
    `drop_env`: more variables the agents must not inherit (the chat's API key, chat.api_key_env:
    the coding agents the agent runs would see it too; whoever wants agents to use a key sets it
    in their own environment)."""

    def __init__(self, projects: list[ProjectConfig], timing: Timing | None = None,
                 drop_env: tuple[str, ...] = ()) -> None:
        self.timing = timing or Timing()
        self._stopping = threading.Event()
        self.agents = {p.id: ManagedAgent(p, self.timing, self._stopping, drop_env) for p in projects if p.start}

    def start(self) -> None:
        for agent in self.agents.values():
            agent.start()

    def status(self, project_id: str) -> dict | None:
        agent = self.agents.get(project_id)
        return agent.status() if agent else None

    def log_tail(self, project_id: str, lines: int) -> list[str] | None:
        agent = self.agents.get(project_id)
        return None if agent is None else tail_lines(agent.log_path, min(lines, MAX_TAIL_LINES))

    def stop(self) -> None:
        """Stop every agent (concurrently: each may take STOP_GRACE) and never start another."""
        self._stopping.set()
        threads = [threading.Thread(target=agent.stop) for agent in self.agents.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
