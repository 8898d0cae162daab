"""Polish of the board from a walkthrough on a desktop, a tablet and a phone (issue #10): the drawer
opens at its top and its transcript follows new lines only at its end, toasts are one line, at
most three, dismissable and let taps through, statuses and times in words, the column picker
with counts, readable card details, and a search that finds nothing says so. Chromium against a
real baton-dashboard (a local project, or one served by a baton-agent running the fake CLI)."""

from __future__ import annotations

import re

import pytest

from board_world import Board, open_page, wait_ready
from browsing import playwright_or_skip
from conftest import fake_task

playwright_api = playwright_or_skip()
expect = playwright_api.expect

PHONE = (390, 844)
DESKTOP = (1440, 900)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("polish-local"), agent=False)
    for i in range(3):
        board.create(f"Waiting {i}", priority="urgent" if i == 0 else "medium")
    yield board
    board.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("polish-agent"), agent=True)
    yield board
    board.close()


@pytest.fixture
def opener(browser):
    opened = []

    def open_at(board, size, **options):
        context, tab = open_page(browser, board.url, width=size[0], height=size[1], **options)
        opened.append((context, tab))
        tab.goto(board.url)
        wait_ready(tab)
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
        " return r.width > 0 && r.bottom <= innerHeight && (at === node || node.contains(at)); }")


def scroll_top(page, selector: str) -> float:
    return page.locator(selector).evaluate("node => node.scrollTop")


def at_end(page, selector: str) -> bool:
    return page.locator(selector).evaluate("node => node.scrollHeight - node.scrollTop - node.clientHeight < 2")


def toasts(page, count: int, *, action: bool = True) -> None:
    """`count` toasts through the page's own toast() (js/dom.js), each with a long message."""
    page.evaluate("""async ([count, action]) => {
      const { toast } = await import("/js/dom.js");
      for (let i = 0; i < count; i++) {
        toast(`Pea: “Toast ${i} with a title long enough to wrap many times on a narrow phone screen` +
              ` and more words still” completed`, action ? { action: { label: "Open", run: () => {} }, timeout: 0 }
                                                       : { timeout: 0 });
      }
    }""", [count, action])


# ----- the drawer ---------------------------------------------------------------------------

def test_the_drawer_opens_at_its_top_and_the_transcript_follows_only_at_its_end(served, opener):
    page = opener(served, PHONE, is_mobile=True, has_touch=True)
    gates = [served.root / "polish-gate-1", served.root / "polish-gate-2"]
    title = "Talks a lot"
    scenario = {"steps": [{"tick": 40, "every": 0.01}, {"wait_for": str(gates[0]), "seconds": 120},
                          {"tick": 5, "every": 0.01}, {"wait_for": str(gates[1]), "seconds": 120}]}
    task_id = served.create(title, content=fake_task(title, scenario)["content"])
    try:
        page.locator("#column-picker [data-status='in_progress']").tap()
        card = page.locator(f".column[data-status='in_progress'] .card[data-id='{task_id}']")
        expect(card).to_be_visible(timeout=30_000)
        card.tap()
        lines = page.locator("#transcript li[data-kind='assistant_text']")
        expect(lines).to_have_count(40, timeout=30_000)
        # Opened at its top: the title and × in view; the transcript's own box shows its newest lines.
        assert scroll_top(page, "#drawer") == 0
        assert hit(page, "#drawer-close")
        assert page.locator("#transcript").evaluate("node => node.scrollHeight > node.clientHeight")
        assert at_end(page, "#transcript")
        # Status in words (item 3), and a Duration that ticks while the task runs (item 5).
        expect(page.locator("#drawer-meta dd[data-field='status']")).to_have_text("In progress")
        duration = page.locator("#drawer-meta dd[data-field='duration']")
        before = duration.text_content()
        page.wait_for_function("([node, before]) => node.textContent !== before",
                               arg=[duration.element_handle(), before], timeout=10_000)

        # The person scrolls up to read: new lines neither move the transcript nor the drawer.
        page.locator("#transcript").evaluate("node => { node.scrollTop = 0; }")
        gates[0].write_text("")
        expect(lines).to_have_count(45, timeout=30_000)
        assert scroll_top(page, "#transcript") == 0
        assert scroll_top(page, "#drawer") == 0

        # Back at the end, it follows again.
        page.locator("#transcript").evaluate("node => { node.scrollTop = node.scrollHeight; }")
        gates[1].write_text("")
        expect(page.locator("#transcript li[data-kind='result']")).to_have_count(1, timeout=30_000)
        page.wait_for_function("node => node.scrollHeight - node.scrollTop - node.clientHeight < 2",
                               arg=page.locator("#transcript").element_handle(), timeout=10_000)

        # Scrolled down to the end of the drawer, its head (and ×) is still there.
        page.locator("#drawer").evaluate("node => { node.scrollTop = node.scrollHeight; }")
        assert scroll_top(page, "#drawer") > 0
        assert hit(page, "#drawer-close")
        page.locator("#drawer-close").tap()
        expect(page.locator("#drawer")).to_be_hidden()
    finally:
        for gate in gates:
            gate.write_text("")


# ----- toasts ---------------------------------------------------------------------------------

