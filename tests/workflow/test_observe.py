"""backend/workflow/observe.py: /api/v1's answers from a real store with tasks in every status,
a real SourceRunner whose engine polled the Linear stand-in, and real event logs."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend.dispatcher.events import EventWriters, TaskLogs
from backend.models import NewTask, Owner, TaskStatus
from backend.runtimes.base import EventKind, event
from backend.sources.config import SourceConfig
from backend.sources.runner import SourceRunner
from backend.store import TaskStore
from backend.trackers import make_tracker
from backend.trackers.base import RateLimited
from backend.workflow import observe
from backend.workflow.keys import workspace_path

OWNER = Owner(pid=1, host="test", instance="observe")
NOW = datetime(2026, 2, 24, 20, 15, 30, tzinfo=timezone.utc)
T0 = NOW - timedelta(hours=1)


class StoreSide:
    """Just enough of a TaskSide for the engine's poll: the store's tasks as the API answers them."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    async def list_tasks(self) -> list[dict]:
        return [json.loads(t.model_dump_json()) for t in self.store.list_tasks()]


class Runner:
    """The attributes of backend/workflow/runner.py that observe.py reads."""

    def __init__(self, store: TaskStore, source: SourceRunner, logs_dir: Path, root: Path, *,
                 max_agents: int = 5, by_state: dict[str, int] | None = None) -> None:
        self.store, self.source, self.logs_dir = store, source, logs_dir
        agent = SimpleNamespace(max_concurrent_agents=max_agents, max_turns=20,
                                max_concurrent_agents_by_state=by_state or {})
        self.live = SimpleNamespace(current=SimpleNamespace(config=SimpleNamespace(
            agent=agent, workspace=SimpleNamespace(root=root))))
        self.turns: dict[str, tuple[int, datetime]] = {}
        self.writers = EventWriters(logs_dir)

    def tasks(self):
        return [t for t in self.store.list_tasks() if t.source is not None and t.source.kind == "linear"]


def make_task(store: TaskStore, issue: dict, **fields):
    source = {"kind": "linear", "id": issue["id"], "identifier": issue["identifier"], "url": issue["url"]}
    return store.create(NewTask(title=issue["identifier"], source=source, **fields))


def run_once(store: TaskStore, task_id: str, end: TaskStatus | None, **fields):
    """Claim the task (one run) and end it in `end` (None: it stays in progress)."""
    assert store.claim(OWNER, 60, task_id=task_id) is not None
    if end is not None:
        store.transition(task_id, end, **fields)
    return store.get(task_id)


def times(store: TaskStore, task_id: str, start: float, end: float | None = None, activity: float | None = None,
          **fields):
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    more = {"finished_at": at(end)} if end is not None else {}
    if activity is not None:
        more["last_activity_at"] = at(activity)
    return store.update(task_id, started_at=at(start), **more, **fields)


