"""One upstream follow per project, shared by every page (backend/dashboard/projecthub.py): open
pages do not multiply the connections to an agent; a page joining late catches up from its own
cursor; usage travels only when it changed; a stalled page is made to catch up afresh instead of
growing the dashboard's memory. Real agents (uvicorn on free ports), a real dashboard."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import httpx

from backend.dashboard.boardfeed import BoardFeed
from backend.dashboard.config import ProjectConfig
from backend.dashboard.connectors.http import HTTPConnector
from backend.dashboard.projecthub import ProjectHub
from backend.models import NewTask
from backend.web.sse import SSEParser
from support import wait_for
from test_board_feed import streams  # noqa: F401 - the fixture


def _project(agent) -> dict:
    return {"id": "alpha", "agent_url": agent.url,
            "agent_project_id": agent.client.get("/agent/health").json()["project_id"]}


def test_three_pages_share_one_upstream_stream_per_project(agent_factory, dashboard_factory, streams):
    one, two = agent_factory(), agent_factory()
    two_id = two.client.get("/agent/health").json()["project_id"]
    client = dashboard_factory([_project(one), {"id": "beta", "agent_url": two.url, "agent_project_id": two_id}],
                               timeout=5)
    pages = [streams(str(client.base_url)) for _ in range(3)]
    for page in pages:
        page.project("alpha", lambda p: p["healthy"], "alpha followed")
        page.project("beta", lambda p: p["healthy"], "beta followed")
    # One change stream open in each agent, however many pages follow it.
    assert len(one.app.state.change_feed._waiters) == 1
    assert len(two.app.state.change_feed._waiters) == 1
    made = one.store.create(NewTask(title="every page hears it"))
    for page in pages:
        data, _ = page.tasks_with("alpha", made.id)
        assert data["reset"] is False
    assert len(one.app.state.change_feed._waiters) == 1


def test_a_page_joining_late_gets_exactly_the_changes_it_missed(agent_factory, dashboard_factory, streams):
    agent = agent_factory()
    client = dashboard_factory([_project(agent)], timeout=5)
    early = streams(str(client.base_url), cursor=client.get("/api/board").json()["cursor"])
    before = agent.store.create(NewTask(title="the late page knew this one"))
    _, late_cursor = early.tasks_with("alpha", before.id)
    missed = [agent.store.create(NewTask(title=f"missed {i}")) for i in range(3)]
    for task in missed:
        early.tasks_with("alpha", task.id)  # the shared follow is well past the late page's cursor
    late = streams(str(client.base_url), last_event_id=late_cursor)
    late.project("alpha", lambda p: p["counts"]["pending"] == 4, "the late page's project")
    after = agent.store.create(NewTask(title="after the late page joined"))
    late.tasks_with("alpha", after.id)
    got = [(d["reset"], sorted(t["id"] for t in d["tasks"])) for d, _ in late.events("tasks")]
    assert got == [(False, sorted(t.id for t in missed)), (False, [after.id])]
    assert len(agent.app.state.change_feed._waiters) == 1  # caught up without a follow of its own


def test_a_usage_event_comes_only_when_usage_changed(agent_factory, dashboard_factory, streams):
    agent = agent_factory()
    client = dashboard_factory([_project(agent)], timeout=5)
    board = client.get("/api/board").json()
    assert board["projects"][0]["usage"] == {"hours": []}  # /api/board keeps usage per project
    page = streams(str(client.base_url), cursor=board["cursor"])
    assert "usage" not in page.project("alpha")
    task = agent.store.create(NewTask(title="no cost yet"))
    page.tasks_with("alpha", task.id)
    page.project("alpha", lambda p: p["counts"]["pending"] == 1, "the counts to follow")
    assert page.events("usage") == []  # counts changed, usage did not
    agent.store.update(task.id, cost_usd=1.25, input_tokens=10, output_tokens=5,
                       started_at=datetime.now(timezone.utc))
    [(usage, _)] = wait_for(lambda: page.events("usage") or None, timeout=30, what="a usage event")
    assert usage["project"] == "alpha"
    assert [(h["cost_usd"], h["tasks"]) for h in usage["usage"]["hours"]] == [(1.25, 1)]
    marker = agent.store.create(NewTask(title="a change without cost"))
    page.tasks_with("alpha", marker.id)
    page.project("alpha", lambda p: p["counts"]["pending"] == 2, "the counts to follow")
    assert len(page.events("usage")) == 1
    assert all("usage" not in p for p, _ in page.events("project"))


def test_a_page_whose_queue_overflows_still_ends_with_the_right_tasks(agent_factory):
    agent = agent_factory()
    project = ProjectConfig.model_validate(_project(agent))

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            hub = ProjectHub(HTTPConnector(project, client, 5), lambda: None)
            feed = BoardFeed({"alpha": hub}, {}, limit=3, buffer=1)
            page = feed.events()
            parser, tasks = SSEParser(), {}

            async def read_until(condition, what: str) -> None:
                async with asyncio.timeout(30):  # a deadline, not a pace
                    while not condition():
                        for event, raw, _ in parser.feed(await page.__anext__()):
                            if event == "tasks":
                                data = json.loads(raw)
                                if data["reset"]:
                                    tasks.clear()
                                tasks.update({t["id"]: t for t in data["tasks"]})
                                for gone in data["removed"]:
                                    tasks.pop(gone, None)

            async def hub_at(revision: int) -> None:
                async with asyncio.timeout(30):
                    while hub.cursor is None or int(hub.cursor.split(".")[1]) < revision:
                        await asyncio.sleep(0.02)

            try:
                first = agent.store.create(NewTask(title="before the page stalls"))
                await read_until(lambda: first.id in tasks, "the first task")
                [sub] = hub.subscribers
                # The page stops reading; each write reaches the hub on its own, as its own item.
                made = []
                for i in range(12):
                    made.append(agent.store.create(NewTask(title=f"while stalled {i}")))
                    await hub_at(agent.store.snapshot().revision)
                renamed = agent.store.update(first.id, title="renamed while stalled")
                await hub_at(agent.store.snapshot().revision)
                assert sub.overflowed and sub not in hub.subscribers  # dropped, not grown
                want = {t.id for t in made} | {first.id}
                await read_until(lambda: set(tasks) == want and tasks[first.id]["title"] == renamed.title,
                                 "the page to have every task")
                assert len(sub.items) == 0 and len(hub.subscribers) == 1  # subscribed again, afresh
            finally:
                await page.aclose()
                await hub.close()

    asyncio.run(scenario())


def test_the_agents_changes_events_leave_usage_to_its_state_events(agent_factory):
    from test_change_stream import stream
    agent = agent_factory()
    with stream(agent) as (_, reader):
        name, state, _ = reader.next()
        assert name == "state" and state["usage"] == {"hours": []}
        changes, _ = reader.next_changes()
        assert changes["reset"] is True and "usage" not in changes
    assert "usage" in agent.client.get("/agent/changes").json()  # the plain answer keeps it
