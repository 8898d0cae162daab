"""Review on the board (issue #11, item 5), in Chromium: the Review column and its cards, the
drawer's diff with comments on lines (pointer and keyboard), approve / request changes / reject.
Here over a project read from its store (tasks put in review by the test, quick); the whole loop
with a real agent and the fake CLI is in test_browser_review_loop.py."""

from __future__ import annotations

import os

import pytest

from backend.models import NewTask, Owner, TaskStatus
from backend.store import TaskStore
from board_world import AXE, Board, in_review, open_page, wait_ready
from browsing import playwright_or_skip
from support import git

playwright_api = playwright_or_skip()
expect = playwright_api.expect
OWNER = Owner(pid=os.getpid(), host="test", instance="browser-review")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("review"), agent=False)
    board.store = TaskStore(board.repo / "data" / "dev-tasks.json")
    yield board
    board.close()


def open_review(page, task_id: str):
    card = page.locator(f".column[data-status='review'] .card[data-id='{task_id}']")
    expect(card).to_be_visible(timeout=15_000)
    card.click()
    expect(page.locator("#drawer [data-role='review']")).to_be_visible()
    expect(page.locator("#drawer [data-role='diff']")).to_be_visible()
    return card


def test_a_task_in_review_has_its_column_and_a_card_that_says_it_waits(page, world):
    task_id, _ = in_review(world, "Waits for a look", {"w.txt": "w\n"})
    columns = page.locator(".column").evaluate_all("cols => cols.map(c => c.dataset.status)")
    assert columns == ["pending", "blocked", "plan_review", "in_progress", "review", "completed", "failed", "cancelled"]
    card = page.locator(f".column[data-status='review'] .card[data-id='{task_id}']")
    expect(card.locator("[data-role='waits-review']")).to_have_text("waits for review")
    expect(page.locator(".column[data-status='review'] h2")).to_contain_text("Review")
    # The column picker (phones) offers it too.
    expect(page.locator("#column-picker button[data-status='review']")).to_have_count(1)


def test_comment_on_a_line_and_request_changes(page, world):
    task_id, _ = in_review(world, "Needs changes", {"greet.py": "def greet():\n    return 'hi'\n"})
    open_review(page, task_id)
    diff = page.locator("#drawer [data-role='diff']")
    expect(diff.locator(".diff-file-link")).to_have_text("greet.py · added · +2 −0")
    line = diff.locator(".diff-line[data-new='2']")
    expect(line).to_contain_text("return 'hi'")
    line.click()
    box = page.get_by_role("textbox", name="Comment on greet.py line 2")
    expect(box).to_be_focused()
    box.fill("say hello, <b>not</b> hi")
    page.get_by_role("button", name="Add comment").click()
    expect(diff.locator("[data-role='pending-comment']")).to_contain_text("say hello, <b>not</b> hi")  # as text
    expect(page.locator("[data-role='comment-count']")).to_have_text("1 comment on lines")
    page.get_by_role("textbox", name="Message with the changes you request").fill("And add a test.")
    page.locator("[data-role='request-changes']").click()
    expect(page.locator(".toast-item", has_text="Changes requested")).to_be_visible()
    expect(page.locator(f".column[data-status='pending'] .card[data-id='{task_id}']")).to_be_visible(timeout=15_000)
    task = world.store.get(task_id)
    assert task.status is TaskStatus.pending
    [message] = task.inbox
    assert message.kind == "changes" and message.text == "And add a test."
    assert [(c.path, c.line, c.side, c.text) for c in message.comments] == [
        ("greet.py", 2, "new", "say hello, <b>not</b> hi")]


def test_the_diff_works_from_the_keyboard(page, world):
    task_id, _ = in_review(world, "By keyboard", {"k.txt": "one\ntwo\nthree\n"})
    open_review(page, task_id)
    lines = page.locator("#drawer .diff-line")
    expect(lines).to_have_count(3)
    # One Tab stop for all the lines; the arrows move between them.
    assert lines.evaluate_all("ls => ls.map(l => l.tabIndex)") == [0, -1, -1]
    lines.nth(0).focus()
    page.keyboard.press("ArrowDown")
    expect(lines.nth(1)).to_be_focused()
    page.keyboard.press("Enter")
    box = page.get_by_role("textbox", name="Comment on k.txt line 2")
    expect(box).to_be_focused()
    page.keyboard.press("Escape")  # closes the comment box, not the drawer
    expect(box).to_have_count(0)
    expect(lines.nth(1)).to_be_focused()
    expect(page.locator("#drawer")).to_be_visible()
    page.keyboard.press("Enter")
    page.keyboard.type("two is wrong")
    page.keyboard.press("Control+Enter")
    expect(page.locator("[data-role='pending-comment']")).to_contain_text("two is wrong")
    expect(lines.nth(1)).to_be_focused()


