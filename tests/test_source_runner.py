"""The source runner (backend/sources/runner.py): each project's sync loop in the dashboard,
against a real agent and a stand-in tracker process. Health says what the loop sees; "Sync now"
polls at once; a tracker outage makes the source unhealthy without touching running tasks, and
the sync resumes without duplicates; rate limits and an unreachable agent are said in words."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import httpx

from backend.dashboard.config import ProjectConfig
from backend.dashboard.connectors.http import HTTPConnector
from backend.sources.config import SourceConfig
from backend.models import Owner
from backend.sources.runner import SourceHub, SourceRunner
from backend.trackers import make_tracker
from backend.trackers.base import BadQuery
from support import free_port


async def until(condition: Callable[[], object], what: str, timeout: float = 90) -> object:
    """Wait for `condition()` (run off the loop: it may call the agent or the stand-in)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(condition)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def source_tasks(agent) -> list:
    return [t for t in agent.store.snapshot().tasks.values() if t.source is not None]


@asynccontextmanager
async def running(agent_url: str, standin, config: SourceConfig, max_wait: float = 60.0, project: str = "shop",
                  start_grace: float = 0.0):
    async with httpx.AsyncClient() as client:
        connector = HTTPConnector(ProjectConfig(id=project, agent_url=agent_url), client, 5)
        tracker = make_tracker(config, environ=standin.environ, max_wait=max_wait)
        runner = SourceRunner(project, config, connector, tracker, engine_id="runner-test", reconcile_seconds=0.2,
                              start_grace=start_grace)
        await runner.start()
        try:
            yield runner
        finally:
            await runner.aclose()


def test_hub_runs_a_source_reports_health_and_syncs_now(agent, linear_standin):
    """The hub builds a runner for the project with a source only; its health shows the sync;
    with an hour between polls, trigger() ("Sync now") brings a new issue in at once."""
    linear_standin.admin.seed([{"title": "First"}])
    projects = [
        ProjectConfig.model_validate({"id": agent.settings.project_id, "agent_url": agent.url,
                                      "source": linear_standin.source(tools=False, poll_seconds=3600)}),
        ProjectConfig.model_validate({"id": "plain", "agent_url": agent.url}),
    ]

    async def run() -> None:
        async with httpx.AsyncClient() as client:
            connectors = {p.id: HTTPConnector(p, client, 5) for p in projects}
            hub = SourceHub.from_config(projects, connectors, None, linear_standin.environ, reconcile_seconds=0.2)
            assert hub.get("plain") is None
            runner = hub.get(agent.settings.project_id)
            assert runner.config is projects[0].source and runner.connector is connectors[agent.settings.project_id]
            assert runner.health()["state"] == "starting"
            await hub.start()
            try:
                await until(lambda: runner.health()["tasks"] == 1, "the first task")
                health = runner.health()
                assert (health["kind"], health["state"], health["healthy"], health["reason"]) == (
                    "linear", "ok", True, None)
                assert health["issues"] == 1 and health["errors"] == 0
                assert health["calls"] == runner.tracker.counter.calls > 0
                synced = datetime.fromisoformat(health["last_sync_at"].replace("Z", "+00:00"))
                upcoming = datetime.fromisoformat(health["next_sync_at"].replace("Z", "+00:00"))
                assert upcoming - synced == timedelta(seconds=3600)
                linear_standin.admin.seed([{"title": "Second"}])
                runner.trigger()
                await until(lambda: len(source_tasks(agent)) == 2, "the new issue's task after Sync now")
                assert runner.health()["issues"] == 2
            finally:
                await hub.aclose()

    asyncio.run(run())
    assert sorted(t.title for t in source_tasks(agent)) == ["First", "Second"]


def test_tracker_outage_leaves_tasks_running_and_sync_resumes_once(agent_factory, fake_cli, linear_standin, tmp_path):
    """Linear answers 503 while a task runs: the source is unhealthy with a reason, the task
    runs on and lands; once Linear is back, the issue is moved and commented exactly once, and
    no second task appears."""
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    release = tmp_path / "release"
    work = {"steps": [{"write": "feature.txt", "text": "done\n"}, {"commit": "feature"},
                      {"wait_for": str(release), "seconds": 120}]}
    [issue] = linear_standin.admin.seed([{"title": "Ship it", "description": "FAKE: " + json.dumps(work)}])
    config = SourceConfig.model_validate(linear_standin.source(tools=False, poll_seconds=1, on_complete="Done"))

    async def run() -> None:
        async with running(agent.url, linear_standin, config, project=agent.settings.project_id) as runner:
            await until(lambda: (t := source_tasks(agent)) and t[0].status.value == "in_progress", "the task to start")
            linear_standin.admin.fail("outage", seconds=600)
            runner.trigger()
            await until(lambda: runner.health()["state"] == "error", "the source to be unhealthy")
            health = runner.health()
            assert health["healthy"] is False and health["reason"] and health["errors"] >= 1
            assert source_tasks(agent)[0].status.value == "in_progress"  # untouched
            release.write_text("go")
            await until(lambda: source_tasks(agent)[0].status.value == "completed", "the task to land")
            assert runner.health()["state"] == "error"
            assert linear_standin.admin.issue(issue["id"])["comments"] == []
            linear_standin.admin.fail("none")
            runner.trigger()
            await until(lambda: (r := source_tasks(agent)[0].source.reports.get("done:1")) and r.state == "done",
                        "the landing to be reported")
            assert runner.health()["state"] == "ok" and runner.health()["reason"] is None

    asyncio.run(run())
    assert len(source_tasks(agent)) == 1
    view = linear_standin.admin.issue(issue["id"])
    assert view["state"] == "Done" and len(view["comments"]) == 1


