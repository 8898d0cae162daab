"""The board is live by change (issue #10, items 1 and 2), in a real browser against a real
dashboard process and real agents: GET /api/board once, then the /api/board/stream; nothing
polls; the stream resumes after the dashboard restarts or the connection drops; a long column
shows a page of cards and fetches more on demand."""

from __future__ import annotations

import os

import pytest

from backend.models import NewTask, Owner, TaskStatus
from boardpage import BoardDashboard, BoardPage, DroppingProxy
from browsing import playwright_or_skip

playwright_api = playwright_or_skip()
expect = playwright_api.expect
OWNER = Owner(pid=os.getpid(), host="test", instance="browser-live")


@pytest.fixture
def world(agent_factory, tmp_path):
    agent = agent_factory()  # no dispatcher: tasks stay where the test puts them
    dashboard = BoardDashboard(tmp_path, {"alpha": agent})
    yield agent, dashboard
    dashboard.stop()


@pytest.fixture
def board(browser, world):
    _, dashboard = world
    tab = BoardPage(browser, dashboard.url)
    yield tab
    assert tab.errors == [], tab.errors
    tab.close()


def card(page, task_id: str):
    return page.locator(f".card[data-id='{task_id}']")


def test_a_task_created_through_the_agent_appears_through_the_stream(board, world):
    agent, _ = world
    page = board.page
    changes = int(page.locator("body").get_attribute("data-changes") or 0)
    task_id = agent.client.post("/agent/tasks", json={"title": "Made by the agent's API"}).json()["id"]
    expect(page.locator(".column[data-status='pending']").locator(f".card[data-id='{task_id}']")).to_be_visible()
    assert int(page.locator("body").get_attribute("data-changes")) > changes
    agent.client.post(f"/agent/tasks/{task_id}/cancel").raise_for_status()
    expect(page.locator(".column[data-status='cancelled']").locator(f".card[data-id='{task_id}']")).to_be_visible()
    # All of it came through the one stream: the board itself was asked once.
    assert [p for p in board.paths("/api/board") if not p.startswith("/api/board/")] == ["/api/board"]
    assert len(board.paths("/api/board/stream")) == 1


def test_an_idle_board_makes_no_requests(board, world):
    agent, _ = world
    task_id = agent.client.post("/agent/tasks", json={"title": "Shown, then left alone"}).json()["id"]
    expect(card(board.page, task_id)).to_be_visible()  # the stream is open and delivering
    board.requests.clear()
    # An observation window, not a synchronisation: the old page asked every 2 s.
    board.page.wait_for_timeout(5000)
    assert board.requests == []


def test_the_stream_resumes_after_the_dashboard_restarts(board, world):
    agent, dashboard = world
    page = board.page
    dashboard.stop()
    expect(page.locator(".notice[data-role='stale']")).to_be_visible(timeout=15000)  # says it may be behind
    # Written while nobody relays it: the resumed stream must bring it.
    task_id = agent.client.post("/agent/tasks", json={"title": "Written while the dashboard was down"}).json()["id"]
    dashboard.start()
    expect(card(page, task_id)).to_be_visible(timeout=30000)
    expect(page.locator(".notice[data-role='stale']")).to_have_count(0)
    # Resumed (EventSource sends Last-Event-ID or its cursor), not reloaded: still one GET /api/board.
    assert [p for p in board.paths("/api/board") if not p.startswith("/api/board/")] == ["/api/board"]
    assert len(board.paths("/api/board/stream")) >= 2
    # And it stays live after the resume.
    later = agent.client.post("/agent/tasks", json={"title": "Written after the restart"}).json()["id"]
    expect(card(page, later)).to_be_visible()


def test_the_stream_resumes_after_the_connection_drops(browser, world):
    agent, dashboard = world
    proxy = DroppingProxy(dashboard.port)
    board = BoardPage(browser, proxy.url)
    try:
        page = board.page
        first = agent.client.post("/agent/tasks", json={"title": "Before the drop"}).json()["id"]
        expect(card(page, first)).to_be_visible()
        assert proxy.drop() > 0  # the page's stream (and any idle connection) is cut
        task_id = agent.client.post("/agent/tasks", json={"title": "Written around the drop"}).json()["id"]
        expect(card(page, task_id)).to_be_visible(timeout=30000)
        # The browser reconnected the stream by itself (resuming from its cursor), without reloading the board.
        assert len(board.paths("/api/board/stream")) >= 2
        assert [p for p in board.paths("/api/board") if not p.startswith("/api/board/")] == ["/api/board"]
        assert board.errors == [], board.errors
    finally:
        board.close()
        proxy.close()


def test_show_more_pages_a_column_of_120_completed_tasks(browser, world):
    agent, dashboard = world
    store = agent.store
    created = store.create_many([NewTask(title=f"Finished {i:03d}") for i in range(120)])
    for task in created:
        store.claim(OWNER, 60, task_id=task.id)
        store.transition(task.id, TaskStatus.completed)
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        completed = page.locator(".column[data-status='completed']")
        more = completed.locator("[data-role='more']")
        expect(completed.locator(".count")).to_have_text("120")  # exact, from the dispatcher's counts
        expect(completed.locator(".card")).to_have_count(50)
        more.click()
        expect(completed.locator(".card")).to_have_count(100)
        more.click()
        expect(completed.locator(".card")).to_have_count(120)
        expect(more).to_be_hidden()
        # Each once: the pages joined without a gap or a repeat.
        titles = completed.locator(".card-title").all_text_contents()
        assert sorted(titles) == [f"Finished {i:03d}" for i in range(120)]
        assert board.paths("/api/board/page?status=completed")  # the rest was fetched on demand
        assert board.errors == [], board.errors
    finally:
        board.close()
