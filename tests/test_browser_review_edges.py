"""Review on the board, the edges (issue #11, item 5): a double click sends one message; what a
person types in the diff survives the pull request changing under it; a pull request URL that is
not http(s) is no link; a revised plan is not shown, nor approvable, until it is read. Over a
project read from its store (tasks put where the test wants them), in Chromium."""

from __future__ import annotations

import os

import pytest

from backend.models import NewTask, Owner, PullRequestChecks, PullRequestInfo, TaskStatus
from backend.store import TaskStore
from board_world import Board, in_review
from browsing import playwright_or_skip
from support import wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect
OWNER = Owner(pid=os.getpid(), host="test", instance="browser-review-edges")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("review-edges"), agent=False)
    board.store = TaskStore(board.repo / "data" / "dev-tasks.json")
    yield board
    board.close()


def open_card(page, status: str, task_id: str) -> None:
    card = page.locator(f".column[data-status='{status}'] .card[data-id='{task_id}']")
    expect(card).to_be_visible(timeout=15_000)
    card.click()


def pull_request(url: str, checks: str = "pending") -> PullRequestInfo:
    return PullRequestInfo(number=7, url=url, head_sha="a" * 40,
                           checks=PullRequestChecks(state=checks, total=1, passed=int(checks == "success"),
                                                    pending=int(checks == "pending")))


def test_a_double_click_on_request_changes_sends_one_request(page, world):
    task_id, _ = in_review(world, "Said once", {"once.txt": "once\n"})
    open_card(page, "review", task_id)
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and r.url.endswith("/request-changes") else None)
    page.locator("[data-role='changes-text']").fill("only once, please")
    page.locator("[data-role='request-changes']").dblclick()
    expect(page.locator(".toast-item", has_text="Changes requested")).to_be_visible()
    # Both clicks' requests would have gone before the first answer came back.
    assert len(posts) == 1, posts
    task = world.store.get(task_id)
    assert [m.text for m in task.inbox] == ["only once, please"]


def test_what_a_person_typed_survives_closing_the_drawer_and_goes_with_a_reject(page, world):
    task_id, _ = in_review(world, "Half reviewed", {"half.txt": "one\ntwo\n"})
    open_card(page, "review", task_id)
    page.locator("[data-role='changes-text']").fill("not this way")
    page.locator("#drawer [data-role='diff'] .diff-line[data-new='2']").click()
    page.get_by_role("textbox", name="Comment on half.txt line 2").fill("why two?")
    page.get_by_role("button", name="Add comment").click()
    page.locator("#drawer-close").click()
    open_card(page, "review", task_id)
    expect(page.locator("[data-role='changes-text']")).to_have_value("not this way")
    expect(page.locator("[data-role='pending-comment']")).to_contain_text("why two?")
    expect(page.locator("[data-role='comment-count']")).to_have_text("1 comment on lines")
    reject = page.locator("[data-role='review'] [data-role='reject']")
    reject.click()
    reject.click()
    expect(page.locator(f".column[data-status='cancelled'] .card[data-id='{task_id}']")).to_be_visible(timeout=15_000)
    assert world.store.get(task_id).error_message == "work rejected in review: not this way"


def test_a_comment_being_typed_survives_the_pull_request_changing(page, world):
    url = "https://github.example/acme/widgets/pull/7"
    task_id, _ = in_review(world, "PR under review", {"pr.txt": "one\ntwo\n"}, pr=pull_request(url))
    open_card(page, "review", task_id)
    expect(page.locator("[data-role='pr-checks']")).to_contain_text("checks running")
    page.locator("#drawer .diff-line[data-new='2']").click()
    box = page.get_by_role("textbox", name="Comment on pr.txt line 2")
    expect(box).to_be_focused()
    page.keyboard.type("half a tho")
    world.store.revise(task_id, lambda task: (None, {"pr": pull_request(url, "success")}))
    expect(page.locator("[data-role='pr-checks']")).to_contain_text("checks passed", timeout=15_000)
    # The PR part was drawn again; the person typing goes on where they were.
    expect(box).to_be_focused()
    page.keyboard.type("ught")
    expect(box).to_have_value("half a thought")


def test_a_pull_request_url_that_is_not_http_is_no_link(page, world):
    task_id, _ = in_review(world, "Odd PR URL", {"odd.txt": "odd\n"}, pr=pull_request("javascript:alert(1)"))
    open_card(page, "review", task_id)
    expect(page.locator("#drawer [data-role='pr'] strong")).to_have_text("Pull request #7")
    expect(page.locator("#drawer [data-role='pr-link']")).to_have_count(0)
    expect(page.locator("#drawer a[href^='javascript']")).to_have_count(0)


def test_a_revised_plan_is_not_approvable_before_it_is_read(page, world):
    store = world.store
    task = store.create(NewTask(title="Planned twice"))
    store.claim(OWNER, 60, task_id=task.id)
    store.transition(task.id, TaskStatus.plan_review, plan="Plan A: the first idea")
    open_card(page, "plan_review", task.id)
    expect(page.get_by_label("The agent's plan")).to_have_text("Plan A: the first idea")
    # The drawer's next read of the task is held: what it shows meanwhile is what it knew.
    held = []
    page.route("**/api/projects/p/tasks/any/*.md", lambda route: held.append(route))
    store.transition(task.id, TaskStatus.pending)  # a revision: another planning run
    store.claim(OWNER, 60, task_id=task.id)
    store.transition(task.id, TaskStatus.plan_review, plan="Plan B: the revised one")
    # The board knows of the new run (its summary), not yet of its plan: plan A is not offered.
    expect(page.locator("#drawer").get_by_text("Loading the plan…")).to_be_visible(timeout=15_000)
    expect(page.locator("[data-role='approve-plan']")).to_have_count(0)
    # (Playwright hands the route over while the test talks to the page: evaluate lets it.)
    wait_for(lambda: page.evaluate("0") or held, timeout=15, what="the drawer's read of the revised task")
    for route in held:
        route.continue_()
    page.unroute("**/api/projects/p/tasks/any/*.md")
    expect(page.get_by_label("The agent's plan")).to_have_text("Plan B: the revised one")
    expect(page.locator("[data-role='approve-plan']")).to_be_visible()