@pytest.fixture
def world(tmp_path, linear_standin):
    """Tasks of nine issues, one per situation, and a runner whose engine has polled."""
    lin = linear_standin
    specs = [("running", "In Progress"), ("retry", "Todo"), ("spent", "Todo"), ("parked", "Backlog"),
             ("waiting", "In Progress"), ("landed", "Done"), ("fresh", "Todo"), ("dropped", "Canceled"),
             ("review", "Todo")]
    seeded = lin.admin.seed([{"title": title, "state": state} for title, state in specs])
    issues = {title: issue for (title, _), issue in zip(specs, seeded)}
    store = TaskStore(tmp_path / "data" / "dev-tasks.json")
    store.initialize()
    ids = {title: make_task(store, issues[title]).id for title, _ in specs}
    store.create(NewTask(title="not a workflow task"))

    running = run_once(store, ids["running"], None)
    (tmp_path / "ws" / "ENG-1").mkdir(parents=True)  # a running task's workspace is there
    times(store, running.id, start=3600 - 120, worktree=str(tmp_path / "ws" / "ENG-1"), session_id="thread-7",
          input_tokens=1200, output_tokens=800, cost_usd=0.5, branch=f"task/{running.id}")
    # Two runs; the first failure was reported to the tracker, the second not yet.
    run_once(store, ids["retry"], TaskStatus.failed)
    store.source_report(ids["retry"], "failed:1", "claim", by="t", stale_seconds=120)
    store.source_report(ids["retry"], "failed:1", "done", by="t", stale_seconds=120)
    store.rerun(ids["retry"])
    run_once(store, ids["retry"], TaskStatus.failed, error_reason="tests_failed", error_message="boom\n  twice")
    times(store, ids["retry"], start=100, end=130, input_tokens=10, output_tokens=5, cost_usd=0.25)
    # Three failures reported: max_attempts (3) reached.
    for run in (1, 2, 3):
        if run > 1:
            store.rerun(ids["spent"])
        run_once(store, ids["spent"], TaskStatus.failed, error_reason="agent_error", error_message="no")
        store.source_report(ids["spent"], f"failed:{run}", "done", by="t", stale_seconds=120)
    times(store, ids["spent"], start=200, end=240)
    run_once(store, ids["parked"], TaskStatus.failed, error_reason="agent_error")  # its issue left the active states
    times(store, ids["parked"], start=300, end=305)
    run_once(store, ids["waiting"], TaskStatus.failed)
    store.rerun(ids["waiting"])
    times(store, ids["waiting"], start=400, activity=407)
    run_once(store, ids["landed"], TaskStatus.completed, commit_sha="a" * 40)
    times(store, ids["landed"], start=500, end=550, input_tokens=100, output_tokens=50)
    store.cancel(ids["dropped"], "ENG-8 moved to Canceled in Linear")
    run_once(store, ids["review"], TaskStatus.review)
    times(store, ids["review"], start=600, activity=609)

    config = SourceConfig.model_validate(lin.source(max_attempts=3))
    tracker = make_tracker(config, environ=lin.environ)
    source = SourceRunner("proj", config, None, tracker, engine_id="test", tasks=StoreSide(store))

    async def poll():
        try:
            await source.engine.poll()
        finally:
            await tracker.aclose()

    asyncio.run(poll())
    runner = Runner(store, source, tmp_path / "logs", tmp_path / "ws")
    return SimpleNamespace(store=store, ids=ids, issues=issues, runner=runner, lin=lin, config=config,
                           tracker=tracker, tmp_path=tmp_path)


def iso(seconds: float) -> str:
    return observe.iso(T0 + timedelta(seconds=seconds))


def test_state_lists_running_and_retrying_with_totals(world) -> None:
    ids, issues, runner = world.ids, world.issues, world.runner
    running = world.store.get(ids["running"])
    writer = runner.writers.for_task(running.id)
    writer.append(event(EventKind.session_started, session_id="thread-7"))
    writer.append(event(EventKind.assistant_text, text="Working on tests " * 40))
    last = writer.append(event(EventKind.tool_use, tool_name="Bash", tool_input="pytest -q"))
    runner.turns[running.id] = (3, running.started_at)

    answer = observe.state(runner, now=NOW)

    assert answer["generated_at"] == "2026-02-24T20:15:30.000Z"
    assert answer["counts"] == {"running": 1, "retrying": 2}
    assert answer["running"] == [{
        "issue_id": issues["running"]["id"], "issue_identifier": "ENG-1", "issue_url": issues["running"]["url"],
        "state": "In Progress", "session_id": "thread-7", "turn_count": 3, "last_event": "tool_use",
        "last_message": "Bash pytest -q", "started_at": iso(3600 - 120), "last_event_at": observe.iso(last.ts),
        "tokens": {"input_tokens": 1200, "output_tokens": 800, "total_tokens": 2000},
    }]
    # Failure 2 of 3 (one reported, this one about to be): retried 10 * 2^(2-1) s after it ended.
    assert answer["retrying"] == [
        {"issue_id": issues["retry"]["id"], "issue_identifier": "ENG-2", "issue_url": issues["retry"]["url"],
         "attempt": 2, "due_at": iso(130 + 20), "error": "tests_failed: boom twice"},
        {"issue_id": issues["waiting"]["id"], "issue_identifier": "ENG-5", "issue_url": issues["waiting"]["url"],
         "attempt": 1, "due_at": None, "error": "waiting to be claimed"},
    ]
    # 120 (running) + 30 + 40 + 5 + 7 (pending: until its last activity) + 50 + 9 (review).
    assert answer["codex_totals"] == {"input_tokens": 1310, "output_tokens": 855, "total_tokens": 2165,
                                      "seconds_running": 261.0, "cost_usd": 0.75}
    limits = answer["rate_limits"]
    assert limits["agent"] is None
    assert limits["tracker"]["status"] == 200 and limits["tracker"]["limited"] is False
    assert limits["tracker"]["headers"]["x-ratelimit-requests-limit"] == "5000"


