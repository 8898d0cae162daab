"""Plan review on the board (issue #11, item 5): a task with needs_plan_review shows its plan (as
text) with Approve plan / Revise / Reject; a revision is another planning turn, approving runs
the work, rejecting cancels. A real baton-agent running the fake CLI, in Chromium."""

from __future__ import annotations

import pytest

from board_world import Board
from browsing import playwright_or_skip
from conftest import fake_task
from support import wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("plan-review"), agent=True)
    yield board
    board.close()


def planned(world, page, title: str) -> str:
    task_id = world.create(title, content=fake_task(title, {"steps": []})["content"], needs_plan_review=True)
    card = page.locator(f".column[data-status='plan_review'] .card[data-id='{task_id}']")
    expect(card).to_be_visible(timeout=60_000)
    expect(card.locator("[data-role='waits-plan']")).to_have_text("plan to approve")
    card.click()
    return task_id


def test_revise_then_approve_the_plan(page, world):
    task_id = planned(world, page, "Planned first")
    plan = world.task(task_id)["plan"]
    assert plan
    expect(page.get_by_label("The agent's plan")).to_have_text(plan)
    expect(page.locator("#drawer-actions [data-role='cancel']")).to_have_count(0)  # Reject is the one way out
    page.locator("[data-role='revise']").click()
    page.get_by_role("textbox", name="What to change in the plan").fill("Keep it to <one> step")
    page.locator("[data-role='send-revision']").click()
    expect(page.locator(".toast-item", has_text="Revision sent")).to_be_visible()
    # Another planning turn, then back to plan review.
    wait_for(lambda: (t := world.task(task_id)) and t["status"] == "plan_review" and t["runs"] == 2,
             timeout=60, what="the second planning turn")
    expect(page.locator("#transcript li[data-kind='human'][data-subtype='revise']")).to_contain_text(
        "Keep it to <one> step", timeout=30_000)
    expect(page.locator("[data-role='approve-plan']")).to_be_visible(timeout=30_000)
    page.locator("[data-role='approve-plan']").click()
    expect(page.locator(f".column[data-status='completed'] .card[data-id='{task_id}']")).to_be_visible(timeout=60_000)
    task = world.task(task_id)
    assert task["plan_approved"] is True
    # The approved plan stays readable, folded.
    expect(page.locator("#drawer details[data-role='plan'] summary")).to_have_text("Plan (approved)", timeout=30_000)


def test_reject_the_plan(page, world):
    task_id = planned(world, page, "Planned badly")
    reject = page.locator("[data-role='plan'] [data-role='reject']")
    reject.click()
    expect(reject).to_have_text("Reject: click again")  # a second click confirms
    reject.click()
    expect(page.locator(f".column[data-status='cancelled'] .card[data-id='{task_id}']")).to_be_visible(timeout=30_000)
    assert world.task(task_id)["status"] == "cancelled"