def test_approve_sends_the_commit_shown_and_reject_cancels(page, world):
    approved, sha = in_review(world, "Good as is", {"g.txt": "g\n"})
    open_review(page, approved)
    expect(page.locator("[data-role='review']")).to_have_attribute("data-sha", sha)
    page.locator("[data-role='approve']").click()
    expect(page.locator(".toast-item", has_text="Approved")).to_be_visible()
    expect(page.locator(f".column[data-status='pending'] .card[data-id='{approved}']")).to_be_visible(timeout=15_000)
    assert world.store.get(approved).approved_sha == sha

    rejected, _ = in_review(world, "Not wanted", {"n.txt": "n\n"})
    page.locator("#drawer-close").click()
    open_review(page, rejected)
    reject = page.locator("[data-role='review'] [data-role='reject']")
    reject.click()
    expect(reject).to_have_text("Reject: click again")  # a second click confirms
    reject.click()
    expect(page.locator(f".column[data-status='cancelled'] .card[data-id='{rejected}']")).to_be_visible(timeout=15_000)
    assert git(world.repo, "branch", "--list", f"task/{rejected}").strip()  # the branch is kept


def test_the_diff_of_a_finished_task_is_behind_a_toggle(page, world):
    never = world.store.create(NewTask(title="No branch"))
    world.store.claim(OWNER, 60, task_id=never.id)
    world.store.transition(never.id, TaskStatus.failed, branch=f"task/{never.id}", error_reason="agent_error",
                           error_message="gave up")
    page.locator(f".column[data-status='failed'] .card[data-id='{never.id}']").click()
    toggle = page.locator("[data-role='diff-toggle']")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(page.locator("[data-role='no-diff']")).to_contain_text("No diff to show")  # 404 no_diff: a quiet note
    # The browser logs every 404 answer itself; nothing else went wrong.
    page.errors[:] = [e for e in page.errors if "status of 404" not in e]


def test_the_diff_scrolls_inside_its_box_on_a_phone(browser, world):
    long_line = "x = '" + "a very long line of code " * 12 + "'\n"
    task_id, _ = in_review(world, "Long lines", {"long.py": long_line})
    context, tab = open_page(browser, world.url, width=390, height=844, is_mobile=True, has_touch=True)
    try:
        tab.goto(world.url)
        wait_ready(tab)
        tab.locator("#column-picker button[data-status='review']").click()
        tab.locator(f".column[data-status='review'] .card[data-id='{task_id}']").click()
        body = tab.locator("#drawer .diff-body")
        expect(body).to_be_visible()
        sizes = tab.evaluate("""() => {
            const box = document.querySelector('#drawer .diff-body');
            const drawer = document.getElementById('drawer');
            return {page: document.documentElement.scrollWidth, drawer: drawer.scrollWidth,
                    drawerWidth: drawer.clientWidth, box: box.scrollWidth, boxWidth: box.clientWidth};
        }""")
        assert sizes["page"] <= 390 and sizes["drawer"] <= sizes["drawerWidth"], sizes  # nothing wider than the screen
        assert sizes["box"] > sizes["boxWidth"], sizes  # the long line scrolls inside the diff's own box
        assert tab.errors == [], tab.errors
    finally:
        context.close()


def test_the_drawer_in_review_has_no_serious_accessibility_violations(browser, world):
    task_id, _ = in_review(world, "Accessible", {"acc.txt": "one\ntwo\n"})
    # bypass_csp: the page's Content-Security-Policy forbids the inline axe script (test only).
    context, tab = open_page(browser, world.url, bypass_csp=True)
    try:
        tab.goto(world.url)
        wait_ready(tab)
        open_review(tab, task_id)
        tab.locator("#drawer .diff-line").first.click()  # a comment box open too
        tab.add_script_tag(path=str(AXE))
        result = tab.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
        serious = [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
                   if v["impact"] in ("serious", "critical")]
        assert serious == [], serious
        assert tab.errors == [], tab.errors
    finally:
        context.close()