def test_a_task_waiting_behind_full_slots_says_so(world) -> None:
    runner = world.runner
    runner.live.current.config.agent.max_concurrent_agents = 1  # ENG-1 holds the one slot
    waiting = [r for r in observe.state(runner, now=NOW)["retrying"] if r["issue_identifier"] == "ENG-5"]
    assert waiting[0]["error"] == "no available orchestrator slots"

    runner.live.current.config.agent.max_concurrent_agents = 5
    runner.live.current.config.agent.max_concurrent_agents_by_state = {"in progress": 1}  # ENG-1 is In Progress
    assert observe.issue(runner, "ENG-5", now=NOW)["retry"]["error"] == "no available orchestrator slots"
    runner.live.current.config.agent.max_concurrent_agents_by_state = {"in progress": 2}
    assert observe.issue(runner, "ENG-5", now=NOW)["retry"]["error"] == "waiting to be claimed"


def test_a_stale_turn_count_is_not_this_runs(world) -> None:
    running = world.store.get(world.ids["running"])
    world.runner.turns[running.id] = (9, running.started_at - timedelta(minutes=5))
    assert observe.state(world.runner, now=NOW)["running"][0]["turn_count"] == 0


def test_issue_of_a_running_task(world) -> None:
    ids, runner = world.ids, world.runner
    running = world.store.get(ids["running"])
    logs = TaskLogs(runner.logs_dir, running.id)
    logs.raw.parent.mkdir(parents=True, exist_ok=True)
    logs.raw.write_text('{"type":"system"}\n')
    writer = runner.writers.for_task(running.id)
    for n in range(25):
        writer.append(event(EventKind.assistant_text, text=f"step {n}"))
    runner.turns[running.id] = (2, running.started_at)

    answer = observe.issue(runner, "ENG-1", now=NOW)

    assert list(answer) == ["issue_id", "issue_identifier", "issue_url", "status", "workspace", "attempts", "running",
                            "retry", "logs", "recent_events", "last_error", "tracked"]
    assert answer["status"] == "running"
    assert answer["workspace"] == {"path": str(world.tmp_path / "ws" / "ENG-1")}
    assert answer["attempts"] == {"restart_count": 0, "current_retry_attempt": 0}
    assert answer["running"] == {
        "state": "In Progress", "session_id": "thread-7", "turn_count": 2, "last_event": "assistant_text",
        "last_message": "step 24", "started_at": iso(3600 - 120), "last_event_at": answer["recent_events"][-1]["at"],
        "tokens": {"input_tokens": 1200, "output_tokens": 800, "total_tokens": 2000},
    }
    assert answer["retry"] is None
    assert answer["logs"] == {"codex_session_logs": [
        {"label": "latest", "path": str(logs.raw), "url": f"/agent/tasks/{running.id}/events"}]}
    assert [e["message"] for e in answer["recent_events"]] == [f"step {n}" for n in range(5, 25)]
    assert {e["event"] for e in answer["recent_events"]} == {"assistant_text"}
    assert answer["last_error"] is None
    assert answer["tracked"] == {"task_id": running.id, "task_status": "in_progress", "branch": f"task/{running.id}",
                                 "commit_sha": None, "cost_usd": 0.5, "runtime": None, "session_id": "thread-7",
                                 "cancel_reason": None}


def test_issue_of_a_retrying_task_ignores_case(world) -> None:
    answer = observe.issue(world.runner, "eng-2", now=NOW)
    assert answer["issue_identifier"] == "ENG-2"
    assert answer["status"] == "retrying"
    assert answer["attempts"] == {"restart_count": 1, "current_retry_attempt": 1}
    assert answer["retry"] == {"attempt": 2, "due_at": iso(150), "error": "tests_failed: boom twice"}
    assert answer["running"] is None
    assert answer["last_error"] == "boom\n  twice"
    assert answer["logs"] == {"codex_session_logs": []}  # no raw log was written
    assert answer["recent_events"] == []


@pytest.mark.parametrize("title, identifier, status, error", [
    ("spent", "ENG-3", "failed", "no"),  # max_attempts reached
    ("parked", "ENG-4", "failed", None),  # its issue is in Backlog
    ("waiting", "ENG-5", "pending", None),
    ("landed", "ENG-6", "completed", None),
    ("fresh", "ENG-7", "pending", None),
    ("dropped", "ENG-8", "cancelled", None),
    ("review", "ENG-9", "review", None),
])
def test_issue_status_of_every_other_task(world, title, identifier, status, error) -> None:
    answer = observe.issue(world.runner, identifier, now=NOW)
    task = world.store.get(world.ids[title])
    assert answer["issue_identifier"] == identifier and answer["issue_id"] == world.issues[title]["id"]
    assert answer["status"] == status
    assert answer["tracked"]["task_status"] == task.status.value
    assert answer["last_error"] == error
    assert answer["attempts"]["restart_count"] == max(task.runs - 1, 0)
    # No folder (none made yet, or removed when the task landed or was cancelled): no path.
    assert answer["workspace"] == {"path": None}
    # No worktree recorded: where the workflow puts the issue's, once that folder exists.
    workspace_path(world.tmp_path / "ws", identifier).mkdir(parents=True)
    again = observe.issue(world.runner, identifier, now=NOW)
    assert again["workspace"]["path"] == str(workspace_path(world.tmp_path / "ws", identifier))
    assert answer["running"] is None
    if title == "waiting":
        assert answer["retry"] == {"attempt": 1, "due_at": None, "error": "waiting to be claimed"}
    else:
        assert answer["retry"] is None
    if title == "spent":
        assert answer["attempts"]["current_retry_attempt"] == 3
    if title == "dropped":
        assert answer["tracked"]["cancel_reason"] == "ENG-8 moved to Canceled in Linear"
    if title == "landed":
        assert answer["tracked"]["commit_sha"] == "a" * 40


