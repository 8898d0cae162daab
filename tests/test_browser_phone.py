"""The board on a phone (390x844) and a tablet (768x1024) in Chromium (issue #10, item 3):
nothing wider than the screen, everything in the top bar tappable, the board with most of the
height, swipeable columns with a picker, the new-task form's Create button in reach, the drawer
full-screen on a phone."""

from __future__ import annotations

import pytest

from board_world import Board, open_page, wait_ready
from browsing import playwright_or_skip

playwright_api = playwright_or_skip()
expect = playwright_api.expect

PHONE = (390, 844)
TABLET = (768, 1024)
TOP_BAR = ["#new-task-button", "#bulk-button", "#search", "#project-filter"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("phone"), agent=False)
    board.first = board.create("A title long enough to need more than one line on a narrow phone screen")
    for i in range(4):
        board.create(f"Pending {i}")
    yield board
    board.close()


@pytest.fixture
def sized(browser, world):
    opened = []

    def open_at(size: tuple[int, int]):
        context, tab = open_page(browser, world.url, width=size[0], height=size[1], is_mobile=True, has_touch=True)
        opened.append((context, tab))
        tab.goto(world.url)
        wait_ready(tab)
        expect(tab.locator(".card")).to_have_count(5)
        return tab

    yield open_at
    for context, tab in opened:
        assert tab.errors == [], tab.errors
        context.close()


def hit(page, selector: str) -> bool:
    """Whether a tap at the centre of the element lands on it (not on something covering it)."""
    return page.locator(selector).evaluate(
        "node => { const r = node.getBoundingClientRect();"
        " const at = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);"
        " return r.width > 0 && r.right <= innerWidth && (at === node || node.contains(at)); }")


def test_on_a_phone_nothing_is_wider_than_the_screen_and_the_top_bar_is_tappable(sized):
    page = sized(PHONE)
    assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
    for selector in TOP_BAR:
        assert hit(page, selector), selector
    page.locator("#new-task-button").tap()
    expect(page.locator("#new-task-dialog")).to_be_visible()


@pytest.mark.parametrize("size", [PHONE, TABLET], ids=["phone", "tablet"])
def test_the_board_gets_most_of_the_height_and_the_projects_fold_into_a_summary(sized, size):
    page = sized(size)
    board = page.locator("#board").bounding_box()
    assert board["height"] >= 0.5 * size[1], board
    box = page.locator("#projects-box")
    expect(box).not_to_have_attribute("open", "")
    summary = page.locator("#projects-summary")
    expect(summary).to_have_text("Projects: 1")
    summary.tap()  # one tap shows the projects with their controls
    expect(page.locator(".project[data-project='p']")).to_be_visible()


def test_on_a_phone_one_column_fills_the_width_and_the_picker_scrolls_to_a_column(sized):
    page = sized(PHONE)
    pending = page.locator(".column[data-status='pending']").bounding_box()
    assert pending["width"] >= 0.85 * PHONE[0]
    cancelled = page.locator(".column[data-status='cancelled']")
    assert cancelled.bounding_box()["x"] >= PHONE[0]  # off to the right: the board swipes
    picker = page.locator("#column-picker")
    expect(picker).to_be_visible()
    # Named with its count ("Cancelled 0"), so found by its column.
    picker.locator("[data-status='cancelled']").tap()
    page.wait_for_function("() => { const r = document.querySelector(\".column[data-status='cancelled']\")"
                           ".getBoundingClientRect(); return r.x >= 0 && r.right <= innerWidth; }")
    expect(picker.locator("[data-status='cancelled']")).to_have_attribute("aria-current", "true")
    assert page.evaluate("() => getComputedStyle(document.getElementById('board')).scrollSnapType").startswith("x")
    assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")


def test_on_a_tablet_two_columns_are_side_by_side(sized):
    page = sized(TABLET)
    first = page.locator(".column[data-status='pending']").bounding_box()
    second = page.locator(".column[data-status='blocked']").bounding_box()
    assert second["x"] >= first["x"] + first["width"] and second["x"] + second["width"] <= TABLET[0]
    expect(page.locator("#column-picker")).to_be_visible()
    assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
    for selector in TOP_BAR:
        assert hit(page, selector), selector


def test_the_new_task_forms_create_button_is_in_reach_on_a_phone(sized):
    page = sized(PHONE)
    page.locator("#new-task-button").tap()
    dialog = page.locator("#new-task-dialog")
    expect(dialog).to_be_visible()
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE[0] and box["y"] + box["height"] <= PHONE[1]
    create = dialog.get_by_role("button", name="Create", exact=True)
    create.scroll_into_view_if_needed()
    assert hit(page, "#new-task-form button[type='submit']")


def test_the_drawer_is_full_screen_on_a_phone(sized, world):
    page = sized(PHONE)
    page.locator(f".card[data-id='{world.first}']").tap()
    drawer = page.locator("#drawer")
    expect(drawer).to_be_visible()
    box = drawer.bounding_box()
    assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, PHONE[0], PHONE[1])
    assert hit(page, "#drawer-close")
    page.locator("#drawer-close").tap()
    expect(drawer).to_be_hidden()



def test_the_drawers_details_wrap_instead_of_running_off_a_phone(browser, tmp_path):
    # A commit sha, a branch or a model name has no spaces: it must wrap, not widen the details.
    board = Board(tmp_path, agent=False)
    try:
        task_id = board.create("Unbroken values", model="m" * 120)
        context, page = open_page(browser, board.url, width=PHONE[0], height=PHONE[1], is_mobile=True, has_touch=True)
        page.goto(board.url)
        wait_ready(page)
        page.locator(f".card[data-id='{task_id}']").tap()
        model = page.locator("#drawer-meta dd[data-field='model']")
        expect(model).to_contain_text("m" * 40)
        box = model.bounding_box()
        assert box["x"] + box["width"] <= PHONE[0], box
        assert page.locator("#drawer").evaluate("node => node.scrollWidth <= node.clientWidth")
        assert page.errors == [], page.errors
        context.close()
    finally:
        board.close()
