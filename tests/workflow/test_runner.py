"""The unattended runner inside baton-agent (backend/workflow/runner.py): a real agent app with a
WORKFLOW.md under uvicorn, its tracker a stand-in Linear process. The runner turns active issues
into tasks of the workflow's runtime, follows edits of the file (a good one applies, an invalid
one keeps the last good running and says so on /agent/health), and coalesces refresh requests.

The helpers here (WorkflowAgent, start_workflow_agent) are shared by the other runner tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from backend.agent.app import create_app
from backend.agent.settings import AgentSettings
from backend.config import AgentConfig
from backend.mirrors import MirrorWriter
from backend.models import Task
from backend.store import TaskStore
from backend.workflow.live import LiveWorkflow
from support import acknowledge_guardrails, free_port, git, make_repo, serve, wait_for
from trackers_support import start_linear_standin

FAKES = Path(__file__).parent.parent / "fakes"


def front_matter(lin, root: Path, **sections) -> dict:
    """A WORKFLOW.md front matter for the stand-in `lin` (its first team), workspaces under root;
    `sections` replace whole sections."""
    front = {
        "tracker": {"kind": "linear", "endpoint": lin.url, "api_key": f"${lin.var}", "team": lin.team,
                    "active_states": ["Todo", "In Progress"], "terminal_states": ["Done", "Canceled", "Duplicate"],
                    "handoff_states": ["In Review"]},
        "polling": {"interval_ms": 3_600_000},
        "workspace": {"root": str(root)},
        "agent": {"max_concurrent_agents": 2, "max_turns": 3},
    }
    front.update(sections)
    return front


def workflow_text(front: dict, body: str = "{{ issue.title }}\n\n{{ issue.description }}") -> str:
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body + "\n"


def wrapper(folder: Path, name: str, fake: str) -> Path:
    """An executable `name` that runs the fake CLI `fake` (tests/fakes/)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKES / fake} \"$@\"\n")
    path.chmod(0o755)
    return path


@dataclass
class WorkflowAgent:
    url: str
    client: httpx.Client
    store: TaskStore
    app: object
    settings: AgentSettings
    path: Path  # WORKFLOW.md

    @property
    def runner(self):
        return self.app.state.workflow

    @property
    def dispatcher(self):
        return self.app.state.dispatcher

    def write(self, text: str) -> None:
        """Edit WORKFLOW.md; its mtime moves on whatever the clock's resolution (no sleeping)."""
        before = self.path.stat().st_mtime_ns
        self.path.write_text(text)
        os.utime(self.path, ns=(before + 1_000_000_000, before + 1_000_000_000))

    def health(self) -> dict:
        return self.client.get("/agent/health").json()

    def task_of(self, identifier: str) -> Task | None:
        return next((t for t in self.store.list_tasks() if t.source and t.source.identifier == identifier), None)

    def wait_task(self, identifier: str, timeout: float = 30) -> Task:
        return wait_for(lambda: self.task_of(identifier), timeout=timeout, what=f"a task for {identifier}")

    def on_loop(self, fn):
        """Call fn() on the agent's event loop (where the runner lives) and return its answer."""
        async def call():
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.runner.loop).result(timeout=30)


def start_workflow_agent(stack: contextlib.ExitStack, root: Path, text: str, *, config: AgentConfig | None = None,
                         dispatch: bool = False, token: str | None = None, name: str = "project",
                         prepare: Callable[[Path, TaskStore], None] | None = None, guardrails_flag: bool = False,
                         logs_root: Path | None = None, port: int | None = None) -> WorkflowAgent:
    """A real agent app with WORKFLOW.md (`text`) at its project's root, served on a free port
    (the tracker tools' grants name it). The tracker's secret must be in os.environ.
    `prepare(project, store)` runs before the agent starts (tasks, worktrees left by a former run).
    `guardrails_flag`: as if the guardrails flag was on baton-agent's command line."""
    project = make_repo(root, name)
    acknowledge_guardrails(project)
    path = project / "WORKFLOW.md"
    path.write_text(text)
    port = port or free_port()
    config = (config or AgentConfig(test_command="")).model_copy(update={"dispatcher_autostart": dispatch})
    settings = AgentSettings(project_dir=project, config=config, port=port, token=token, logs_root=logs_root)
    store = TaskStore(settings.store_path, mirrors=MirrorWriter(settings.tasks_dir))
    store.initialize()
    if prepare is not None:
        prepare(project, store)
    live = LiveWorkflow(path, project_dir=project)
    app = create_app(settings, store, workflow=live, guardrails_flag=guardrails_flag)
    url = stack.enter_context(serve(app, port=port))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = stack.enter_context(httpx.Client(base_url=url, timeout=30, headers=headers))
    return WorkflowAgent(url=url, client=client, store=store, app=app, settings=settings, path=path)


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as opened:
        yield opened


