"""`baton-dashboard --demo`: the demo folder (default data/demo/), created, reused or reset.

It holds `origin.git/` (a bare repository), `sample/` (its clone: the textkit sample project,
run by the demo runtime, with tasks seeded into its store when the store is new), a
`projects.yaml` naming that one project with `start: true` (the dashboard starts its agent)
and the `.baton-demo` marker. Only a folder carrying the marker is ever deleted or rebuilt.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..agent.instance import AlreadyRunningError, InstanceLock
from ..config import ConfigError, load_agent_config
from ..gitrepo import ensure_excluded
from ..mirrors import MirrorWriter
from ..store import TaskStore
from .demo_sample import FILES, seed_tasks

DEFAULT_DIR = Path("data/demo")
MARKER = ".baton-demo"
PROJECT_ID = "demo"
# What a running agent writes into the sample (as in agent/settings.py RUNTIME_PATTERNS), and
# agent.yaml, which names this machine's Python and so is not committed.
_EXCLUDED = ["/agent.yaml", "/data/", "/logs/", "/worktrees/", "/tasks/"]


class DemoError(Exception):
    """The demo folder cannot be used; str() says why and what to do. Nothing was changed."""


@dataclass(frozen=True)
class Demo:
    folder: Path
    sample: Path
    origin: Path
    projects_file: Path
    agent_url: str
    created: bool
    note: str  # one line for the person: created, reused or rebuilt, and why


def prepare(folder: Path = DEFAULT_DIR, *, reset: bool = False) -> Demo:
    """Create, reuse or (reset, or found broken) rebuild the demo folder; write its projects.yaml."""
    folder = folder.expanduser().absolute()
    note = f"created the demo in {folder}"
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir() or folder.is_symlink():
            raise DemoError(f"--demo-dir {folder}: exists and is not a folder; nothing was changed")
        if not (folder / MARKER).is_file():
            if any(folder.iterdir()):
                raise DemoError(f"--demo-dir {folder}: exists, is not empty and is not a Baton demo folder "
                                f"(no {MARKER} file); refusing to touch it. Nothing was changed: choose another "
                                "--demo-dir (or remove that folder yourself)")
        else:
            problem = None if reset else invalid(folder)
            if not reset and problem is None:
                return _finish(folder, created=False, note=f"reusing the demo in {folder} (--demo-reset starts afresh)")
            _refuse_if_agent_runs(folder / "sample")
            shutil.rmtree(folder)
            note = f"reset the demo in {folder}" if reset else f"rebuilt the demo in {folder} ({problem})"
    _create(folder)
    return _finish(folder, created=True, note=note)


def invalid(folder: Path) -> str | None:
    """Why a folder with the marker cannot be reused, or None."""
    sample, origin = folder / "sample", folder / "origin.git"
    if _git(origin, "rev-parse", "--is-bare-repository", check=False).strip() != "true":
        return "origin.git is not a bare git repository"
    if _git(sample, "rev-parse", "--show-toplevel", check=False).strip() != str(sample.resolve()):
        return "sample/ is not a git repository"
    try:
        config = load_agent_config(sample / "agent.yaml")
    except ConfigError as exc:
        return f"sample/agent.yaml: {exc}"
    if config.runtime != "demo":
        return "sample/agent.yaml does not use the demo runtime"
    program = shlex.split(config.test_command)[:1]
    if not program or not shutil.which(program[0]):
        return f"its test command {config.test_command!r} cannot run here"
    return None


def _refuse_if_agent_runs(sample: Path) -> None:
    """Deleting the sample under a running agent would break it mid-task."""
    if not (sample / ".git").is_dir():
        return
    lock = InstanceLock(sample / ".git", sample)
    try:
        lock.acquire("127.0.0.1", 0)
    except AlreadyRunningError as exc:
        raise DemoError(f"cannot reset the demo in {sample.parent}: {exc}; stop it (or its dashboard) first. "
                        "Nothing was changed") from None
    lock.release()


def _create(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # First: a half-built folder (interrupted) is still recognised as ours and rebuilt next time.
    (folder / MARKER).write_text("Baton demo folder: `baton-dashboard --demo-reset` deletes and recreates it.\n")
    origin, sample = folder / "origin.git", folder / "sample"
    _git(folder, "init", "-q", "--bare", "-b", "main", str(origin))
    _git(folder, "init", "-q", "-b", "main", str(sample))
    for key, value in (("user.name", "Baton demo"), ("user.email", "demo@baton.invalid")):
        _git(sample, "config", key, value)  # commits need an identity, even on a fresh machine
    for name, text in FILES.items():
        path = sample / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    _git(sample, "add", "-A")
    _git(sample, "commit", "-q", "-m", "textkit: the demo's sample project")
    _git(sample, "remote", "add", "origin", str(origin))
    _git(sample, "push", "-q", "-u", "origin", "main")
    ensure_excluded(sample, _EXCLUDED, "Baton demo: runtime state and the machine's agent.yaml")
    (sample / "agent.yaml").write_text(_agent_yaml(), encoding="utf-8")
    store = TaskStore(sample / "data" / "dev-tasks.json", mirrors=MirrorWriter(sample / "tasks"))
    store.initialize()
    if not store.list_tasks():  # only into a new store: a person's own tasks are never joined by copies
        store.create_many(seed_tasks())


def _agent_yaml() -> str:
    test_command = f"{shlex.quote(sys.executable)} -m unittest -q"
    return ("# The Baton demo's sample project (written by `baton-dashboard --demo`).\n"
            "# Tasks run on the scripted demo runtime: no model, no key.\n"
            f"project_id: {PROJECT_ID}\n"
            "runtime: demo\n"
            "demo: {}            # pace: 1.0 = seconds between the scripted agent's steps\n"
            f"test_command: {json.dumps(test_command)}\n"
            "max_parallel_workers: 2\n"
            "push_to_remote: true\n"
            "base_branch: main\n")


def _finish(folder: Path, *, created: bool, note: str) -> Demo:
    sample = folder / "sample"
    agent_url = f"http://127.0.0.1:{_free_port()}"  # the earlier run's agent stopped with its dashboard
    projects = {"projects": [{
        "id": PROJECT_ID, "name": "Demo: textkit", "path": str(sample), "agent_url": agent_url, "start": True,
        "description": "A sample repository worked on by the scripted demo runtime (no model, no key)",
        "color": "#4f8cff"}],
        # The demo's conversations stay in its own folder (a reset deletes them with it).
        "chat": {"dir": str(folder / "chats")}}
    projects_file = folder / "projects.yaml"
    projects_file.write_text("# Written by `baton-dashboard --demo` on every start.\n"
                             + yaml.safe_dump(projects, sort_keys=False), encoding="utf-8")
    return Demo(folder=folder, sample=sample, origin=folder / "origin.git", projects_file=projects_file,
                agent_url=agent_url, created=created, note=note)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _git(cwd: Path, *args: str, check: bool = True) -> str:
    if not cwd.is_dir():
        if check:
            raise DemoError(f"{cwd}: missing")
        return ""
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise DemoError(f"git {' '.join(args[:2])} in {cwd} failed: {proc.stderr.strip()}")
    return proc.stdout
