"""Tracker sources end to end (issue 13, item 6), with real processes only: a stand-in Linear or
Jira server, baton-dashboard started by its CLI from a projects.yaml whose project has a
`source:` and `start: true` (so the dashboard's supervisor starts the baton-agent, with the
environment rules it applies), the fake Claude CLI, and a real git origin. Nobody touches Baton:
the tests only change issues in the tracker and read what happens.

- the main flow: active issues become tasks that land on origin's main; each issue is moved to
  on_start, then on_complete, and gets exactly one comment naming its commit, also after a
  further poll and after the dashboard is restarted;
- a person closes an issue mid-run: its task is stopped and cancelled, saying why, branch kept;
- a rate limit and an outage of the tracker are ridden out: running tasks run on, the source
  says what is wrong, and the sync resumes without duplicates;
- the tracker's secret reaches neither the coding agent's processes nor the worktree nor the
  baton-agent, while the agent's tracker tools work for its own issue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import FAKE_CLAUDE
from backend.sources.engine import TRACKER_NAMES
from support import ROOT, acknowledge_guardrails, free_port, git, make_repo, origin_of, pid_alive, wait_for, \
    wait_for_http
from trackers_support import StandIn, start_standin

WAIT = 120  # seconds: a generous deadline for anything the processes do (the machine is loaded)
STATES = {  # per kind: the state an issue is seeded in, on_start, on_complete, a terminal state a person picks
    "linear": {"seed": "Todo", "on_start": "In Progress", "on_complete": "Done", "closed": "Canceled"},
    "jira": {"seed": "To Do", "on_start": "In Progress", "on_complete": "Done", "closed": "Done"},
}
RATE_LIMITED = {"linear": 400, "jira": 429}  # how each stand-in answers a rate limit (Linear: 400 RATELIMITED)
AGENT_SAYS = "Hello from the coding agent, on its own issue"


def fake(*steps: dict) -> str:
    """An issue description the fake CLI follows (the task's content carries it)."""
    return "FAKE: " + json.dumps({"steps": list(steps)})


class World:
    """A stand-in tracker with seeded issues, a repository with a bare origin, and a
    baton-dashboard process that starts the repository's baton-agent and syncs the tracker."""

    def __init__(self, root: Path, kind: str, issues: list[dict], **source) -> None:
        self.root, self.kind = root, kind
        self.states = STATES[kind]
        self.standin: StandIn = start_standin(kind, root / "standin")
        self.dashboard: subprocess.Popen | None = None
        self.agent_seen: int | None = None  # the last agent pid the dashboard reported
        try:
            self.issues = self.standin.admin.seed([{"state": self.states["seed"], **issue} for issue in issues])
            self._setup(source)
            self.start_dashboard()
        except BaseException:
            self.close()
            raise

    def _setup(self, source: dict) -> None:
        self.repo = make_repo(self.root, "p")
        acknowledge_guardrails(self.repo)
        wrapper = self.root / "bin" / "claude"
        wrapper.parent.mkdir()
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CLAUDE} \"$@\"\n")
        wrapper.chmod(0o755)
        (self.repo / "agent.yaml").write_text(f"poll_interval_seconds: 0.5\ntest_command: ''\nmax_parallel_workers: 3\n"
                                              f"claude_code:\n  command: {wrapper}\n")
        self.agent_url = f"http://127.0.0.1:{free_port()}"
        source = self.standin.source(poll_seconds=1, on_start=self.states["on_start"],
                                     on_complete=self.states["on_complete"], **source)
        self.config = self.root / "config" / "projects.yaml"
        self.config.parent.mkdir()
        # JSON is YAML: the file the dashboard reads, as a person would write it.
        self.config.write_text(json.dumps({"agent_timeout_seconds": 10, "projects": [{
            "id": "p", "path": str(self.repo), "agent_url": self.agent_url, "start": True, "source": source}]}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.starts = 0

    # ----- the dashboard process -----------------------------------------------------------------

    def start_dashboard(self) -> None:
        """baton-dashboard by its CLI; the tracker's secret only in its environment. Returns once
        the agent it started answers."""
        self.starts += 1
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.standin.environ,
               "FAKE_CLAUDE_STATE": str(self.root / "fake-state")}
        env.pop("FAKE_CLAUDE_LOG", None)
        with open(self.root / f"dashboard-{self.starts}.err", "w") as err:
            self.dashboard = subprocess.Popen(
                [sys.executable, "-m", "backend.dashboard.cli", "--config", str(self.config), "--port", str(self.port)],
                cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        wait_for_http(f"{self.url}/api/health", self.dashboard, timeout=WAIT)
        wait_for(self.agent_pid, timeout=WAIT, interval=0.1, what="the dashboard to start the baton-agent")

    def stop_dashboard(self) -> None:
        """SIGTERM: the dashboard stops its sync and the agent it started."""
        if self.dashboard is not None and self.dashboard.poll() is None:
            self.dashboard.send_signal(signal.SIGTERM)
            try:
                self.dashboard.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.dashboard.kill()
                self.dashboard.wait()

    def agent_pid(self) -> int | None:
        """The pid of the baton-agent the dashboard started, once it answers (else None)."""
        answer = httpx.get(f"{self.url}/api/projects", timeout=30)
        assert answer.status_code == 200 and "projects" in answer.json(), (answer.status_code, answer.text)
        agent = answer.json()["projects"][0]["agent"]
        if agent["state"] != "running" or not agent["pid"]:
            return None
        try:
            httpx.get(f"{self.agent_url}/agent/health", timeout=5).raise_for_status()
        except httpx.HTTPError:
            return None
        self.agent_seen = agent["pid"]
        return agent["pid"]

    def close(self) -> None:
        agent = self.agent_seen
        self.stop_dashboard()
        if agent is not None and pid_alive(agent):  # the dashboard could not stop it (it was killed)
            os.kill(agent, signal.SIGKILL)
        self.standin.stop()

    # ----- what the test reads -------------------------------------------------------------------

    def health(self) -> dict:
        return httpx.get(f"{self.url}/api/projects/p/source", timeout=30).json()

    def health_until(self, wanted: str, what: str) -> dict:
        """The source's health once its state is `wanted`; at the deadline, the last one seen and
        the dashboard's log say why not."""
        last: dict = {}

        def reached() -> dict | None:
            last.clear()
            last.update(self.health())
            return dict(last) if last["state"] == wanted else None

        try:
            return wait_for(reached, timeout=WAIT, interval=0.1, what=what)
        except AssertionError as exc:
            log = (self.root / f"dashboard-{self.starts}.err").read_text()[-3000:]
            raise AssertionError(f"{exc}; last health {last}; dashboard log:\n{log}") from None

    def sync_now(self) -> None:
        httpx.post(f"{self.url}/api/projects/p/source/sync", timeout=30).raise_for_status()

    def polled_twice(self) -> None:
        """Sync now, then wait for two more polls: the round of the first (a poll, then a
        reconcile acting on it) has ended before the second poll begins."""
        seen = self.health()["last_sync_at"]
        self.sync_now()
        for _ in range(2):
            seen = wait_for(lambda: (at := self.health()["last_sync_at"]) is not None and at != seen and at,
                            timeout=WAIT, interval=0.1, what="a poll of the tracker")

    def tasks(self) -> list[dict]:
        grouped = httpx.get(f"{self.agent_url}/agent/tasks", timeout=30).json()
        return [task for tasks in grouped.values() for task in tasks]

    def task_of(self, issue: dict) -> dict | None:
        found = [t for t in self.tasks() if (t.get("source") or {}).get("id") == issue["id"]]
        assert len(found) <= 1, f"{len(found)} tasks for {issue['identifier']}"
        return found[0] if found else None

    def issue(self, issue: dict) -> dict:
        return self.standin.admin.issue(issue["id"])

    def running(self, issue: dict) -> dict:
        """The issue's task once it runs and the sync has moved the issue to on_start."""
        task = wait_for(lambda: (t := self.task_of(issue)) is not None and t["status"] == "in_progress" and t,
                        timeout=WAIT, interval=0.1, what=f"the task of {issue['identifier']} to run")
        wait_for(lambda: self.issue(issue)["state"] == self.states["on_start"], timeout=WAIT, interval=0.1,
                 what=f"the sync to move {issue['identifier']} to {self.states['on_start']}")
        return task

    def reported(self, issue: dict) -> dict:
        """The issue's task once it landed and the sync told the tracker (one comment)."""
        def told(task: dict | None) -> bool:  # the landing's report (moved + commented) is done
            if task is None or task["status"] != "completed":
                return False
            return (task["source"]["reports"].get(f"done:{task['runs']}") or {}).get("state") == "done"

        return wait_for(lambda: told(t := self.task_of(issue)) and t, timeout=WAIT, interval=0.1,
                        what=f"the task of {issue['identifier']} to land and the sync to report it")


@pytest.fixture
def world_factory(tmp_path):
    worlds: list[World] = []

    def make(kind: str, issues: list[dict], **source) -> World:
        world = World(tmp_path / f"w{len(worlds)}", kind, issues, **source)
        worlds.append(world)
        return world

    yield make
    for release in tmp_path.glob("release-*"):  # the held runs end (they would time out anyway)
        release.touch()
    for world in worlds:
        world.close()


def counts(world: World, issues: list[dict] | None = None) -> tuple[int, dict[str, int]]:
    """How many tasks the agent holds, and how many comments each issue has."""
    return len(world.tasks()), {i["identifier"]: len(world.issue(i)["comments"]) for i in issues or world.issues}


def on_origin_main(world: World, sha: str) -> bool:
    origin = origin_of(world.repo)
    return subprocess.run(["git", "merge-base", "--is-ancestor", sha, "main"], cwd=origin).returncode == 0


# ----- 1. the main flow ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "jira"])
def test_active_issues_become_tasks_that_land_and_report_exactly_once(world_factory, kind):
    world = world_factory(kind, [{"title": f"Feature {n}", "description": fake(
        {"write": f"feature{n}.txt", "text": f"feature {n}\n"}, {"commit": f"feature {n}"})} for n in (1, 2, 3)])
    states = world.states
    for issue in world.issues:
        task = world.reported(issue)
        assert task["source"]["identifier"] == issue["identifier"] and task["source"]["url"] == issue["url"]
        assert task["title"].startswith("Feature ") and issue["identifier"] in task["content"]
        sha = task["commit_sha"]
        assert sha and on_origin_main(world, sha), f"{issue['identifier']}'s commit {sha} is not on origin's main"
        view = world.issue(issue)
        assert view["state"] == states["on_complete"]
        moves = [(h["from"], h["to"]) for h in view["history"] if h["by"] == "api"]
        assert moves == [(states["seed"], states["on_start"]), (states["on_start"], states["on_complete"])]
        [comment] = view["comments"]
        assert f"as {sha[:7]}" in comment["body"], comment["body"]
    main = git(origin_of(world.repo), "ls-tree", "--name-only", "main").split()
    assert {"feature1.txt", "feature2.txt", "feature3.txt"} <= set(main)
    expected = (3, {i["identifier"]: 1 for i in world.issues})
    assert counts(world) == expected

    # A further poll ("Sync now") changes nothing.
    world.polled_twice()
    assert counts(world) == expected

    # A new dashboard process (same config and data; it starts the agent again) neither.
    first_agent = world.agent_pid()
    world.stop_dashboard()
    assert not pid_alive(first_agent)  # the dashboard stopped the agent it started
    world.start_dashboard()
    assert world.agent_pid() != first_agent
    # Its sync reaches the agent (the connector retries an agent it found down once a second).
    world.health_until("ok", "the new dashboard's sync")
    world.polled_twice()
    health = world.health()
    assert (health["state"], health["tasks"], health["counts"]["created"], health["counts"]["commented"]) == (
        "ok", 3, 0, 0), (health["reason"], health)
    assert counts(world) == expected
    assert all(world.issue(i)["state"] == states["on_complete"] for i in world.issues)


# ----- 2. a person closes an issue mid-run --------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "jira"])
def test_an_issue_closed_mid_run_stops_and_cancels_its_task_keeping_its_branch(world_factory, kind, tmp_path):
    release, marker = tmp_path / "release-never", tmp_path / "cli.pid"
    world = world_factory(kind, [{"title": "Long job", "description": fake(
        {"write": "progress.txt", "text": "half done\n"}, {"commit": "half of it"}, {"marker": str(marker)},
        {"wait_for": str(release), "seconds": 300})}])
    [issue] = world.issues
    world.running(issue)
    cli = int(wait_for(lambda: marker.exists() and marker.read_text().strip(), timeout=WAIT,
                       what="the fake CLI's pid"))
    closed = world.states["closed"]
    world.standin.admin.move(issue["identifier"], closed)  # a person, in the tracker

    task = wait_for(lambda: (t := world.task_of(issue))["status"] == "cancelled" and t, timeout=WAIT, interval=0.1,
                    what="the task to be cancelled")
    assert issue["identifier"] in task["cancel_reason"] and closed in task["cancel_reason"], task["cancel_reason"]
    wait_for(lambda: not pid_alive(cli), timeout=WAIT, what="the coding agent to be stopped")
    # Its work is kept on its branch (nothing landed).
    branch = task["branch"]
    assert branch and git(world.repo, "show", f"{branch}:progress.txt") == "half done\n"
    assert "progress.txt" not in git(origin_of(world.repo), "ls-tree", "--name-only", "main").split()
    # The issue says so, once; the sync leaves it there: no rerun, no second note.
    [note] = wait_for(lambda: world.issue(issue)["comments"], timeout=WAIT, interval=0.1,
                      what="the note that the run was stopped")
    assert issue["identifier"] in note["body"] and branch in note["body"], note["body"]
    world.polled_twice()
    assert world.task_of(issue)["status"] == "cancelled" and len(world.tasks()) == 1
    view = world.issue(issue)
    assert view["state"] == closed and view["comments"] == [note]


# ----- 3. rate limits and outages -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "jira"])
def test_a_rate_limit_and_an_outage_are_ridden_out_without_duplicates(world_factory, kind, tmp_path):
    release = tmp_path / "release-a"
    world = world_factory(kind, [{"title": "Held open", "description": fake(
        {"write": "a.txt", "text": "a\n"}, {"commit": "a"}, {"wait_for": str(release), "seconds": 300})}])
    [a] = world.issues
    world.running(a)
    admin = world.standin.admin

    # A rate limit the client waits out: the next issue still becomes a task, the source stays healthy.
    admin.reset()
    admin.fail("rate_limit", count=2, retry_after=1)
    [b] = admin.seed([{"title": "After the rate limit", "description": fake(
        {"write": "b.txt", "text": "b\n"}, {"commit": "b"})}])
    world.sync_now()
    world.reported(b)
    assert [r["status"] for r in admin.requests()].count(RATE_LIMITED[kind]) == 2  # the limit was met
    world.health_until("ok", "a healthy source")
    assert world.task_of(a)["status"] == "in_progress"

    # An outage: the source says so, the running task runs on and lands, the new issue waits.
    admin.fail("outage", seconds=600)
    [c] = admin.seed([{"title": "During the outage", "description": fake(
        {"write": "c.txt", "text": "c\n"}, {"commit": "c"})}])
    world.sync_now()
    health = world.health_until("error", "the source to say the tracker is down")
    assert health["healthy"] is False and TRACKER_NAMES[kind] in health["reason"], health
    assert world.task_of(a)["status"] == "in_progress" and world.task_of(c) is None
    release.touch()
    wait_for(lambda: world.task_of(a)["status"] == "completed", timeout=WAIT, interval=0.1,
             what="the running task to land during the outage")
    assert world.health()["state"] == "error" and world.issue(a)["comments"] == []

    # Back: the sync resumes; the landing is reported and the new issue's task made, each once.
    admin.fail("none")
    world.sync_now()
    world.health_until("ok", "the sync to recover")
    for issue in (a, c):
        world.reported(issue)
    world.polled_twice()
    assert counts(world, [a, b, c]) == (3, {i["identifier"]: 1 for i in (a, b, c)})
    assert all(world.issue(i)["state"] == world.states["on_complete"] for i in (a, b, c))
    assert world.health()["reason"] is None


# ----- 4. the tracker's secret ----------------------------------------------------------------------

def _proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""  # it has just exited


def _processes() -> dict[int, tuple[int, int]]:
    """Every process: pid -> (parent pid, process group)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def _task_processes(pgid: int) -> list[int]:
    """The task's process group and every descendant of it (an MCP client SDK may start its
    servers in sessions of their own)."""
    table = _processes()
    found = {pid for pid, (_, group) in table.items() if group == pgid}
    while True:
        more = {pid for pid, (parent, _) in table.items() if parent in found} - found
        if not more:
            return sorted(found)
        found |= more


def _files_holding(root: Path, secret: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and not path.is_symlink()
            and secret in path.read_bytes()]


@pytest.mark.parametrize("kind", ["linear", "jira"])
def test_the_trackers_secret_stays_with_the_dashboard_while_the_agents_tools_work(world_factory, kind, tmp_path):
    release, marker = tmp_path / "release-x", tmp_path / "cli.pid"
    world = world_factory(kind, [
        {"title": "Uses its tools", "description": fake(
            {"marker": str(marker)}, {"mcp": "tracker_add_comment", "arguments": {"body": AGENT_SAYS}},
            {"write": "x.txt", "text": "x\n"}, {"commit": "x"}, {"wait_for": str(release), "seconds": 300})},
        {"title": "Another issue", "description": fake()}])
    x, other = world.issues
    [secret] = [value.encode() for value in world.standin.environ.values()]
    world.running(x)
    # The tools work in this run: the agent's comment lands on its own issue (and no other).
    wait_for(lambda: [c["body"] for c in world.issue(x)["comments"]] == [AGENT_SAYS], timeout=WAIT, interval=0.1,
             what="the coding agent's comment through its tracker tools")
    cli = int(marker.read_text())
    task = world.task_of(x)
    assert task["status"] == "in_progress" and pid_alive(cli)
    processes = _task_processes(task["agent_pid"])
    assert cli in processes, (cli, task["agent_pid"], processes)
    servers = [pid for pid in processes if b"backend.sources.mcp_server" in _proc(pid, "cmdline")]
    assert servers, "the MCP server the CLI started is not among the task's processes"
    # The server got the gateway's address: reading the environments works.
    assert all(b"BATON_TOOLS_URL=http://127.0.0.1:" in _proc(pid, "environ") for pid in servers)

    # Nothing the coding agent can read holds the secret: its processes' environment and arguments...
    for pid in processes:
        for name in ("environ", "cmdline"):
            assert secret not in _proc(pid, name), f"the secret is in /proc/{pid}/{name}"
    # ...the worktree...
    worktree = Path(task["worktree"])
    assert (worktree / "x.txt").read_text() == "x\n"
    assert _files_holding(worktree, secret) == []
    # ...nor the baton-agent that runs it; the dashboard alone has it.
    agent = world.agent_pid()
    assert secret not in _proc(agent, "environ") and secret not in _proc(agent, "cmdline")
    assert world.standin.var.encode() + b"=" not in _proc(agent, "environ")
    assert secret in _proc(world.dashboard.pid, "environ")

    release.touch()
    world.reported(x)
    world.reported(other)
    bodies = [c["body"] for c in world.issue(x)["comments"]]
    assert bodies[0] == AGENT_SAYS and len(bodies) == 2 and f"as {world.task_of(x)['commit_sha'][:7]}" in bodies[1]
    assert AGENT_SAYS not in [c["body"] for c in world.issue(other)["comments"]]
    # Nor did it end up in any file: the project's (store, task mirrors, the agent's log, tool
    # grants, worktrees), the dashboard's data and log, the fake CLI's state.
    assert _files_holding(world.root, secret) == []
