"""The task drawer (issue #10, item 5): Cancel waits a few seconds behind an Undo toast before it
is sent; attempts are counted across reruns, with a separator per run in the transcript; the
task is read in full when the drawer opens. A baton-agent running the fake CLI, in Chromium."""

from __future__ import annotations

import httpx
import pytest

from board_world import Board, open_page, wait_ready
from browsing import playwright_or_skip
from conftest import fake_task
from support import wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect

UNDO_MS = 5000


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("drawer"), agent=True)
    yield board
    board.close()


@pytest.fixture
def page(browser, world):
    context, tab = open_page(browser, world.url)
    tab.cancels = []  # every cancel request the page sends
    tab.on("request", lambda r: tab.cancels.append(r.url) if r.method == "POST" and r.url.endswith("/cancel") else None)
    # A clock the test can move: the undo delay passes without the test sleeping through it.
    tab.clock.install()
    tab.goto(world.url)
    wait_ready(tab)
    yield tab
    assert tab.errors == [], tab.errors
    context.close()


def running(world, page, title: str) -> tuple[str, object]:
    """A task held in_progress by a gate file (touch it to let it end), opened in the drawer."""
    gate = world.root / f"gate-{title.replace(' ', '-')}"
    scenario = {"steps": [{"wait_for": str(gate), "seconds": 120}]}
    task_id = world.create(title, content=fake_task(title, scenario)["content"])
    card = page.locator(f".column[data-status='in_progress'] .card[data-id='{task_id}']")
    expect(card).to_be_visible(timeout=30_000)
    card.click()
    expect(page.locator("#drawer-title")).to_have_text(title)
    return task_id, gate


def test_undo_keeps_a_cancelled_task_running(page, world):
    task_id, gate = running(world, page, "Kept by undo")
    try:
        page.locator("#drawer-actions").get_by_role("button", name="Cancel", exact=True).click()
        toast = page.locator(".toast-item", has_text="Cancelling “Kept by undo”")
        expect(toast).to_be_visible()
        expect(page.locator("#drawer-actions [data-role='cancel']")).to_be_disabled()
        toast.get_by_role("button", name="Undo", exact=True).click()
        expect(toast).to_be_hidden()
        page.clock.run_for(UNDO_MS * 2)  # well past the moment the cancel would have gone
        expect(page.locator("#drawer-actions [data-role='cancel']")).to_be_enabled()
        assert world.task(task_id)["status"] == "in_progress"
        # Cancel again and let it go: exactly one cancel request reaches the server, this one
        # (an undone cancel that still went out would make two).
        page.locator("#drawer-actions [data-role='cancel']").click()
        page.clock.run_for(UNDO_MS + 100)
        wait_for(lambda: world.task(task_id)["status"] == "cancelled", timeout=30, what="the cancel to land")
        assert len(page.cancels) == 1, page.cancels
    finally:
        gate.write_text("")


def test_without_undo_the_cancel_is_sent_after_the_delay(page, world):
    task_id, gate = running(world, page, "Cancelled after the delay")
    try:
        page.locator("#drawer-actions [data-role='cancel']").click()
        expect(page.locator(".toast-item", has_text="Cancelling “Cancelled after the delay”")).to_be_visible()
        assert page.cancels == [] and world.task(task_id)["status"] == "in_progress"  # not yet
        page.clock.run_for(UNDO_MS + 100)
        wait_for(lambda: world.task(task_id)["status"] == "cancelled", timeout=30, what="the cancel to land")
        expect(page.locator(f".column[data-status='cancelled'] .card[data-id='{task_id}']")).to_be_visible(
            timeout=15_000)
        assert len(page.cancels) == 1
    finally:
        gate.write_text("")



def test_the_undo_toast_is_reachable_by_keyboard_from_the_open_drawer(page, world):
    task_id, gate = running(world, page, "Undone by keyboard")
    try:
        page.locator("#drawer-actions [data-role='cancel']").focus()
        page.keyboard.press("Enter")
        undo = page.locator(".toast-item", has_text="Cancelling “Undone by keyboard”").get_by_role("button", name="Undo")
        expect(undo).to_be_visible()
        # The drawer keeps the focus, but not away from the one button that stops the cancel.
        for _ in range(20):
            page.keyboard.press("Tab")
            if undo.evaluate("node => node === document.activeElement"):
                break
        expect(undo).to_be_focused()
        page.keyboard.press("Enter")
        expect(undo).to_be_hidden()
        page.clock.run_for(UNDO_MS * 2)
        assert page.cancels == [] and world.task(task_id)["status"] == "in_progress"
    finally:
        gate.write_text("")

def test_attempts_are_counted_across_reruns_with_a_separator_per_run(page, world):
    flag = world.root / "fail-once"
    title = "Runs twice"
    task_id = world.create(title, content=fake_task(title, {"fail_once": str(flag), "error": "first run fails",
                                                           "steps": []})["content"])
    failed = page.locator(f".column[data-status='failed'] .card[data-id='{task_id}']")
    expect(failed).to_be_visible(timeout=30_000)
    failed.click()
    attempts = page.locator("#drawer-meta dd[data-field='attempts']")
    expect(attempts).to_have_text("1")
    page.locator("#drawer-actions").get_by_role("button", name="Rerun", exact=True).click()
    expect(page.locator(f".column[data-status='completed'] .card[data-id='{task_id}']")).to_be_visible(timeout=30_000)
    expect(attempts).to_have_text("2 (1 since the last rerun)")  # runs; attempts restart at a rerun
    separators = page.locator("#transcript li[data-kind='attempt']")
    expect(separators).to_have_count(2, timeout=15_000)
    expect(separators.nth(0)).to_contain_text("Attempt 1 · ")
    expect(separators.nth(1)).to_contain_text("Attempt 2 · ")
    # Each run's lines follow its own separator: the failure under 1, the success under 2 (the
    # second run's lines may still be on their way when its card reaches Completed).
    expect(page.locator("#transcript li[data-kind='result']")).to_have_count(2, timeout=15_000)
    order = page.locator("#transcript li").evaluate_all("items => items.map(i => i.dataset.kind)")
    first, second = order.index("attempt"), order.index("attempt", order.index("attempt") + 1)
    assert "result" in order[first:second] and "result" in order[second:]


def test_the_drawer_reads_the_whole_task_when_it_opens(page, world):
    httpx.post(f"{world.agent_url}/agent/dispatcher/stop").raise_for_status()
    try:
        reads = []
        page.on("request", lambda r: reads.append(r.url) if r.url.endswith(".md") else None)
        task_id = world.create("Read in full", content="The whole description, only in the task itself.")
        page.locator(f".card[data-id='{task_id}']").click()
        expect(page.locator("#drawer-content")).to_have_text("The whole description, only in the task itself.")
        assert any(url.endswith(f"/api/projects/p/tasks/any/{task_id}.md") for url in reads), reads
        httpx.post(f"{world.url}/api/projects/p/tasks/{task_id}/cancel").raise_for_status()
    finally:
        httpx.post(f"{world.agent_url}/agent/dispatcher/start").raise_for_status()
