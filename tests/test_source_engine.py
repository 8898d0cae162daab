"""The sync engine (backend/sources/engine.py) between a real agent (uvicorn, fake CLI) and a
stand-in tracker running as a process: issues become tasks exactly once (two engines, a
restart), closed or deactivated issues stop their tasks, tasks move and comment on their issues
exactly once, failed tasks are retried with backoff up to max_attempts.

Each test drives engines round by round (poll + reconcile, as the runner does) until a
condition holds, with a deadline."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from backend.dashboard.config import ProjectConfig
from backend.dashboard.connectors.http import HTTPConnector
from backend.sources import engine as engine_module
from backend.sources.config import SourceConfig
from backend.sources.engine import SyncEngine, duration_text, marker, task_content, task_title
from backend.sources.taskside import ConnectorTaskSide
from backend.trackers import make_tracker
from backend.models import Owner
from backend.trackers.base import BadQuery, Issue, ServerError
from support import git, wait_task_done
from trackers_support import start_standin

COMMIT = {"steps": [{"write": "feature.txt", "text": "done\n"}, {"commit": "add feature"}]}
FAIL = {"result": "error_during_execution"}


def scenario(steps: dict) -> str:
    return "FAKE: " + json.dumps(steps)


@pytest.fixture(params=["linear", "jira"])
def standin(request, tmp_path):
    with start_standin(request.param, tmp_path / "standin") as running:
        yield running


def source_config(standin, **overrides) -> SourceConfig:
    return SourceConfig.model_validate(standin.source(tools=False, **overrides))


def source_tasks(agent) -> list:
    return [t for t in agent.store.snapshot().tasks.values() if t.source is not None]


def comments(standin, issue: str) -> list[str]:
    return [c["body"] for c in standin.admin.issue(issue)["comments"]]


class Engines:
    """Sync engines over one agent and one tracker, each with its own connector and client."""

    def __init__(self, agent, standin, config: SourceConfig, client: httpx.AsyncClient, clock=time.time) -> None:
        self.agent, self.standin, self.config, self.client, self.clock = agent, standin, config, client, clock
        self.engines: list[SyncEngine] = []

    def add(self, engine_id: str) -> SyncEngine:
        connector = HTTPConnector(ProjectConfig(id=self.agent.settings.project_id, agent_url=self.agent.url),
                                  self.client, 10)
        engine = SyncEngine(self.config, make_tracker(self.config, environ=self.standin.environ),
                            ConnectorTaskSide(connector), project_id="shop", engine_id=engine_id,
                            clock=lambda: self.clock())
        self.engines.append(engine)
        return engine

    async def round(self, *engines: SyncEngine) -> None:
        """A round of each engine, all at once (their requests interleave, as two dashboards' do)."""
        async def one(engine: SyncEngine) -> None:
            await engine.poll()
            await engine.reconcile()
        await asyncio.gather(*(one(engine) for engine in engines or self.engines))

    async def until(self, condition: Callable[[], object], what: str, timeout: float = 90,
                    engines: tuple[SyncEngine, ...] = ()) -> object:
        """Sync rounds until `condition()` holds (a deadline, not a pace)."""
        deadline = time.monotonic() + timeout
        while True:
            await self.round(*engines)
            result = await asyncio.to_thread(condition)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        for engine in self.engines:
            await engine.tracker.aclose()


@asynccontextmanager
async def engines(agent, standin, config: SourceConfig, clock=time.time):
    async with httpx.AsyncClient() as client:
        group = Engines(agent, standin, config, client, clock)
        try:
            yield group
        finally:
            await group.aclose()


def test_issues_become_tasks_exactly_once(agent, standin):
    """Two engines syncing one agent, then a restarted one: one task per active issue, made
    from its title, description and link; issues outside the active states make none."""
    active_state = "Todo" if standin.kind == "linear" else "To Do"
    seeded = standin.admin.seed([
        {"title": "Fix the login page", "description": "It 500s on submit.", "state": active_state},
        {"title": "Add dark mode", "state": "In Progress"},
        {"title": "Line one\nline two\u200b" + "x" * 300, "state": active_state},
        {"title": "Finished already", "state": "Done"},
    ])
    config = source_config(standin)

    async def run() -> None:
        async with engines(agent, standin, config) as group:
            group.add("engine-a"), group.add("engine-b")
            await group.until(lambda: len(source_tasks(agent)) >= 3, "three tasks")
            for _ in range(3):  # more rounds of both change nothing
                await group.round()
            restarted = group.add("engine-c")  # a new process: nothing remembered
            for _ in range(3):
                await group.round(restarted)
            assert restarted.counts["created"] == 0  # it found every task listed

    asyncio.run(run())
    tasks = {t.source.id: t for t in source_tasks(agent)}
    assert len(source_tasks(agent)) == 3
    assert set(tasks) == {seeded[0]["id"], seeded[1]["id"], seeded[2]["id"]}
    login = tasks[seeded[0]["id"]]
    assert login.title == "Fix the login page"
    assert login.content == f"{seeded[0]['identifier']}: {seeded[0]['url']}\n\nIt 500s on submit."
    assert (login.source.kind, login.source.identifier, login.source.url) == (
        standin.kind, seeded[0]["identifier"], seeded[0]["url"])
    assert login.idempotency_key == f"source:{standin.kind}:{seeded[0]['id']}"
    long_title = tasks[seeded[2]["id"]].title
    assert long_title.startswith("Line one line two x") and len(long_title) == 200


def test_title_and_content_are_cut_safely():
    """An empty title falls back to the identifier; content is cut on a character boundary."""
    issue = Issue(id="1", identifier="ENG-1", title=" \t", description="é" * 200_000, url=None, state="Todo")
    assert task_title(issue) == "ENG-1"
    content = task_content(issue)
    assert len(content.encode()) <= 256 * 1024 and content.startswith("ENG-1\n\n") and content.endswith("é")


def test_closed_issue_stops_its_running_task_and_keeps_its_branch(agent_factory, fake_cli, linear_standin):
    """on_start moves the issue when the task starts; moved to Done mid-run, the task is
    stopped and cancelled with the reason, its branch (with the work so far) kept. The issue
    gets one comment saying so, posted once the tracker can be reached (the stop itself needs
    no tracker call), however many engines sync."""
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    work = {"steps": [{"write": "wip.txt", "text": "half\n"}, {"commit": "half done"}, {"sleep": 120}]}
    [issue] = linear_standin.admin.seed([{"title": "Long job", "description": scenario(work)}])
    config = source_config(linear_standin, on_start="In Progress")

    async def run() -> None:
        async with engines(agent, linear_standin, config) as group:
            first, second = group.add("engine-a"), group.add("engine-b")
            await group.until(lambda: linear_standin.admin.issue(issue["id"])["state"] == "In Progress"
                              and "half done" in _branch_log(agent), "the task to start and commit")
            linear_standin.admin.move(issue["id"], "Done")
            await first.poll()
            deadline = time.monotonic() + 90
            while source_tasks(agent)[0].status.value != "cancelled":  # the tracker "down": no effects
                assert time.monotonic() < deadline, "timed out waiting for the task to be cancelled"
                await first.reconcile(tracker_effects=False)
                await asyncio.sleep(0.05)
            assert comments(linear_standin, issue["id"]) == []
            await group.until(lambda: comments(linear_standin, issue["id"]), "the stop's comment")
            for _ in range(3):
                await group.round()
            assert first.counts["commented"] + second.counts["commented"] == 1

    asyncio.run(run())
    [task] = source_tasks(agent)
    assert task.cancel_reason == f"{issue['identifier']} moved to Done in Linear"
    assert task.source.reports[f"stopped:{task.runs}"].state == "done"
    assert task.source.reports[f"stopnote:{task.runs}"].state == "done"
    assert "half done" in git(agent.settings.project_dir, "log", "--format=%s", f"task/{task.id}")
    moves = [(h["to"], h["by"]) for h in linear_standin.admin.issue(issue["id"])["history"]]
    assert moves == [("In Progress", "api"), ("Done", "human")]
    [comment] = comments(linear_standin, issue["id"])
    assert comment == (f"Baton stopped its run: {issue['identifier']} moved to Done. Its work so far is kept on "
                       f"branch task/{task.id}.\n\n— Baton (task {task.id}, stopnote:{task.runs})")


def _branch_log(agent) -> str:
    tasks = source_tasks(agent)
    if not tasks or tasks[0].status.value != "in_progress":
        return ""
    try:
        return git(agent.settings.project_dir, "log", "--format=%s", f"task/{tasks[0].id}")
    except Exception:  # the branch is not there yet
        return ""


def test_leaving_the_active_states_stops_and_coming_back_reruns(agent, linear_standin):
    """An issue moved out of the active states (not closed) cancels its waiting task with a
    reason; moved back, the task is rerun. A task a person cancelled is left alone."""
    first, second = linear_standin.admin.seed([{"title": "Parked later"}, {"title": "Cancelled by a person"}])
    config = source_config(linear_standin)

    def status(issue_id: str) -> str:
        return next(t for t in source_tasks(agent) if t.source.id == issue_id).status.value

    async def run() -> None:
        async with engines(agent, linear_standin, config) as group:
            group.add("engine-a"), group.add("engine-b")
            await group.until(lambda: len(source_tasks(agent)) == 2, "two tasks")
            person = next(t for t in source_tasks(agent) if t.source.id == second["id"])
            assert agent.client.post(f"/agent/tasks/{person.id}/cancel").status_code == 200
            linear_standin.admin.move(first["id"], "Backlog")
            await group.until(lambda: status(first["id"]) == "cancelled", "the parked issue's task to be cancelled")
            parked = next(t for t in source_tasks(agent) if t.source.id == first["id"])
            assert parked.cancel_reason == (f"{first['identifier']} left the active states (now Backlog); "
                                            "its work is kept on its branch")
            linear_standin.admin.move(first["id"], "Todo")
            await group.until(lambda: status(first["id"]) == "pending", "the task to be rerun")
            for _ in range(3):
                await group.round()
            assert status(second["id"]) == "cancelled"
            assert sum(engine.counts["rerun"] for engine in group.engines) == 1
            # Parked again and back: the same run is stopped and rerun a second time.
            linear_standin.admin.move(first["id"], "Backlog")
            await group.until(lambda: status(first["id"]) == "cancelled", "the task to be cancelled again")
            linear_standin.admin.move(first["id"], "Todo")
            await group.until(lambda: status(first["id"]) == "pending", "the task to be rerun again")
            assert sum(engine.counts["rerun"] for engine in group.engines) == 2

    asyncio.run(run())
    parked = next(t for t in source_tasks(agent) if t.source.id == first["id"])
    assert not any(key.startswith("rerun:") for key in parked.source.reports)  # released after each rerun
    # Never started: its stops are silent on the tracker.
    assert comments(linear_standin, first["id"]) == [] and comments(linear_standin, second["id"]) == []


def test_landed_task_moves_its_issue_and_comments_exactly_once(agent_factory, fake_cli, standin):
    """Two engines: the issue goes to on_start, then on_complete, with ONE comment naming the
    commit, the cost and the duration, ending with its marker line."""
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    [issue] = standin.admin.seed([{"title": "Ship it", "description": scenario(COMMIT)}])
    config = source_config(standin, on_start="In Progress", on_complete="Done")

    async def run() -> None:
        async with engines(agent, standin, config) as group:
            group.add("engine-a"), group.add("engine-b")
            await group.until(lambda: (t := source_tasks(agent)) and t[0].source.reports.get("done:1")
                              and t[0].source.reports["done:1"].state == "done", "the landing to be reported")
            for _ in range(3):
                await group.round()

    asyncio.run(run())
    [task] = source_tasks(agent)
    assert task.status.value == "completed" and task.commit_sha
    view = standin.admin.issue(issue["id"])
    assert view["state"] == "Done"
    assert [h["to"] for h in view["history"]] == ["In Progress", "Done"]
    [comment] = [c["body"] for c in view["comments"]]
    text, mark = comment.rstrip().split("\n\n")
    assert re.fullmatch(rf"Landed on the base branch as {task.commit_sha[:7]} · [0-9a-z ]+ s · \$\d+\.\d\d", text), text
    assert mark == f"— Baton (task {task.id}, done:1)" == marker(task.id, "done:1")


def test_review_round_trip_moves_the_issue_back_and_forth(agent_factory, fake_cli, linear_standin):
    """landing: review. The issue follows its task: In Progress, In Review (one comment per
    review), back to In Progress when a person asks for changes (the task is not stopped though
    its issue is out of the active states: the engine put it there), Done once approved."""
    agent = agent_factory(config=fake_cli.config(landing="review"), dispatch=True)
    work = {**COMMIT, "on_resume": [{"steps": [{"append": "feature.txt", "text": "more\n"}, {"commit": "more"}]}]}
    [issue] = linear_standin.admin.seed([{"title": "Reviewed work", "description": scenario(work)}])
    config = source_config(linear_standin, on_start="In Progress", on_review="In Review", on_complete="Done")

    def reported(key: str) -> bool:
        tasks = source_tasks(agent)
        return bool(tasks) and (r := tasks[0].source.reports.get(key)) is not None and r.state == "done"

    async def run() -> None:
        async with engines(agent, linear_standin, config) as group:
            group.add("engine-a")
            await group.until(lambda: reported("review:1"), "the first review")
            [task] = source_tasks(agent)
            sent = agent.client.post(f"/agent/tasks/{task.id}/request-changes", json={"text": "More, please."})
            assert sent.status_code == 200, sent.text
            await group.until(lambda: reported("review:2"), "the second review")
            sha = agent.store.get(task.id).review_sha
            assert agent.client.post(f"/agent/tasks/{task.id}/approve", json={"sha": sha}).status_code == 200
            await group.until(lambda: reported("done:3"), "the landing")

    asyncio.run(run())
    [task] = source_tasks(agent)
    assert task.status.value == "completed" and "stopped:2" not in task.source.reports
    view = linear_standin.admin.issue(issue["id"])
    assert [h["to"] for h in view["history"]] == ["In Progress", "In Review", "In Progress", "In Review", "Done"]
    bodies = [c["body"] for c in view["comments"]]
    heads = [b.splitlines()[0] for b in bodies]
    assert heads[0].startswith("Ready for review in Baton · ") and heads[1].startswith("Ready for review in Baton · ")
    assert heads[2].startswith(f"Landed on the base branch as {task.commit_sha[:7]} · ")


def test_failed_task_is_commented_retried_after_backoff_then_left(agent_factory, fake_cli, linear_standin):
    """Each failed run gets one comment; the rerun waits retry_delay(n) after the failure (the
    engine's clock is the test's); after max_attempts the task stays failed."""
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    [issue] = linear_standin.admin.seed([{"title": "Always breaks", "description": scenario(FAIL)}])
    config = source_config(linear_standin, max_attempts=2, retry_base_seconds=100)
    offset = [0.0]

    def failed_runs() -> int:
        tasks = source_tasks(agent)
        return tasks[0].runs if tasks and tasks[0].status.value == "failed" else 0

    async def run() -> None:
        async with engines(agent, linear_standin, config, clock=lambda: time.time() + offset[0]) as group:
            group.add("engine-a"), group.add("engine-b")
            await group.until(lambda: failed_runs() == 1 and len(comments(linear_standin, issue["id"])) == 1,
                              "the first failure to be commented")
            for _ in range(3):  # inside the backoff: no rerun
                await group.round()
            assert failed_runs() == 1
            offset[0] = 100.0  # the backoff has passed
            await group.until(lambda: failed_runs() == 2 and len(comments(linear_standin, issue["id"])) == 2,
                              "the rerun to fail and be commented")
            offset[0] = 10_000.0
            for _ in range(3):  # max_attempts reached: left failed
                await group.round()

    asyncio.run(run())
    [task] = source_tasks(agent)
    assert task.status.value == "failed" and task.runs == 2
    first, second = comments(linear_standin, issue["id"])
    assert first.startswith("Baton's run failed: the coding agent reported an error")
    assert "Baton will retry it in 1 min 40 s (attempt 2 of 2)." in first
    assert first.rstrip().endswith(f"— Baton (task {task.id}, failed:1)")
    assert "will not retry it: 2 of 2 attempts failed" in second
    assert task.source.reports["retry:1"].state == "done" and "retry:2" not in task.source.reports


@pytest.mark.parametrize("old_format", [False, True], ids=["marker", "old-marker"])
def test_a_stale_claim_is_taken_over_without_a_second_comment(agent_factory, fake_cli, linear_standin, monkeypatch,
                                                              old_format):
    """An engine that claimed a task's landing report, posted its comment and died before
    marking it done: once the claim is stale, another engine takes it over, finds the marker
    among the issue's comments and posts nothing more. The marker of an earlier Baton
    ("baton task <id> · <key>") is recognised too: an upgrade does not post twice."""
    monkeypatch.setattr(engine_module, "STALE_SECONDS", 1)
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    [issue] = linear_standin.admin.seed([{"title": "Ship it", "description": scenario(COMMIT)}])
    config = source_config(linear_standin)

    async def run() -> None:
        async with engines(agent, linear_standin, config) as group:
            creator = group.add("engine-a")
            await group.until(lambda: source_tasks(agent), "the task", engines=(creator,))
            [task] = source_tasks(agent)
            await asyncio.to_thread(wait_task_done, agent, task.id)
            # The engine that died: its claim and its comment, no `done`.
            claim = agent.client.post(f"/agent/tasks/{task.id}/source/reports", json={
                "key": "done:1", "action": "claim", "by": "dead-engine", "stale_seconds": 120})
            assert claim.json()["granted"] is True
            mark = f"baton task {task.id} · done:1" if old_format else marker(task.id, "done:1")
            await creator.tracker.add_comment(issue["id"], f"Completed by Baton\n\n{mark}")
            survivor = group.add("engine-b")
            await group.until(lambda: agent.store.get(task.id).source.reports["done:1"].state == "done",
                              "the stale claim to be taken over", engines=(survivor,))
            assert survivor.counts["commented"] == 0

    asyncio.run(run())
    assert len(comments(linear_standin, issue["id"])) == 1


class _LostAnswer:
    """A tracker client whose first comment post lands but whose answer is lost (a timeout)."""

    def __init__(self, real) -> None:
        self.real, self.lost = real, 0

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    async def add_comment(self, issue_id: str, body: str):
        comment = await self.real.add_comment(issue_id, body)
        if not self.lost:
            self.lost += 1
            raise ServerError("cannot reach 127.0.0.1: no answer within 20 s (ReadTimeout)")
        return comment


def test_a_comment_whose_answer_was_lost_is_not_posted_again(agent_factory, fake_cli, linear_standin):
    """The landing comment is posted but its answer never comes: the claim is released and the
    next round finds the marker among the issue's comments instead of posting a second one."""
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    [issue] = linear_standin.admin.seed([{"title": "Ship it", "description": scenario(COMMIT)}])
    config = source_config(linear_standin)

    def reported() -> bool:
        tasks = source_tasks(agent)
        return bool(tasks) and (r := tasks[0].source.reports.get("done:1")) is not None and r.state == "done"

    async def run() -> _LostAnswer:
        async with engines(agent, linear_standin, config) as group:
            engine = group.add("engine-a")
            engine.tracker = flaky = _LostAnswer(engine.tracker)
            deadline = time.monotonic() + 90
            while not reported():
                assert time.monotonic() < deadline, "timed out waiting for the landing to be reported"
                await engine.poll()
                try:
                    await engine.reconcile()
                except ServerError:  # the lost answer: released, retried next round
                    pass
                await asyncio.sleep(0.05)
            return flaky

    flaky = asyncio.run(run())
    assert flaky.lost == 1
    [task] = source_tasks(agent)
    [comment] = comments(linear_standin, issue["id"])
    assert comment.rstrip().endswith(f"— Baton (task {task.id}, done:1)")


def test_an_issue_missing_from_a_lagging_search_is_not_taken_as_gone(agent, standin):
    """Jira's search lags behind writes: an engine whose search leaves out an issue that is
    still in an active state does not stop its task (another engine made it) until the issue
    has been missing for UNLISTED_GRACE; then it has left the filter."""
    [issue] = standin.admin.seed([{"title": "Fresh issue"}])
    config = source_config(standin)
    offset = [0.0]

    async def run() -> None:
        async with engines(agent, standin, config, clock=lambda: time.time() + offset[0]) as group:
            fresh, lagging = group.add("engine-a"), group.add("engine-b")
            await group.until(lambda: source_tasks(agent), "the task", engines=(fresh,))
            real_search = lagging.tracker.active_issues

            async def stale_search(states):
                return [i for i in await real_search(states) if i.id != issue["id"]]
            lagging.tracker.active_issues = stale_search
            for _ in range(3):
                await group.round(lagging)
            assert source_tasks(agent)[0].status.value == "pending"
            offset[0] = engine_module.UNLISTED_GRACE + 1
            await group.until(lambda: source_tasks(agent)[0].status.value == "cancelled",
                              "the task to be stopped", engines=(lagging,))

    asyncio.run(run())
    [task] = source_tasks(agent)
    assert "no longer matches the source's filter" in task.cancel_reason


def test_one_issue_the_tracker_refuses_does_not_hold_up_the_others(agent, linear_standin):
    """A side effect the tracker keeps refusing for one task (its on_start move) is reported,
    yet the tasks listed after it are still acted on: a stopped task whose issue is active
    again is rerun in the same round."""
    poisoned, parked = linear_standin.admin.seed([{"title": "Poisoned"}, {"title": "Parked"}])
    config = source_config(linear_standin, on_start="In Progress")

    def status(issue_id: str) -> str:
        return next(t for t in source_tasks(agent) if t.source.id == issue_id).status.value

    async def run() -> list[Exception]:
        async with engines(agent, linear_standin, config) as group:
            engine = group.add("engine-a")
            real_move = engine.tracker.move

            async def move(issue, state):
                if issue.id == poisoned["id"]:
                    raise BadQuery("Linear refused move: the state cannot be set on this issue")
                return await real_move(issue, state)
            engine.tracker.move = move
            await group.until(lambda: len(source_tasks(agent)) == 2, "two tasks")
            linear_standin.admin.move(parked["id"], "Backlog")
            await group.until(lambda: status(parked["id"]) == "cancelled", "the parked task to be stopped")
            task_id = next(t.id for t in source_tasks(agent) if t.source.id == poisoned["id"])
            agent.store.claim(Owner(pid=1, host="h", instance="i"), 60, task_id=task_id)
            linear_standin.admin.move(parked["id"], "Todo")
            errors: list[Exception] = []
            deadline = time.monotonic() + 30
            while status(parked["id"]) != "pending":
                assert time.monotonic() < deadline, "timed out waiting for the parked task to be rerun"
                await engine.poll()
                try:
                    await engine.reconcile()
                except BadQuery as exc:
                    errors.append(exc)
                await asyncio.sleep(0.05)
            return errors, engine.warning

    errors, warning = asyncio.run(run())
    assert errors and "cannot be set" in errors[0].message
    assert warning == f"could not move {poisoned['identifier']} to In Progress: {errors[0].message}"


@pytest.mark.parametrize("kind", ["linear", "jira"])
def test_a_forged_source_never_reaches_an_issue_outside_the_filter(agent_factory, fake_cli, tmp_path, kind):
    """Anyone who reaches the agent's API (a coding agent, through TASK_PORT) can create a task
    whose `source` names any issue the tracker key can see: one of another team (Linear) or
    project (Jira). It lands, yet the engine neither moves that issue nor comments on it."""
    other = {"linear": {"title": "Another team's issue", "state": "Todo", "team": "OPS"},
             "jira": {"title": "Another project's issue", "state": "To Do", "project": "HR"}}[kind]
    scope = {"linear": {"teams": ["ENG", "OPS"]}, "jira": {"projects": ["SHOP", "HR"]}}[kind]
    with start_standin(kind, tmp_path / "standin", **scope) as standin:
        agent = agent_factory(config=fake_cli.config(), dispatch=True)
        [victim] = standin.admin.seed([other])
        # Linear cannot move an issue to another team's state: without on_complete the comment is the test.
        config = source_config(standin, on_start="In Progress", on_complete="Done" if kind == "jira" else None)
        forged = agent.client.post("/agent/tasks", json={
            "title": "Nothing to see", "content": scenario(COMMIT),
            "source": {"kind": kind, "id": victim["id"], "identifier": "ENG-999"}})
        assert forged.status_code == 201, forged.text
        # Landed before any poll saw it: the engine meets a completed task to report.
        assert wait_task_done(agent, forged.json()["id"]).status.value == "completed"

        async def run() -> None:
            async with engines(agent, standin, config) as group:
                group.add("engine-a")
                for _ in range(3):
                    await group.round()

        asyncio.run(run())
        view = standin.admin.issue(victim["id"])
        assert view["state"] == other["state"] and view["history"] == []
        assert view["comments"] == []
        [task] = source_tasks(agent)
        assert "done:1" not in task.source.reports


def test_extra_jql_cannot_reach_past_the_project():
    """filter.jql is AND-ed in parentheses: a `)` closing more than it opened (or an ORDER BY)
    would let it widen the search beyond the project, so the configuration refuses it."""
    base = {"kind": "jira", "base_url": "https://x.atlassian.net", "email": "a@example.com",
            "api_token": "$JIRA_API_TOKEN", "filter": {"project": "SHOP"}}

    def jql(text: str) -> SourceConfig:
        return SourceConfig.model_validate({**base, "filter": {"project": "SHOP", "jql": text}})

    assert jql('assignee = currentUser() AND (summary ~ "a)b" OR labels = x)').filter.jql
    for escaping in ("x) OR (project != SHOP", "x = 1 ORDER BY created", "(x = 1", 'summary ~ "open'):
        with pytest.raises(ValueError, match="filter.jql"):
            jql(escaping)


def test_an_issues_priority_becomes_its_tasks_at_create_only(agent, standin):
    """1 urgent, 2 high, 3 medium, 4 low, none -> medium (Jira's Highest..Low the same); a
    later change of the issue's priority leaves the task alone."""
    seeded = standin.admin.seed([{"title": f"P{p}", "priority": p} for p in (1, 2, 3, 4)] +
                                [{"title": "No priority", "priority": 0}])
    config = source_config(standin)

    def priorities() -> list[str]:
        by_issue = {t.source.id: t.priority for t in source_tasks(agent)}
        return [by_issue.get(issue["id"]) for issue in seeded]

    async def run() -> None:
        async with engines(agent, standin, config) as group:
            group.add("engine-a")
            await group.until(lambda: len(source_tasks(agent)) == 5, "five tasks")
            standin.admin.update(seeded[3]["id"], priority=1)
            for _ in range(3):
                await group.round()

    asyncio.run(run())
    assert priorities() == ["urgent", "high", "medium", "low", "medium"]


def test_a_failure_comment_quotes_only_the_first_line_of_the_error(agent_factory, fake_cli, linear_standin):
    """An agent's error output is not published wholesale: the reason in words, the first line
    of the message cut to 200 characters, then whether Baton retries."""
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    [issue] = linear_standin.admin.seed([{"title": "Breaks loudly", "description": scenario(FAIL)}])
    config = source_config(linear_standin, max_attempts=3)

    async def run() -> None:
        async with engines(agent, linear_standin, config) as group:
            engine = group.add("engine-a")
            await group.until(lambda: source_tasks(agent), "the task")
            [task] = source_tasks(agent)
            await asyncio.to_thread(wait_task_done, agent, task.id)
            noisy = "\n  \nboom: " + "x" * 300 + "\nTraceback (most recent call last):\n  SECRET_LOCAL_PATH"
            agent.store.update(task.id, error_message=noisy)
            await group.until(lambda: comments(linear_standin, issue["id"]), "the failure's comment")
            assert engine.counts["commented"] == 1

    asyncio.run(run())
    [task] = source_tasks(agent)
    [comment] = comments(linear_standin, issue["id"])
    lines = comment.splitlines()
    assert lines[0].startswith("Baton's run failed: the coding agent reported an error")
    assert lines[1] == "Error: boom: " + "x" * 193 + "…" and len(lines[1]) == len("Error: ") + 200
    assert lines[2].startswith("Baton will retry it in 10 s (attempt 2 of 3)")
    assert "Traceback" not in comment and "SECRET_LOCAL_PATH" not in comment
    assert lines[-1] == f"— Baton (task {task.id}, failed:1)"


def test_durations_read_the_same_everywhere():
    assert [duration_text(s) for s in (0, 14, 14.4, 60, 125, 3600, 3780, 3785, 86400)] == [
        "0 s", "14 s", "14 s", "1 min", "2 min 5 s", "1 h", "1 h 3 min", "1 h 3 min", "24 h"]


def test_a_move_the_tracker_cannot_make_is_a_warning_cleared_by_a_later_move(agent, linear_standin):
    """on_start names a state the team does not have: each start's move fails and the engine
    says so in `warning` (the task goes on); once a move succeeds the warning is gone."""
    first, second = linear_standin.admin.seed([{"title": "First"}, {"title": "Second"}])
    config = source_config(linear_standin, on_start="Shipping", active_states=["Todo", "In Progress", "Shipping"])

    async def run() -> None:
        async with engines(agent, linear_standin, config) as group:
            engine = group.add("engine-a")
            await group.until(lambda: len(source_tasks(agent)) == 2, "two tasks")
            task = next(t for t in source_tasks(agent) if t.source.id == first["id"])
            agent.store.claim(Owner(pid=1, host="h", instance="i"), 60, task_id=task.id)
            await group.until(lambda: engine.warning, "the warning")
            assert engine.warning.startswith(f"could not move {first['identifier']} to Shipping: ")
            assert "no state 'Shipping'" in engine.warning
            started = agent.store.get(task.id)
            assert started.source.reports[f"started:{started.runs}"].state == "done"  # said, not retried
            engine.config = config.model_copy(update={"on_start": "In Progress"})
            other = next(t for t in source_tasks(agent) if t.source.id == second["id"])
            agent.store.claim(Owner(pid=1, host="h", instance="i"), 60, task_id=other.id)
            await group.until(lambda: engine.warning is None, "the warning to clear")

    asyncio.run(run())
    assert linear_standin.admin.issue(second["id"])["state"] == "In Progress"
    assert linear_standin.admin.issue(first["id"])["state"] == "Todo"
