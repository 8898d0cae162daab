"""The live board where changes cross each other (issue #10, items 1, 4 and 6), in a real browser
against a real dashboard process and a real agent: a focused card keeps the focus when its task
changes; a task archived while a page of its column is on its way does not come back; many tasks
finishing at once (a resumed stream) make one toast, not one each."""

from __future__ import annotations

import os
from datetime import timedelta
from types import SimpleNamespace

import pytest

from backend.models import NewTask, Owner, TaskStatus, utcnow
from boardpage import BoardDashboard, BoardPage
from browsing import playwright_or_skip
from support import free_port, wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect
OWNER = Owner(pid=os.getpid(), host="test", instance="browser-live-races")


@pytest.fixture
def world(agent_factory, tmp_path):
    agent = agent_factory()  # no dispatcher: tasks stay where the test puts them
    dashboard = BoardDashboard(tmp_path, {"alpha": agent})
    yield agent, dashboard
    dashboard.stop()


def changes(page) -> int:
    return int(page.locator("body").get_attribute("data-changes") or 0)


def test_a_focused_card_keeps_the_focus_when_its_task_changes(browser, world):
    agent, dashboard = world
    running = agent.store.create(NewTask(title="Runs and talks"))
    agent.store.claim(OWNER, 600, task_id=running.id)
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        card = page.locator(f".column[data-status='in_progress'] .card[data-id='{running.id}']")
        card.focus()
        expect(card).to_be_focused()
        before = changes(page)
        # What run.py writes every few seconds while the agent talks: the card is drawn anew.
        agent.store.update(running.id, last_activity_at=utcnow() - timedelta(seconds=1))
        page.wait_for_selector(f"body:not([data-changes='{before}'])")
        expect(card.locator("[data-role='activity']")).to_be_visible()
        expect(card).to_be_focused()  # a keyboard user is not thrown back to the page's start
        page.keyboard.press("Enter")
        expect(page.locator("#drawer-title")).to_have_text("Runs and talks")
        assert board.errors == [], board.errors
    finally:
        board.close()


def test_a_task_archived_while_its_page_is_on_the_way_does_not_come_back(browser, world):
    agent, dashboard = world
    store = agent.store
    for task in store.create_many([NewTask(title=f"Finished {i:03d}") for i in range(120)]):
        store.claim(OWNER, 60, task_id=task.id)
        store.transition(task.id, TaskStatus.completed)
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        completed = page.locator(".column[data-status='completed']")
        more = completed.locator("[data-role='more']")
        more.click()
        expect(completed.locator(".card")).to_have_count(100)
        # The next page is read by the server now, and reaches the page only after the archive.
        held = []
        page.route("**/api/board/page?*", lambda route: held.append((route, route.fetch())))
        more.click()
        wait_for(lambda: page.evaluate("() => true") and held, timeout=30, what="the page's request")
        route, answer = held[0]
        victim = answer.json()["tasks"][5]["id"]
        before = changes(page)
        assert store.archive_finished(lambda task: task.id == victim)
        page.wait_for_selector(f"body:not([data-changes='{before}'])")  # the removal is on the page
        route.fulfill(response=answer)
        expect(completed.locator(".card")).to_have_count(119)
        expect(completed.locator(f".card[data-id='{victim}']")).to_have_count(0)
        expect(more).to_be_hidden()
        assert board.errors == [], board.errors
    finally:
        board.close()


def test_many_tasks_finishing_while_the_page_was_away_make_one_toast(browser, world):
    agent, dashboard = world
    store = agent.store
    tasks = store.create_many([NewTask(title=f"Batch {i}") for i in range(5)])
    for task in tasks:
        store.claim(OWNER, 600, task_id=task.id)
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        expect(page.locator(".column[data-status='in_progress'] .card")).to_have_count(5)
        dashboard.stop()
        expect(page.locator(".notice[data-role='stale']")).to_be_visible(timeout=15000)
        for task in tasks:
            store.transition(task.id, TaskStatus.completed)
        dashboard.start()  # the page resumes from its cursor: the five come in one batch
        expect(page.locator(".column[data-status='completed'] .card")).to_have_count(5, timeout=30000)
        toasts = page.locator("#toast .toast-item")
        expect(toasts.filter(has_text="Alpha: 5 tasks completed")).to_have_count(1)
        expect(toasts).to_have_count(1)
        assert board.errors == [], board.errors
    finally:
        board.close()


def test_a_notice_is_not_said_again_on_every_change(browser, world, tmp_path):
    """#notices is aria-live: redrawn on each stream event, a screen reader would read "Beta is
    unavailable" again at every change of any project."""
    agent, _ = world
    nobody = SimpleNamespace(url=f"http://127.0.0.1:{free_port()}", settings=SimpleNamespace(project_id="beta"))
    (tmp_path / "two").mkdir()
    dashboard = BoardDashboard(tmp_path / "two", {"alpha": agent, "beta": nobody})
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        notice = page.locator(".notice[data-project='beta']")
        expect(notice).to_be_visible()
        notice.evaluate("node => { node.dataset.seen = 'yes'; }")
        task_id = agent.client.post("/agent/tasks", json={"title": "Elsewhere"}).json()["id"]
        expect(page.locator(f".card[data-id='{task_id}']")).to_be_visible()
        expect(page.locator(".notice[data-project='beta'][data-seen='yes']")).to_have_count(1)  # the same node
        assert board.errors == [], board.errors
    finally:
        board.close()
        dashboard.stop()


def test_a_click_pressed_before_its_card_changes_still_opens_the_task(browser, world):
    # A running card changes every few seconds (last activity): a press and release that straddle
    # that redraw must still open the task, as a person's click would.
    agent, dashboard = world
    running = agent.store.create(NewTask(title="Changes under the pointer"))
    agent.store.claim(OWNER, 600, task_id=running.id)
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        card = page.locator(f".column[data-status='in_progress'] .card[data-id='{running.id}']")
        box = card.locator(".card-title").bounding_box()
        page.mouse.move(box["x"] + 5, box["y"] + box["height"] / 2)
        page.mouse.down()
        before = changes(page)
        agent.store.update(running.id, last_activity_at=utcnow() - timedelta(seconds=1))
        page.wait_for_selector(f"body:not([data-changes='{before}'])")
        expect(card.locator("[data-role='activity']")).to_be_visible()  # drawn again meanwhile
        page.mouse.up()
        expect(page.locator("#drawer-title")).to_have_text("Changes under the pointer")
        assert board.errors == [], board.errors
    finally:
        board.close()
