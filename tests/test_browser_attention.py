"""Attention and money on the board (issue #10, item 4), in a real browser against a real
dashboard process and real agents: toasts and opt-in browser notifications when a task finishes
or fails, cost and token totals, priority, running time and last activity, failure reasons in
words, long titles clamped."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from backend.models import NewTask, Owner, TaskStatus, utcnow
from boardpage import BoardDashboard, BoardPage
from browsing import playwright_or_skip
from conftest import fake_task

playwright_api = playwright_or_skip()
expect = playwright_api.expect
OWNER = Owner(pid=os.getpid(), host="test", instance="browser-attention")

# Records each `new Notification(...)` on <html data-notes> (readable without evaluating strings,
# which the page's CSP forbids) and makes the page look hidden, as in a background tab.
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  const calls = [];
  function Recorded(title, options) {
    calls.push({ title, body: options && options.body, tag: options && options.tag });
    document.documentElement.dataset.notes = JSON.stringify(calls);
    try { return new Real(title, options); } catch (err) { this.close = () => {}; }
  }
  Recorded.requestPermission = (...args) => Real.requestPermission(...args);
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  window.Notification = Recorded;
  Object.defineProperty(Document.prototype, "visibilityState", { get: () => "hidden" });
})();
"""


def notes(page) -> list[dict]:
    return json.loads(page.locator("html").get_attribute("data-notes") or "[]")