def test_on_a_phone_toasts_are_full_width_one_line_at_most_three_and_dismissable(local, opener):
    page = opener(local, PHONE, is_mobile=True, has_touch=True)
    toasts(page, 5)
    items = page.locator("#toast .toast-item")
    expect(items).to_have_count(3)  # the newest three: older ones are replaced
    expect(items.first).to_contain_text("Toast 2")
    for i in range(3):
        box = items.nth(i).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE[0] and box["width"] >= PHONE[0] - 24, box
        text = items.nth(i).locator(".toast-text")
        # One line, clipped with an ellipsis; the whole message is in its tooltip.
        assert text.evaluate("node => node.scrollWidth > node.clientWidth"
                             " && getComputedStyle(node).textOverflow === 'ellipsis'"
                             " && node.getBoundingClientRect().height < 2 * parseFloat(getComputedStyle(node).lineHeight)")
        assert "Toast" in text.get_attribute("title")
    # Between two toasts a tap reaches the board, not the stack.
    first, second = items.nth(0).bounding_box(), items.nth(1).bounding_box()
    gap_y = (first["y"] + first["height"] + second["y"]) / 2
    assert second["y"] > first["y"] + first["height"]
    assert page.evaluate("([x, y]) => !document.getElementById('toast').contains(document.elementFromPoint(x, y))",
                         [PHONE[0] / 2, gap_y])
    items.first.get_by_role("button", name="Dismiss").tap()
    expect(items).to_have_count(2)


def test_on_a_desktop_toasts_have_one_sensible_width(local, opener):
    page = opener(local, DESKTOP)
    page.evaluate("async () => { const { toast } = await import('/js/dom.js');"
                  " toast('Short', { timeout: 0 }); toast('A somewhat longer message than that', { timeout: 0 }); }")
    toasts(page, 1)
    items = page.locator("#toast .toast-item")
    expect(items).to_have_count(3)
    widths = {round(items.nth(i).bounding_box()["width"]) for i in range(3)}
    assert len(widths) == 1 and widths.pop() <= 480, widths


def test_the_created_toast_names_the_title(local, opener):
    page = opener(local, DESKTOP)
    page.locator("#new-task-button").click()
    dialog = page.locator("#new-task-dialog")
    dialog.locator("input[name='title']").fill("Named in its toast")
    dialog.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("#toast .toast-item", has_text="Created “Named in its toast”")).to_have_count(1)


# ----- cards, picker, search --------------------------------------------------------------------

def test_pending_cards_say_how_long_they_have_been_waiting_in_readable_sizes(local, opener):
    page = opener(local, DESKTOP)
    ages = page.locator(".column[data-status='pending'] .card [data-role='age']")
    expect(ages.first).to_have_text(re.compile(r"^waiting \d+[smhd]$"))
    sizes = page.locator(".card .card-meta, .card .card-meta *, .card .priority").evaluate_all(
        "nodes => nodes.map(n => parseFloat(getComputedStyle(n).fontSize))")
    assert sizes and min(sizes) >= 12, sizes


def test_the_phone_column_picker_shows_counts_and_keeps_the_current_button_in_view(local, opener):
    page = opener(local, PHONE, is_mobile=True, has_touch=True)
    picker = page.locator("#column-picker")
    pending = picker.locator("[data-status='pending']")
    count = int(page.locator(".column[data-status='pending'] .count").text_content())
    expect(pending).to_have_text(f"Pending {count}")
    local.create("One more to count")
    expect(pending).to_have_text(f"Pending {count + 1}", timeout=15_000)  # follows the live count
    expect(picker.locator("[data-status='cancelled']")).to_have_text(re.compile(r"^Cancelled \d+$"))

    # Swiped to the last column: its button is current and scrolled into the picker's view.
    page.locator("#board").evaluate("node => node.scrollTo({ left: node.scrollWidth })")
    cancelled = picker.locator("[data-status='cancelled']")
    expect(cancelled).to_have_attribute("aria-current", "true")
    page.wait_for_function(
        "([button, picker]) => { const b = button.getBoundingClientRect(), p = picker.getBoundingClientRect();"
        " return b.left >= p.left && b.right <= p.right; }",
        arg=[cancelled.element_handle(), picker.element_handle()], timeout=10_000)

    # Tapped, then swiped back to the first column: only the current button looks current.
    cancelled.tap()
    page.locator("#board").evaluate("node => node.scrollTo({ left: 0 })")
    expect(pending).to_have_attribute("aria-current", "true")
    look = "node => { const s = getComputedStyle(node); return [s.borderColor, s.outlineStyle, s.backgroundColor]; }"
    plain = picker.locator("[data-status='completed']").evaluate(look)
    assert cancelled.evaluate(look) == plain
    assert pending.evaluate(look) != plain


def test_a_search_without_matches_says_so(local, opener):
    page = opener(local, DESKTOP)
    page.locator("#search").fill("zz-nothing-like-this")
    note = page.locator("#no-matches")
    expect(note).to_have_text("No tasks match “zz-nothing-like-this”")
    expect(page.locator(".column[data-status='pending']")).to_be_hidden()
    page.locator("#search").fill("Waiting")
    expect(note).to_be_hidden()
    expect(page.locator(".column[data-status='pending'] .card")).to_have_count(3)
