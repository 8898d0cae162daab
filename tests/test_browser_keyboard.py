"""The board by keyboard (issue #10, item 6): a skip link, one tabbable card moved by the arrow
keys, the drawer as a modal dialog that keeps the focus, and Back/Forward following the drawer.
A local project (no agent): its tasks stay in the columns they are put in."""

from __future__ import annotations

import httpx
import pytest

from board_world import Board, open_page, wait_ready
from browsing import playwright_or_skip

playwright_api = playwright_or_skip()
expect = playwright_api.expect


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("keyboard"), agent=False)
    # Pending: three; cancelled (the last column): two; every column in between is empty.
    board.pending = [board.create(f"Pending {i}") for i in range(3)]
    for i in range(2):
        httpx.post(f"{board.url}/api/projects/p/tasks/{board.create(f'Cancelled {i}')}/cancel").raise_for_status()
    yield board
    board.close()


@pytest.fixture
def page(browser, world):
    context, tab = open_page(browser, world.url)
    tab.goto(world.url)
    wait_ready(tab)
    expect(tab.locator(".card")).to_have_count(5)
    yield tab
    assert tab.errors == [], tab.errors
    context.close()


def focused_key(page) -> str | None:
    return page.evaluate("() => document.activeElement && document.activeElement.dataset.key || null")


def search(page) -> str:
    # The page's own location: Playwright's page.url follows replaceState a moment later.
    return page.evaluate("() => decodeURIComponent(location.search)")


def key_of(task_id: str) -> str:
    return f"p/{task_id}"


def test_the_skip_link_is_the_first_tab_stop_and_lands_on_the_board(page, world):
    page.keyboard.press("Tab")
    skip = page.locator(".skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_have_text("Skip to the board")
    assert skip.bounding_box()["y"] >= 0  # shown while it has the focus
    page.keyboard.press("Enter")
    assert focused_key(page) == keys_in(page, "pending")[0]
    assert page.evaluate("() => location.hash") == ""


def keys_in(page, status: str) -> list[str]:
    """The column's cards in the order shown (same-second creations are ordered by id)."""
    return page.locator(f".column[data-status='{status}'] .card").evaluate_all("cards => cards.map(c => c.dataset.key)")


def test_one_card_is_tabbable_and_arrows_move_between_cards_and_columns(page, world):
    tabbable = page.locator(".card[tabindex='0']")
    expect(tabbable).to_have_count(1)
    pending, cancelled = keys_in(page, "pending"), keys_in(page, "cancelled")
    assert len(pending) == 3 and len(cancelled) == 2
    page.locator(f".card[data-key='{pending[0]}']").focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert focused_key(page) == pending[2]
    page.keyboard.press("ArrowDown")  # the last card of its column: stays
    assert focused_key(page) == pending[2]
    # Right: the next column with cards (the empty ones are passed), at the nearest index: of
    # the two cancelled cards, the last.
    page.keyboard.press("ArrowRight")
    assert focused_key(page) == cancelled[1]
    page.keyboard.press("ArrowUp")
    assert focused_key(page) == cancelled[0]
    # Right again: there is no column further right, so the focus stays.
    page.keyboard.press("ArrowRight")
    assert focused_key(page) == cancelled[0]
    page.keyboard.press("ArrowLeft")
    assert focused_key(page) == pending[0]
    page.keyboard.press("End")
    assert focused_key(page) == pending[2]
    page.keyboard.press("Home")
    assert focused_key(page) == pending[0]
    page.keyboard.press("ArrowRight")
    # The roving tabindex follows: the focused card is the board's only Tab stop.
    expect(tabbable).to_have_count(1)
    expect(tabbable).to_have_attribute("data-key", cancelled[0])
    # One Tab leaves the board (no Tab per card).
    page.keyboard.press("Tab")
    assert focused_key(page) is None


def test_the_open_drawer_is_a_dialog_that_keeps_the_focus_and_escape_returns_it(page, world):
    key = key_of(world.pending[1])
    page.locator(f".card[data-key='{key}']").focus()
    page.keyboard.press("Enter")
    drawer = page.locator("#drawer")
    expect(drawer).to_be_visible()
    expect(drawer).to_have_attribute("role", "dialog")
    expect(drawer).to_have_attribute("aria-modal", "true")
    expect(page.locator("#drawer-title")).to_have_text("Pending 1")
    inside = "() => document.getElementById('drawer').contains(document.activeElement)"
    for _ in range(12):  # more Tabs than the drawer has stops: the focus cycles inside
        page.keyboard.press("Tab")
        assert page.evaluate(inside)
    page.locator("#drawer-close").focus()
    page.keyboard.press("Shift+Tab")  # from the first stop back to the last one, still inside
    assert page.evaluate(inside)
    assert page.evaluate("() => document.activeElement.id") != "drawer-close"
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    assert focused_key(page) == key


def test_back_closes_the_drawer_and_forward_opens_it_again(page, world):
    task_id = world.pending[2]
    page.locator("#search").fill("Pending")  # the search stays in the URL without new entries
    assert "q=Pending" in search(page)
    length = page.evaluate("() => history.length")
    page.locator(f".card[data-key='{key_of(task_id)}']").click()
    expect(page.locator("#drawer")).to_be_visible()
    assert f"task=p/{task_id}" in search(page)
    assert page.evaluate("() => history.length") == length + 1  # opening a task is a history entry
    page.go_back()
    expect(page.locator("#drawer")).to_be_hidden()
    assert "task=" not in search(page) and "q=Pending" in search(page)
    assert focused_key(page) == key_of(task_id)
    page.go_forward()
    expect(page.locator("#drawer")).to_be_visible()
    expect(page.locator("#drawer-title")).to_have_text("Pending 2")
    # Closing it goes back to the entry before it: Back from there leaves nothing open.
    page.keyboard.press("Escape")
    expect(page.locator("#drawer")).to_be_hidden()
    page.wait_for_function("() => !location.search.includes('task=')")
    assert "q=Pending" in search(page)
