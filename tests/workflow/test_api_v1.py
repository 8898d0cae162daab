"""/api/v1 on a real agent app (create_app + uvicorn on a free port): Symphony's shapes, the
404s, 202 coalescing, 405s, and the agent's token. The workflow runner is a small object with the
attributes backend/workflow/runner.py gives /api/v1, over the agent's own store."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import pytest

from backend.agent.app import create_app
from backend.agent.settings import AgentSettings
from backend.config import AgentConfig
from backend.dispatcher.events import EventWriters
from backend.models import NewTask, Owner, TaskStatus
from backend.runtimes.base import EventKind, event
from backend.sources.config import SourceConfig
from backend.store import TaskStore
from backend.trackers.base import Issue
from backend.workflow import observe
from support import acknowledge_guardrails, make_repo, serve

TOKEN = "api-v1-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OWNER = Owner(pid=1, host="test", instance="api-v1")
RATE = {"at": "2026-02-24T20:15:00Z", "status": 200, "limited": False,
        "headers": {"x-ratelimit-requests-remaining": "4999"}}
STATE_KEYS = ["generated_at", "counts", "running", "retrying", "codex_totals", "rate_limits"]
ISSUE_KEYS = ["issue_identifier", "issue_id", "issue_url", "status", "workspace", "attempts", "running", "retry",
              "logs", "recent_events", "last_error", "tracked"]


class Runner:
    """What /api/v1 reads of the workflow runner; refresh() coalesces like the real one: False
    while an earlier request is still queued."""

    def __init__(self, store: TaskStore, settings: AgentSettings, issues: list[Issue]) -> None:
        self.store, self.logs_dir = store, settings.logs_dir
        config = SourceConfig.model_validate({"kind": "linear", "api_key": "$LINEAR_API_KEY",
                                              "filter": {"team": "ENG"}})
        engine = SimpleNamespace(config=config, issues={i.id: i for i in issues}, active_ids={i.id for i in issues})
        self.source = SimpleNamespace(engine=engine, tracker=SimpleNamespace(rate_limits=RATE))
        agent = SimpleNamespace(max_concurrent_agents=3, max_turns=20, max_concurrent_agents_by_state={})
        self.live = SimpleNamespace(current=SimpleNamespace(config=SimpleNamespace(
            agent=agent, workspace=SimpleNamespace(root=settings.project_dir / "worktrees" / "issues"))))
        self.turns: dict = {}
        self.writers = EventWriters(settings.logs_dir)
        self.queued = False
        self.refreshes = 0

    def tasks(self):
        return [t for t in self.store.list_tasks() if t.source is not None]

    def refresh(self) -> bool:
        self.refreshes += 1
        if self.queued:
            return False
        self.queued = True
        return True


@pytest.fixture
def start(tmp_path):
    started = []

    def start(workflow: bool, token: str | None = TOKEN) -> SimpleNamespace:
        project = make_repo(tmp_path, f"project{len(started)}")
        acknowledge_guardrails(project)
        settings = AgentSettings(project_dir=project, config=AgentConfig(dispatcher_autostart=False), token=token)
        store = TaskStore(settings.store_path)
        store.initialize()
        app = create_app(settings, store)
        ctx = serve(app)
        url = ctx.__enter__()
        client = httpx.Client(base_url=url, timeout=10)
        started.append((ctx, client))
        runner = None
        if workflow:
            issues = [Issue(id=f"lin-{n}", identifier=f"ENG-{n}", title=f"issue {n}", description="",
                            url=f"https://linear.example/ENG-{n}", state="In Progress") for n in (1, 2)]
            runner = Runner(store, settings, issues)
            app.state.workflow = runner  # in place of the WorkflowRunner create_app builds from a WORKFLOW.md
        return SimpleNamespace(client=client, store=store, runner=runner, settings=settings, app=app)

    yield start
    for ctx, client in reversed(started):
        client.close()
        ctx.__exit__(None, None, None)


def workflow_task(store: TaskStore, n: int):
    return store.create(NewTask(title=f"issue {n}", source={"kind": "linear", "id": f"lin-{n}",
                                                            "identifier": f"ENG-{n}",
                                                            "url": f"https://linear.example/ENG-{n}"}))


def test_without_a_workflow_every_path_is_404(start) -> None:
    agent = start(workflow=False)
    for method, path in (("GET", "/api/v1/state"), ("GET", "/api/v1/ENG-1"), ("POST", "/api/v1/refresh")):
        answer = agent.client.request(method, path, headers=AUTH)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "workflow_not_configured"


def test_state_and_issue_in_symphonys_shapes(start) -> None:
    agent = start(workflow=True)
    store, runner = agent.store, agent.runner
    running = workflow_task(store, 1)
    store.claim(OWNER, 60, task_id=running.id)
    store.update(running.id, session_id="thread-1", input_tokens=30, output_tokens=12, cost_usd=0.1)
    runner.turns[running.id] = (2, store.get(running.id).started_at)
    runner.writers.for_task(running.id).append(event(EventKind.assistant_text, text="Working on tests"))
    failed = workflow_task(store, 2)
    store.claim(OWNER, 60, task_id=failed.id)
    store.transition(failed.id, TaskStatus.failed, error_reason="tests_failed", error_message="2 failed")
    store.create(NewTask(title="a person's task"))

    answer = agent.client.get("/api/v1/state", headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body) == STATE_KEYS
    assert body["counts"] == {"running": 1, "retrying": 1}
    row = body["running"][0]
    assert list(row) == ["issue_id", "issue_identifier", "issue_url", "state", "session_id", "turn_count",
                         "last_event", "last_message", "started_at", "last_event_at", "tokens"]
    assert (row["issue_identifier"], row["state"], row["session_id"], row["turn_count"]) == \
        ("ENG-1", "In Progress", "thread-1", 2)
    assert (row["last_event"], row["last_message"]) == ("assistant_text", "Working on tests")
    assert row["tokens"] == {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42}
    retry = body["retrying"][0]
    assert list(retry) == ["issue_id", "issue_identifier", "issue_url", "attempt", "due_at", "error"]
    assert (retry["issue_identifier"], retry["attempt"], retry["error"]) == ("ENG-2", 1, "tests_failed: 2 failed")
    assert retry["due_at"] == observe.iso(store.get(failed.id).finished_at + timedelta(seconds=10))
    assert list(body["codex_totals"]) == ["input_tokens", "output_tokens", "total_tokens", "seconds_running",
                                          "cost_usd"]
    assert body["codex_totals"]["cost_usd"] == 0.1
    assert body["rate_limits"] == {"tracker": RATE, "agent": None}

    for identifier in ("ENG-1", "eng-1"):
        detail = agent.client.get(f"/api/v1/{identifier}", headers=AUTH)
        assert detail.status_code == 200, detail.text
        data = detail.json()
        assert list(data) == ISSUE_KEYS
        assert (data["issue_identifier"], data["status"]) == ("ENG-1", "running")
        assert data["running"]["turn_count"] == 2 and data["retry"] is None
        assert data["recent_events"][-1]["message"] == "Working on tests"
        assert data["tracked"]["task_id"] == running.id
    data = agent.client.get("/api/v1/ENG-2", headers=AUTH).json()
    assert (data["status"], data["retry"]["attempt"], data["last_error"]) == ("retrying", 1, "2 failed")

    missing = agent.client.get("/api/v1/ENG-404", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "issue_not_found"


def test_refresh_is_accepted_and_coalesced(start) -> None:
    agent = start(workflow=True)
    first = agent.client.post("/api/v1/refresh", headers=AUTH)
    assert first.status_code == 202, first.text
    body = first.json()
    assert list(body) == ["queued", "coalesced", "requested_at", "operations"]
    assert (body["queued"], body["coalesced"], body["operations"]) == (True, False, ["poll", "reconcile"])
    assert datetime.fromisoformat(body["requested_at"].replace("Z", "+00:00")).tzinfo == timezone.utc
    second = agent.client.post("/api/v1/refresh", headers=AUTH, json={})
    assert second.status_code == 202 and second.json()["coalesced"] is True
    agent.runner.queued = False  # the runner's poll started
    assert agent.client.post("/api/v1/refresh", headers=AUTH).json()["coalesced"] is False
    assert agent.runner.refreshes == 3


@pytest.mark.parametrize("method, path, allow", [
    ("POST", "/api/v1/state", "GET"), ("DELETE", "/api/v1/state", "GET"), ("GET", "/api/v1/refresh", "POST"),
    ("PUT", "/api/v1/refresh", "POST"), ("POST", "/api/v1/ENG-1", "GET"), ("DELETE", "/api/v1/ENG-1", "GET"),
])
def test_other_methods_are_405(start, method, path, allow) -> None:
    agent = start(workflow=True)
    answer = agent.client.request(method, path, headers=AUTH)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == allow
    assert answer.json()["error"]["code"] == "method_not_allowed"


def test_the_agents_token_guards_api_v1(start) -> None:
    agent = start(workflow=True)
    workflow_task(agent.store, 1)
    for method, path in (("GET", "/api/v1/state"), ("GET", "/api/v1/ENG-1"), ("POST", "/api/v1/refresh")):
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            answer = agent.client.request(method, path, headers=headers)
            assert answer.status_code == 401, (method, path, answer.text)
        assert agent.client.request(method, path, headers=AUTH).status_code in (200, 202)
    assert agent.runner.refreshes == 1  # refused requests queued nothing


def test_without_a_token_the_api_is_open_like_agent_routes(start) -> None:
    agent = start(workflow=True, token=None)
    assert agent.client.get("/api/v1/state").status_code == 200
    assert json.loads(agent.client.get("/api/v1/state").text)["counts"] == {"running": 0, "retrying": 0}
