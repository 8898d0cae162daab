"""The review loop on the board, end to end (issue #11, item 5): a real baton-agent (landing:
review) running the fake CLI behind a real dashboard, in Chromium. Changes requested with a
comment on a line reach the same session (the fake's `on_resume`), the new work comes back for
review, approving lands it; a rejected task is cancelled with its branch kept; a follow-up message
on a completed task starts another run."""

from __future__ import annotations

import json

import pytest

from board_world import Board
from browsing import playwright_or_skip
from conftest import fake_task
from support import git, wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("review-loop")
    board = Board(root, agent=True, agent_yaml="landing: review\n",
                  agent_env={"FAKE_CLAUDE_LOG": str(root / "fake-calls.jsonl")})
    yield board
    board.close()


def card(page, status: str, task_id: str):
    return page.locator(f".column[data-status='{status}'] .card[data-id='{task_id}']")


def test_changes_requested_on_a_line_come_back_for_review_then_land(page, world):
    scenario = {"steps": [{"write": "greeting.txt", "text": "hi\n"}, {"commit": "greet"}],
                "on_resume": [{"steps": [{"write": "greeting.txt", "text": "hello\n"}, {"commit": "greet better"}]}]}
    task_id = world.create("Greets", content=fake_task("Greets", scenario)["content"])
    expect(card(page, "review", task_id)).to_be_visible(timeout=60_000)
    first = world.task(task_id)["review_sha"]
    assert git(world.repo, "ls-remote", "origin", "main").split()[0] != first  # nothing landed yet
    card(page, "review", task_id).click()
    diff = page.locator("#drawer [data-role='diff']")
    line = diff.locator(".diff-line[data-new='1']")
    expect(line).to_contain_text("hi")
    line.click()
    page.get_by_role("textbox", name="Comment on greeting.txt line 1").fill("say hello instead")
    page.get_by_role("button", name="Add comment").click()
    page.locator("[data-role='request-changes']").click()
    # The person's words are in the transcript, apart from the agent's.
    human = page.locator("#transcript li[data-kind='human']")
    expect(human.first).to_contain_text("say hello instead", timeout=30_000)
    expect(human.first).to_contain_text("greeting.txt:1")
    # The agent's next turn resumed the same session with the comment, and came back for review.
    wait_for(lambda: (t := world.task(task_id)) and t["status"] == "review" and t["review_sha"] != first,
             timeout=60, what="the second round in review")
    second = world.task(task_id)["review_sha"]
    expect(page.locator("[data-role='review']")).to_have_attribute("data-sha", second, timeout=30_000)
    expect(diff.locator(".diff-line[data-new='1']")).to_contain_text("hello")
    calls = [c for c in world_calls(world) if task_id in (c.get("env") or {}).get("TASK_ID", "")]
    resumed = [c for c in calls if "--resume" in c["argv"]]
    assert resumed and "say hello instead" in resumed[0]["prompt"], calls
    page.locator("[data-role='approve']").click()
    expect(card(page, "completed", task_id)).to_be_visible(timeout=60_000)
    git(world.repo, "fetch", "-q", "origin")
    assert git(world.repo, "show", "origin/main:greeting.txt") == "hello\n"


def world_calls(world) -> list[dict]:
    """The fake CLI's invocations (FAKE_CLAUDE_LOG)."""
    return [json.loads(line) for line in (world.root / "fake-calls.jsonl").read_text().splitlines()]


def test_a_rejected_task_is_cancelled_and_keeps_its_branch(page, world):
    scenario = {"steps": [{"write": "unwanted.txt", "text": "no\n"}, {"commit": "unwanted"}]}
    task_id = world.create("Unwanted", content=fake_task("Unwanted", scenario)["content"])
    expect(card(page, "review", task_id)).to_be_visible(timeout=60_000)
    card(page, "review", task_id).click()
    expect(page.locator("#drawer [data-role='diff'] .diff-file-link")).to_contain_text("unwanted.txt")
    reject = page.locator("[data-role='review'] [data-role='reject']")
    reject.click()
    expect(reject).to_have_text("Reject: click again")  # a second click confirms
    reject.click()
    expect(card(page, "cancelled", task_id)).to_be_visible(timeout=30_000)
    assert git(world.repo, "branch", "--list", f"task/{task_id}").strip()
    expect(page.locator("#transcript li[data-kind='human'][data-subtype='rejected']")).to_have_count(1, timeout=30_000)


def test_a_follow_up_message_on_a_completed_task_starts_a_run(page, world):
    # A completed task's follow-up is a new session given the whole task again: the same steps
    # run on the landed main, so the line is there twice.
    scenario = {"steps": [{"append": "notes.txt", "text": "one\n"}, {"commit": "notes"}]}
    task_id = world.create("Notes", content=fake_task("Notes", scenario)["content"], landing="auto")
    expect(card(page, "completed", task_id)).to_be_visible(timeout=60_000)
    assert world.task(task_id)["runs"] == 1
    card(page, "completed", task_id).click()
    box = page.get_by_role("textbox", name="Message the agent")
    box.fill("Add a second line, please")
    page.locator("[data-role='followup-send']").click()
    expect(page.locator(".toast-item", has_text="started a new turn")).to_be_visible()
    expect(box).to_have_value("")
    wait_for(lambda: (t := world.task(task_id)) and t["status"] == "completed" and t["runs"] == 2,
             timeout=60, what="the second run to land")
    expect(page.locator("#transcript li[data-kind='human']")).to_contain_text("Add a second line, please",
                                                                              timeout=30_000)
    git(world.repo, "fetch", "-q", "origin")
    assert git(world.repo, "show", "origin/main:notes.txt") == "one\none\n"


def test_the_new_task_form_chooses_how_a_task_lands(page, world):
    """The project lands by review; a task created as "at once" lands without one."""
    page.get_by_role("button", name="New task", exact=True).click()
    dialog = page.locator("#new-task-dialog")
    dialog.locator("input[name='title']").fill("Straight in")
    dialog.locator("textarea[name='content']").fill(fake_task("Straight in", {"steps": [
        {"write": "straight.txt", "text": "in\n"}, {"commit": "straight in"}]})["content"])
    dialog.get_by_role("combobox", name="Landing").select_option("auto")
    dialog.get_by_role("button", name="Create", exact=True).click()
    done = page.locator(".column[data-status='completed'] .card", has_text="Straight in")
    expect(done).to_be_visible(timeout=60_000)
    task = world.task(done.get_attribute("data-id"))
    assert task["landing"] == "auto" and task["commit_sha"]