@pytest.fixture
def lin(tmp_path, monkeypatch):
    with start_linear_standin(tmp_path / "linear", teams=["ENG", "OPS"]) as standin:
        monkeypatch.setenv(standin.var, standin.api_key)  # the agent reads the tracker's secret from its environment
        yield standin


# ----- tasks from the tracker ---------------------------------------------------------------------

def test_an_active_issue_becomes_a_task_of_the_workflows_runtime(tmp_path, lin, stack):
    lin.admin.seed([{"title": "Fix login", "state": "Todo"}, {"title": "Someday", "state": "Backlog"}])
    codex = wrapper(tmp_path / "bin", "codex", "fake_codex.py")
    front = front_matter(lin, tmp_path / "ws", agent_runtime={"kind": "codex", "command": f"{codex} app-server"})
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front))

    task = agent.wait_task("ENG-1")
    assert task.runtime == "codex"  # the workflow's, not agent.yaml's default (claude_code)
    assert task.title == "Fix login" and task.source.kind == "linear"
    assert agent.store.grants.get(task.id).url == f"http://127.0.0.1:{agent.settings.port}/api/tracker-tools/call"
    assert agent.task_of("ENG-2") is None  # Backlog is no active state
    assert "codex" in agent.dispatcher.ctx.runtimes
    assert [t.id for t in agent.runner.tasks()] == [task.id]

    workflow = wait_for(lambda: (w := agent.health()["workflow"])["tracker"]["state"] == "ok" and w,
                        what="the tracker's sync to be ok")
    assert workflow["path"] == str(agent.path) and workflow["state"] == "ok" and workflow["error"] is None
    assert workflow["digest"] == agent.runner.live.current.digest
    assert workflow["tracker"]["kind"] == "linear" and workflow["tracker"]["issues"] == 1


def test_a_good_edit_applies_to_polls_and_workers(tmp_path, lin, stack):
    lin.admin.seed([{"title": "First", "state": "Todo"}])
    front = front_matter(lin, tmp_path / "ws")  # polls hourly: only the start's poll happens
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front))
    agent.wait_task("ENG-1")
    assert agent.dispatcher.ctx.slots.limit == 2

    lin.admin.seed([{"title": "Second", "state": "Todo"}])
    agent.write(workflow_text({**front, "polling": {"interval_ms": 1000},
                               "agent": {"max_concurrent_agents": 3, "max_turns": 3}}))
    wait_for(lambda: agent.dispatcher.ctx.slots.limit == 3, what="the worker limit to follow the edit")
    assert agent.runner.source.config.poll_seconds == 1.0
    agent.wait_task("ENG-2")  # only a poll after the edit can have seen it
    assert agent.health()["workflow"]["state"] == "ok"


def test_an_invalid_edit_keeps_the_last_good_workflow_running(tmp_path, lin, stack):
    lin.admin.seed([{"title": "First", "state": "Todo"}])
    front = front_matter(lin, tmp_path / "ws", polling={"interval_ms": 1000})
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front))
    agent.wait_task("ENG-1")
    good = agent.runner.live.current.digest

    agent.write(workflow_text({**front, "polling": {"interval_ms": "soon"},
                               "agent": {"max_concurrent_agents": 5, "max_turns": 3}}))
    workflow = wait_for(lambda: (w := agent.health()["workflow"])["state"] == "invalid" and w,
                        what="health to report the invalid edit")
    assert workflow["error"]["code"] == "invalid_config"
    assert "polling.interval_ms" in workflow["error"]["message"] and str(agent.path) in workflow["error"]["message"]
    assert workflow["digest"] == good
    # The last good version still runs: its poll interval, its worker limit.
    lin.admin.seed([{"title": "Second", "state": "Todo"}])
    agent.wait_task("ENG-2")
    assert agent.dispatcher.ctx.slots.limit == 2

    agent.write(workflow_text({**front, "agent": {"max_concurrent_agents": 4, "max_turns": 3}}))
    wait_for(lambda: agent.health()["workflow"]["state"] == "ok", what="the fixed file to load")
    wait_for(lambda: agent.dispatcher.ctx.slots.limit == 4, what="the fixed file to apply")
    assert agent.health()["workflow"]["error"] is None