def test_rate_limit_says_when_it_retries(agent, linear_standin):
    """Rate limited beyond what the client waits itself: the reason names Linear and the time
    of the next try, which is no sooner than Linear asked."""
    linear_standin.admin.seed([{"title": "First"}])
    config = SourceConfig.model_validate(linear_standin.source(tools=False, poll_seconds=1))

    async def run() -> None:
        async with running(agent.url, linear_standin, config, max_wait=0.5, project=agent.settings.project_id) as runner:
            await until(lambda: runner.health()["state"] == "ok", "the first sync")
            linear_standin.admin.fail("rate_limit", count=1000, retry_after=120)
            runner.trigger()
            await until(lambda: runner.health()["state"] == "error", "the rate limit")
            health = runner.health()
            assert re.fullmatch(r"rate limited by Linear; retrying at \d\d:\d\d:\d\d", health["reason"])
            upcoming = datetime.fromisoformat(health["next_sync_at"].replace("Z", "+00:00"))
            assert upcoming >= datetime.now(timezone.utc) + timedelta(seconds=100)

    asyncio.run(run())


def test_unreachable_agent_is_said_once_it_had_time_to_start(linear_standin):
    """The tracker answers but the agent does not: while the agent may still be booting (the
    dashboard just started it; at most start_grace after the runner started, until a reconcile
    succeeds) the source is "starting" with no error; after that it is in error, saying so."""
    linear_standin.admin.seed([{"title": "First"}])
    config = SourceConfig.model_validate(linear_standin.source(tools=False, poll_seconds=1))
    nobody = f"http://127.0.0.1:{free_port()}"

    async def run() -> None:
        async with running(nobody, linear_standin, config, start_grace=3600) as booting:
            await until(lambda: booting.health()["issues"] == 1 and booting.agent_errors >= 2,
                        "the tracker read and the agent missed twice")
            health = booting.health()
            assert (health["state"], health["healthy"], health["reason"], health["errors"]) == (
                "starting", True, None, 0)
        async with running(nobody, linear_standin, config, start_grace=0) as runner:
            await until(lambda: runner.health()["state"] == "error", "the agent to be missed")
            health = runner.health()
            assert health["reason"].startswith("agent unreachable: ") and health["healthy"] is False
            assert health["issues"] == 1  # the tracker was read all the same

    asyncio.run(run())


def test_the_first_reconcile_ends_the_start(agent, linear_standin):
    """With an agent that answers, the source is "ok" as soon as a reconcile succeeded, however
    long the grace."""
    config = SourceConfig.model_validate(linear_standin.source(tools=False, poll_seconds=3600))

    async def run() -> None:
        async with running(agent.url, linear_standin, config, start_grace=3600,
                           project=agent.settings.project_id) as runner:
            await until(lambda: runner.health()["state"] == "ok", "the source to be ok")
            assert runner.health()["warning"] is None

    asyncio.run(run())


def test_sync_now_during_an_outage_does_not_push_the_next_try_away(agent, linear_standin):
    """Pressing "Sync now" while Linear is down: each press tries at once and fails, but the
    consecutive-error count (the backoff) does not grow and the next scheduled try does not
    move later. Once Linear is back, "Sync now" brings the source back."""
    linear_standin.admin.seed([{"title": "First"}])
    config = SourceConfig.model_validate(linear_standin.source(tools=False, poll_seconds=600))

    def upcoming(runner) -> datetime:
        return datetime.fromisoformat(runner.health()["next_sync_at"].replace("Z", "+00:00"))

    async def run() -> None:
        async with running(agent.url, linear_standin, config, project=agent.settings.project_id) as runner:
            await until(lambda: runner.health()["state"] == "ok", "the first sync")
            scheduled = upcoming(runner)
            linear_standin.admin.fail("outage", seconds=600)
            for press in range(3):
                done = runner.polls_done
                runner.trigger()
                await until(lambda: runner.polls_done > done, f"press {press + 1}'s poll")
                health = runner.health()
                assert health["state"] == "error" and "Linear" in health["reason"]
                assert runner.tracker_errors == 1
                assert upcoming(runner) <= scheduled + timedelta(seconds=1)
            linear_standin.admin.fail("none")
            runner.trigger()
            await until(lambda: runner.health()["state"] == "ok", "the source to recover")
            assert runner.tracker_errors == 0

    asyncio.run(run())


def test_a_side_effect_the_tracker_refuses_is_a_warning_not_an_error(agent, linear_standin):
    """Linear refuses one task's on_start move (BadQuery: that request, not an outage): the
    source stays ok, without backoff, and its health carries the warning; the engine gives the
    move up after a few tries."""
    [issue] = linear_standin.admin.seed([{"title": "Refused"}])
    config = SourceConfig.model_validate(linear_standin.source(tools=False, poll_seconds=1, on_start="In Progress"))

    async def run() -> None:
        async with running(agent.url, linear_standin, config, project=agent.settings.project_id) as runner:
            async def refuse(issue, state):
                raise BadQuery("Linear refused move: the state cannot be set on this issue")
            runner.tracker.move = refuse
            await until(lambda: source_tasks(agent), "the task")
            [task] = source_tasks(agent)
            agent.store.claim(Owner(pid=1, host="h", instance="i"), 60, task_id=task.id)
            key = f"started:{agent.store.get(task.id).runs}"
            await until(lambda: (r := agent.store.get(task.id).source.reports.get(key)) and r.state == "done",
                        "the move to be given up")
            health = runner.health()
            assert (health["state"], health["reason"], health["errors"]) == ("ok", None, 0)
            assert health["warning"] == (f"could not move {issue['identifier']} to In Progress: "
                                         "Linear refused move: the state cannot be set on this issue")
            assert runner.tracker_errors == 0

    asyncio.run(run())
