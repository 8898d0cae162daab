"""Test helpers: real git repositories, real servers on free loopback ports, bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import uvicorn

from backend.guardrails import acknowledge
from backend.models import TaskStatus

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Baton Test",
    "GIT_AUTHOR_EMAIL": "test@baton.invalid",
    "GIT_COMMITTER_NAME": "Baton Test",
    "GIT_COMMITTER_EMAIL": "test@baton.invalid",
}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    )
    return proc.stdout


# Tests run fake CLIs configured as the real ones are by default (Claude Code with
# skip_permissions...): the agents they start acknowledge the guardrails (agent_factory,
# AgentProcess) unless a test asks otherwise. make_repo writes nothing: refusals must leave a
# fresh repository untouched.
UNGUARDED = ["claude_code", "codex", "opencode"]


def acknowledge_guardrails(project: Path) -> None:
    acknowledge(project, UNGUARDED, by="tests")


def make_repo(root: Path, name: str = "project") -> Path:
    """A bare origin plus a clone with one commit on main, like a real project."""
    origin = root / f"{name}-origin.git"
    clone = root / name
    subprocess.run(["git", "init", "--bare", "-b", "main", str(origin)], check=True, capture_output=True)
    subprocess.run(["git", "clone", str(origin), str(clone)], check=True, capture_output=True)
    git(clone, "checkout", "-b", "main")
    (clone / "README.md").write_text("# demo\n")
    git(clone, "add", "README.md")
    git(clone, "commit", "-m", "initial commit")
    git(clone, "push", "-u", "origin", "main")
    return clone


def make_local_repo(root: Path, name: str) -> Path:
    """A repository with one commit on main and no remote at all."""
    project = root / name
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    (project / "README.md").write_text("# local\n")
    git(project, "add", "README.md")
    git(project, "commit", "-q", "-m", "initial")
    return project


def commit_and_push(repo: Path, files: dict[str, str], message: str) -> None:
    """Commit files to the clone's main and push them to its origin (project setup in tests)."""
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", *files)
    git(repo, "commit", "-m", message)
    git(repo, "push", "origin", "main")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll `condition` until it returns something truthy; fail loudly at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ----- tasks through an agent app (the agent_factory fixture's `agent`) ----------------------

FINISHED = frozenset({TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled})


def submit_task(agent, body: dict) -> str:
    """POST a task; returns its id."""
    resp = agent.client.post("/agent/tasks", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def wait_task_done(agent, task_id: str, timeout: float = 60):
    """The task once it has finished (completed, failed or cancelled)."""
    return wait_for(lambda: (t := agent.store.get(task_id)).status in FINISHED and t, timeout=timeout,
                    what=f"task {task_id} to finish")


def task_events(agent, task_id: str) -> list[dict]:
    """The task's whole transcript (limit high enough for every test's task)."""
    return agent.client.get(f"/agent/tasks/{task_id}/events", params={"limit": 5000}).json()["events"]


def add_status_check(repo: Path) -> str:
    """Commit (and push) a check that passes only while status.txt says "fixed" and prints what
    it found; returns the test_command that runs it. Pairs with BREAK_THEN_FIX."""
    commit_and_push(repo, {
        "check.py": "import os, sys\nstatus = open('status.txt').read().strip() if os.path.exists('status.txt') else ''\n"
                    "print('status is', repr(status))\nsys.exit(0 if status == 'fixed' else 1)\n",
        "status.txt": "fixed\n"}, "add check")
    return f"{sys.executable} check.py"


# A fake-CLI scenario that breaks add_status_check's check, then fixes it in the feedback turn.
BREAK_THEN_FIX = {"steps": [{"write": "status.txt", "text": "broken\n"}, {"commit": "break it"}],
                  "on_resume": [{"steps": [{"write": "status.txt", "text": "fixed\n"}, {"commit": "fix it"}]}]}


@contextlib.contextmanager
def serve(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` under a real uvicorn server in a thread; yield its base URL."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
    if not server.started:
        raise AssertionError("uvicorn did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> httpx.Response:
    """Wait for a started process to answer `url`; if it dies first, show what it printed."""

    def probe():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited with {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}")
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            return None

    return wait_for(probe, timeout=timeout, interval=0.05, what=url)


AGENT = [sys.executable, "-m", "backend.agent.cli"]
ROOT = Path(__file__).parent.parent


def _project_of(args: list[str], cwd: Path, env: dict[str, str]) -> Path | None:
    """The repository a baton-agent started with `args` serves, as the CLI resolves it."""
    raw = args[args.index("--project-dir") + 1] if "--project-dir" in args else env.get("BATON_PROJECT_DIR") or cwd
    try:
        return Path(git(Path(raw), "rev-parse", "--show-toplevel").strip())
    except (subprocess.CalledProcessError, OSError):
        return None  # not a repository: the agent refuses to start anyway


class AgentProcess:
    def __init__(self, args: list[str], cwd: Path, log_dir: Path, env: dict[str, str] | None = None,
                 guardrails_acknowledged: bool = True):
        log_dir.mkdir(parents=True, exist_ok=True)
        if guardrails_acknowledged and (project := _project_of(args, cwd, env or {})) is not None:
            acknowledge_guardrails(project)
        self.out_path, self.err_path = log_dir / "agent.out", log_dir / "agent.err"
        inherited = {k: v for k, v in os.environ.items() if k != "BATON_PROJECT_DIR"}
        full_env = {**inherited, "PYTHONPATH": str(ROOT), **(env or {})}
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(AGENT + args, cwd=cwd, env=full_env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)

    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def run_agent(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """For invocations expected to exit on their own (refusals)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(AGENT + args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; nobody may have reaped it yet


def origin_of(project: Path) -> Path:
    return project.parent / f"{project.name}-origin.git"


@contextlib.contextmanager
def misbehaving_server(kind: str) -> Iterator[str]:
    """A local server that misbehaves: "hang" accepts and never answers, "garbage" answers
    HTTP 200 with text that is not JSON. Yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve_forever() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            if kind == "hang":
                held.append(conn)  # keep it open, say nothing
                continue
            conn.recv(65536)
            body = b"<html>definitely not json</html>"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))
            conn.close()

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


def in_review(store, repo: Path, title: str, files: dict[str, str], **fields) -> tuple[str, str, str]:
    """A task of `store` whose branch task/<id> in `repo` holds `files` on top of main, put in
    review as a run would leave it: (its id, the tested sha, the base it was tested on)."""
    from backend.models import NewTask, Owner

    task = store.create(NewTask(title=title))
    base = git(repo, "rev-parse", "main").strip()
    git(repo, "checkout", "-q", "-b", f"task/{task.id}")
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", *files)
    git(repo, "commit", "-q", "-m", title)
    sha = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    store.claim(Owner(pid=os.getpid(), host="test", instance="in-review"), 60, task_id=task.id)
    store.transition(task.id, TaskStatus.review, review_sha=sha, review_base=base, branch=f"task/{task.id}", **fields)
    return task.id, sha, base