def test_a_changed_filter_gets_a_new_tracker_sync(tmp_path, lin, stack):
    lin.admin.seed([{"title": "Ours", "state": "Todo"}, {"title": "Theirs", "state": "Todo", "team": "OPS"}])
    front = front_matter(lin, tmp_path / "ws", polling={"interval_ms": 1000})
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front))
    agent.wait_task("ENG-1")
    first = agent.runner.source
    assert agent.task_of("OPS-1") is None

    agent.write(workflow_text({**front, "tracker": {**front["tracker"], "team": "OPS"}}))
    agent.wait_task("OPS-1")
    assert agent.runner.source is not first and agent.runner.source.config.filter.team == "OPS"
    assert first._task is None  # the old sync was stopped


def test_refresh_queues_one_poll_and_coalesces_a_second(tmp_path, lin, stack):
    lin.admin.seed([{"title": "First", "state": "Todo"}])
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front_matter(lin, tmp_path / "ws")))
    agent.wait_task("ENG-1")
    source = agent.runner.source
    wait_for(lambda: source.polls_done == 1, what="the start's poll")

    lin.admin.seed([{"title": "Second", "state": "Todo"}])
    # Both on the loop, back to back: the first queues a poll the second finds not yet begun.
    assert agent.on_loop(lambda: (agent.runner.refresh(), agent.runner.refresh())) == (True, False)
    agent.wait_task("ENG-2")
    assert source.polls_done == 2  # one poll for the two requests (the interval is an hour)
    assert agent.runner.refresh() is True  # from another thread too: a new poll is queued
    wait_for(lambda: source.polls_done == 3, what="the third poll")


# ----- a whole issue, unattended ------------------------------------------------------------------

def test_an_issue_flows_to_done_across_continuation_turns(tmp_path, lin, stack, fake_cli):
    """Turn 1 leaves the issue active: the same session gets a continuation turn, in which the
    agent hands the issue over (tracker_update_state, through this agent's gateway); the work
    lands and the engine moves the issue to on_complete."""
    scenario = {"steps": [{"write": "fix.txt", "text": "fixed\n"}, {"commit": "fix it"}],
                "on_resume": [{"steps": [{"mcp": "tracker_update_state", "arguments": {"state": "In Review"}}]}]}
    lin.admin.seed([{"title": "Fix it", "state": "Todo", "description": "FAKE: " + json.dumps(scenario)}])
    front = front_matter(lin, tmp_path / "ws", polling={"interval_ms": 1000},
                         agent_runtime={"kind": "claudecode", "command": fake_cli.command})
    front["tracker"].update(on_start="In Progress", on_complete="Done")
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front, "{{ issue.description }}"),
                                 config=fake_cli.config(), dispatch=True)
    task = agent.wait_task("ENG-1")
    done = wait_for(lambda: (t := agent.store.get(task.id)).status.value in ("completed", "failed", "cancelled") and t,
                    timeout=120, what="the task to end")
    assert done.status.value == "completed", (done.error_reason, done.error_message)
    calls = fake_cli.calls()
    assert len(calls) == 2 and "--resume" in calls[1]["argv"]  # one session, two turns
    assert agent.runner.turns[task.id][0] == 2
    wait_for(lambda: lin.admin.issue("ENG-1")["state"] == "Done", timeout=60, what="the engine to move ENG-1 to Done")
    origin = git(agent.settings.project_dir, "show", "origin/main:fix.txt")
    assert origin == "fixed\n"
