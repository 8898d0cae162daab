"""Pull requests on the board (issue #11, item 5): a task of a `landing: pr` project shows its PR
badge (number, state, checks) on its card and the PR's link, state and checks in the drawer;
Refresh reads it now; merged on GitHub, the task completes. (The watcher's polling is
tested with the agent: here it waits an hour, so what changes is Refresh's doing.) A real baton-agent running the fake
CLI, the GitHub stand-in (tests/fakes/github_standin.py), a real dashboard, Chromium."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from board_world import Board
from browsing import playwright_or_skip
from conftest import fake_task

sys.path.insert(0, str(Path(__file__).parent / "fakes"))
from github_standin import GitHubStandIn  # noqa: E402

playwright_api = playwright_or_skip()
expect = playwright_api.expect
TOKEN = "ghp_standin_token_for_the_board"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pr")
    # make_repo (in Board) puts the project's origin here; the stand-in reads branches from it.
    with GitHubStandIn(TOKEN, origin=root / "p-origin.git") as github:
        board = Board(root, agent=True, agent_env={"GITHUB_TOKEN": TOKEN},
                      agent_yaml=f"landing: pr\ngithub:\n  repo: acme/widgets\n  api_url: {github.url}\n"
                                 "  poll_seconds: 3600\n")  # only Refresh reads it again in a test
        board.github = github
        yield board
        board.close()


def test_a_pull_request_shows_its_state_and_checks_and_completes_when_merged(page, world):
    scenario = {"steps": [{"write": "feature.txt", "text": "new\n"}, {"commit": "feature"}]}
    task_id = world.create("Through a PR", content=fake_task("Through a PR", scenario)["content"])
    card = page.locator(f".column[data-status='review'] .card[data-id='{task_id}']")
    badge = card.locator("[data-role='pr']")
    expect(badge).to_have_text("#1 · open", timeout=60_000)
    expect(card.locator("[data-role='landing']")).to_have_count(0)  # the project's own landing: not repeated
    card.click()
    link = page.locator("[data-role='pr-link']")
    expect(link).to_have_text("Pull request #1")
    assert link.get_attribute("target") == "_blank" and "noopener" in link.get_attribute("rel")
    assert link.get_attribute("href").endswith("/acme/widgets/pull/1") or "/pull/1" in link.get_attribute("href")
    expect(page.locator("[data-role='pr-state']")).to_have_text("open")
    # It lands by being merged on GitHub: no Approve here, only changes or reject.
    expect(page.locator("[data-role='review'] [data-role='reject']")).to_be_visible()
    expect(page.locator("[data-role='review'] [data-role='approve']")).to_have_count(0)
    # CI passes on GitHub; Refresh reads it now (the watcher would only in an hour).
    head = world.task(task_id)["pr"]["head_sha"]
    world.github.set_checks(head, check_runs=[{"name": "ci", "status": "completed", "conclusion": "success"}])
    page.locator("[data-role='pr-refresh']").click()
    expect(badge).to_have_text("#1 · open · checks ✓", timeout=30_000)
    expect(page.locator("[data-role='pr-checks']")).to_contain_text("checks passed", timeout=30_000)
    # Merged on GitHub: read again, the task completes.
    world.github.merge(1)
    page.locator("[data-role='pr-refresh']").click()
    done = page.locator(f".column[data-status='completed'] .card[data-id='{task_id}']")
    expect(done).to_be_visible(timeout=60_000)
    expect(done.locator("[data-role='pr']")).to_contain_text("#1 · merged")