def test_finished_and_failed_tasks_toast_and_notify_when_opted_in(browser, agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    done_before = agent.client.post("/agent/tasks", json=fake_task("Done before the page", {"steps": []})).json()["id"]
    dashboard = BoardDashboard(tmp_path, {"alpha": agent})
    board = BoardPage(browser, dashboard.url, init_script=RECORD_NOTIFICATIONS, grant=["notifications"])
    try:
        page = board.page
        expect(page.locator(f".column[data-status='completed'] .card[data-id='{done_before}']")).to_be_visible(
            timeout=30000)
        toggle = page.locator("[data-role='notify']")
        expect(toggle).to_have_attribute("aria-pressed", "false")
        toggle.click()  # asks the browser's permission (granted here) and remembers the choice
        expect(toggle).to_have_attribute("aria-pressed", "true")

        ok = agent.client.post("/agent/tasks", json=fake_task("Lands fine", {"steps": []})).json()["id"]
        bad = agent.client.post("/agent/tasks", json=fake_task(
            "Gives up", {"result": "error_during_execution", "error": "no way", "steps": []})).json()["id"]
        toasts = page.locator("#toast .toast-item")
        expect(toasts.filter(has_text="“Lands fine” completed")).to_have_count(1, timeout=30000)
        failed = toasts.filter(has_text="“Gives up” failed: the coding agent reported an error")
        expect(failed).to_have_count(1, timeout=30000)
        # The task that was already finished when the page opened is no news.
        expect(toasts.filter(has_text="Done before the page")).to_have_count(0)
        got = notes(page)
        assert {n["tag"] for n in got} == {f"alpha/{ok}", f"alpha/{bad}"}, got
        assert any("Gives up" in n["body"] and "failed" in n["body"] for n in got), got

        failed.get_by_role("button", name="Open").click()  # the toast's action opens the drawer
        expect(page.locator("#drawer")).to_be_visible()
        assert f"task=alpha%2F{bad}" in page.url or f"task=alpha/{bad}" in page.url

        page.reload()  # the opt-in is remembered; a reload is a first load: nothing toasts
        page.wait_for_selector("body[data-board-ready='1']")
        expect(page.locator("[data-role='notify']")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#toast .toast-item")).to_have_count(0)
        assert board.errors == [], board.errors
    finally:
        board.close()
        dashboard.stop()


def test_without_opt_in_a_finished_task_only_toasts(browser, agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    dashboard = BoardDashboard(tmp_path, {"alpha": agent})
    board = BoardPage(browser, dashboard.url, init_script=RECORD_NOTIFICATIONS, grant=["notifications"])
    try:
        page = board.page
        agent.client.post("/agent/tasks", json=fake_task("Quietly done", {"steps": []})).raise_for_status()
        expect(page.locator("#toast .toast-item", has_text="“Quietly done” completed")).to_have_count(1, timeout=30000)
        assert notes(page) == []
    finally:
        board.close()
        dashboard.stop()


def finish(store, title: str, status: TaskStatus, **fields):
    task = store.create(NewTask(title=title))
    store.claim(OWNER, 60, task_id=task.id)
    return store.transition(task.id, status, **fields)


def test_totals_today_and_7_days_match_the_tasks_costs(browser, agent_factory, tmp_path):
    agent, other = agent_factory(), agent_factory()
    finish(agent.store, "Cheap", TaskStatus.completed, cost_usd=0.25, input_tokens=1000, output_tokens=500)
    finish(agent.store, "Dear", TaskStatus.failed, cost_usd=1.5, input_tokens=20000, output_tokens=2000,
           error_reason="tests_failed")
    finish(other.store, "Elsewhere", TaskStatus.completed, cost_usd=2.0, input_tokens=5000, output_tokens=500)
    dashboard = BoardDashboard(tmp_path, {"alpha": agent, "beta": other})
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        # 0.25 + 1.5 + 2.0 dollars, 1,500 + 22,000 + 5,500 tokens: all finished today.
        expect(page.locator("[data-role='total-today']")).to_have_text("Today $3.75 · 29k tokens")
        expect(page.locator("[data-role='total-week']")).to_have_text("7 days $3.75 · 29k tokens")
        expect(page.locator(".project[data-project='alpha'] [data-role='usage']")).to_have_text(
            "today $1.75 · 24k tokens · 7 days $1.75 · 24k tokens")
        # A task finishing now adds to both, through the stream.
        finish(other.store, "Later", TaskStatus.completed, cost_usd=0.5, input_tokens=900, output_tokens=100)
        expect(page.locator("[data-role='total-today']")).to_have_text("Today $4.25 · 30k tokens")
        assert board.errors == [], board.errors
    finally:
        board.close()
        dashboard.stop()


def test_cards_show_priority_running_time_failure_words_and_a_clamped_title(browser, agent_factory, tmp_path):
    agent = agent_factory()  # no dispatcher: the test puts each task where it wants it
    store = agent.store
    urgent = store.create(NewTask(title="Fix production", priority="urgent"))
    low = store.create(NewTask(title="Tidy up", priority="low"))
    running = store.create(NewTask(title="Runs a while"))
    store.claim(OWNER, 600, task_id=running.id)
    store.update(running.id, last_activity_at=utcnow() - timedelta(seconds=30))
    failed = finish(store, "Broke the tests", TaskStatus.failed, error_reason="tests_failed")
    long_title = "A very long title " + "that goes on and on " * 8 + "until the end"
    long = store.create(NewTask(title=long_title))
    dashboard = BoardDashboard(tmp_path, {"alpha": agent})
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        card = lambda task_id: page.locator(f".card[data-id='{task_id}']")  # noqa: E731
        expect(card(urgent.id).locator("[data-role='priority']")).to_have_text("urgent")
        expect(card(urgent.id).locator("[data-role='priority']")).to_have_class("priority priority-urgent")
        expect(card(low.id).locator("[data-role='priority']")).to_have_text("low")
        for text in page.locator(".card").all_inner_texts():  # nothing absent is written as a word
            assert "null" not in text and "undefined" not in text, text
        # Urgent first in the pending column.
        assert page.locator(".column[data-status='pending'] .card").first.get_attribute("data-id") == urgent.id

        clock = card(running.id).locator("[data-role='running']")
        expect(clock).to_contain_text("running ")
        expect(card(running.id).locator("[data-role='activity']")).to_contain_text("active ")
        board.requests.clear()
        shown = clock.text_content()
        expect(clock).not_to_have_text(shown, timeout=5000)  # it ticks…
        assert board.requests == []  # …on the page, without asking anything

        reason = card(failed.id).locator(".card-error")
        expect(reason).to_have_text("the tests failed")
        expect(reason).to_have_attribute("title", "tests_failed")

        title = card(long.id).locator(".card-title")
        expect(card(long.id)).to_have_attribute("title", long_title)  # the card's tooltip: the whole title
        assert title.evaluate("node => getComputedStyle(node).webkitLineClamp") == "2"
        assert title.evaluate("node => node.scrollHeight > node.clientHeight")  # cut, not grown
        card(long.id).click()
        expect(page.locator("#drawer-title")).to_have_text(long_title)  # whole when opened
        assert board.errors == [], board.errors
    finally:
        board.close()
        dashboard.stop()


def test_a_task_waiting_for_plan_review_or_review_toasts(browser, agent_factory, tmp_path):
    agent = agent_factory()  # no dispatcher: the test moves the task itself
    dashboard = BoardDashboard(tmp_path, {"alpha": agent})
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        task = agent.store.create(NewTask(title="Needs a look", needs_plan_review=True))
        expect(page.locator(f".column[data-status='pending'] .card[data-id='{task.id}']")).to_be_visible()
        agent.store.claim(OWNER, 60, task_id=task.id)  # a planning run ends in plan_review
        agent.store.transition(task.id, TaskStatus.plan_review)
        expect(page.locator(f".column[data-status='plan_review'] .card[data-id='{task.id}']")).to_be_visible()
        expect(page.locator("#toast .toast-item", has_text="“Needs a look” waits for plan review")).to_have_count(1)
        # Tested work waiting for a person (landing: review) is news too.
        work = agent.store.create(NewTask(title="Check my work"))
        agent.store.claim(OWNER, 60, task_id=work.id)
        agent.store.transition(work.id, TaskStatus.review)
        expect(page.locator(f".column[data-status='review'] .card[data-id='{work.id}']")).to_be_visible()
        expect(page.locator("#toast .toast-item", has_text="“Check my work” waits for review")).to_have_count(1)
        # Its next news replaces that toast: one per task, the newest.
        agent.store.transition(work.id, TaskStatus.pending)
        agent.store.claim(OWNER, 60, task_id=work.id)
        agent.store.transition(work.id, TaskStatus.completed)
        expect(page.locator("#toast .toast-item", has_text="“Check my work” completed")).to_have_count(1)
        expect(page.locator("#toast .toast-item", has_text="“Check my work”")).to_have_count(1)
        assert board.errors == [], board.errors
    finally:
        board.close()
        dashboard.stop()


def test_cost_finished_days_ago_counts_in_7_days_not_today(browser, agent_factory, tmp_path):
    agent = agent_factory()
    finish(agent.store, "Today", TaskStatus.completed, cost_usd=0.5, input_tokens=400, output_tokens=100)
    old = finish(agent.store, "Three days ago", TaskStatus.completed, cost_usd=2.0, input_tokens=1500,
                 output_tokens=500)
    agent.store.update(old.id, finished_at=utcnow() - timedelta(days=3))
    dashboard = BoardDashboard(tmp_path, {"alpha": agent})
    board = BoardPage(browser, dashboard.url)
    try:
        page = board.page
        expect(page.locator("[data-role='total-today']")).to_have_text("Today $0.5000 · 500 tokens")
        expect(page.locator("[data-role='total-week']")).to_have_text("7 days $2.50 · 2.5k tokens")
        assert board.errors == [], board.errors
    finally:
        board.close()
        dashboard.stop()