def test_identifier_match_prefers_the_exact_case(world) -> None:
    store = world.store
    upper = make_task(store, {"id": "u1", "identifier": "ABC-1", "url": None})
    lower = make_task(store, {"id": "l1", "identifier": "abc-1", "url": None})
    assert observe.issue(world.runner, "ABC-1", now=NOW)["tracked"]["task_id"] == upper.id
    assert observe.issue(world.runner, "abc-1", now=NOW)["tracked"]["task_id"] == lower.id
    assert observe.issue(world.runner, "Abc-1", now=NOW)["tracked"]["task_id"] in (upper.id, lower.id)
    assert observe.issue(world.runner, "ENG-99", now=NOW) is None
    assert observe.issue(world.runner, "not a workflow task", now=NOW) is None


def test_a_rate_limited_answer_is_the_latest_rate_limit(world) -> None:
    world.lin.admin.fail(mode="rate_limit", count=10, retry_after=0.01)

    async def ask():
        try:
            await world.tracker.get_issue(world.issues["running"]["id"])
        finally:
            await world.tracker.aclose()

    with pytest.raises(RateLimited):
        asyncio.run(ask())
    limits = observe.state(world.runner, now=NOW)["rate_limits"]["tracker"]
    assert limits["limited"] is True
    assert limits["headers"]["x-ratelimit-requests-remaining"] == "0"
    assert "retry-after" in limits["headers"]
    assert world.lin.api_key not in json.dumps(limits)


def test_tail_events_reads_the_end_of_a_long_log(tmp_path) -> None:
    path = tmp_path / "t.events.jsonl"
    lines = [json.dumps({"kind": "assistant_text", "text": f"line {n} " + "x" * 200}) for n in range(2000)]
    path.write_text("\n".join(lines) + "\n" + '{"kind": "tool_use", "te')  # the last line is still being written
    got = observe.tail_events(path, 3)
    assert [e["text"].split(" ")[1] for e in got] == ["1997", "1998", "1999"]
    assert len(observe.tail_events(path, 5000)) == 2000
    assert observe.tail_events(tmp_path / "missing", 3) == []
    path.write_text("not json\n")
    assert observe.tail_events(path, 3) == [{"kind": "unparsed", "text": "not json"}]
    assert observe.event_row({"kind": "tool_use", "tool_name": "Read", "tool_input": "a.py",
                              "ts": "2026-02-24T20:14:59Z"}) == {
        "at": "2026-02-24T20:14:59.000Z", "event": "tool_use", "message": "Read a.py"}


def test_before_the_tracker_is_up_nothing_is_due(world) -> None:
    world.runner.source = None  # the runner is starting, or rebuilding its tracker after an edit
    answer = observe.state(world.runner, now=NOW)
    assert answer["counts"] == {"running": 1, "retrying": 1}  # the pending ENG-5 still waits; ENG-2 is not due
    assert answer["running"][0]["state"] is None
    assert answer["rate_limits"] == {"tracker": None, "agent": None}
    assert observe.issue(world.runner, "ENG-2", now=NOW)["status"] == "failed"


def test_a_removed_workspace_has_no_path(world) -> None:
    """A landed task's recorded worktree is removed with it: /api/v1 says no path, not a stale one."""
    folder = world.tmp_path / "ws" / "ENG-6"
    folder.mkdir(parents=True)
    world.store.update(world.ids["landed"], worktree=str(folder))
    assert observe.issue(world.runner, "ENG-6", now=NOW)["workspace"] == {"path": str(folder)}
    folder.rmdir()
    assert observe.issue(world.runner, "ENG-6", now=NOW)["workspace"] == {"path": None}
