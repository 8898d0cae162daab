"""An automated accessibility check (issue #10, item 6): axe-core (vendored in tests/vendor/axe-core)
run in Chromium on the board with tasks, the open drawer, the new-task dialog and the phone
layout; no `serious` or `critical` violation may be found."""

from __future__ import annotations

import json

import httpx
import pytest

from board_world import AXE, Board, open_page, wait_ready
from browsing import playwright_or_skip
from conftest import fake_task
from support import wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("a11y"), agent=True)
    board.completed = board.create("Writes a file", content=fake_task("x", {"steps": [
        {"write": "a.txt", "text": "a\n"}]})["content"])
    board.failed = board.create("Gives up", content=fake_task("x", {"result": "error_during_execution",
                                                                    "error": "the model gave up", "steps": []})["content"],
                                priority="urgent")
    for task_id in (board.completed, board.failed):
        wait_for(lambda: board.task(task_id)["status"] in ("completed", "failed"), timeout=60, what="both runs to end")
    httpx.post(f"{board.agent_url}/agent/dispatcher/stop").raise_for_status()
    board.pending = board.create("Waits its turn", priority="high")
    yield board
    board.close()


def serious_violations(page) -> list[dict]:
    # The page's Content-Security-Policy forbids inline scripts: these contexts bypass it (test only).
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.fixture
def opened(browser, world):
    contexts = []

    def open_at(width: int = 1500, height: int = 950):
        context, tab = open_page(browser, world.url, width=width, height=height, bypass_csp=True)
        contexts.append((context, tab))
        tab.goto(world.url)
        wait_ready(tab)
        expect(tab.locator(f".card[data-id='{world.failed}']")).to_be_visible()
        expect(tab.locator(f".card[data-id='{world.pending}']")).to_be_visible()
        return tab

    yield open_at
    for context, tab in contexts:
        assert tab.errors == [], tab.errors
        context.close()


def report(violations: list[dict]) -> str:
    return json.dumps(violations, indent=1)


def test_the_board_with_tasks_has_no_serious_violations(opened):
    page = opened()
    violations = serious_violations(page)
    assert violations == [], report(violations)


def test_the_open_drawer_has_no_serious_violations(opened, world):
    page = opened()
    page.locator(f".card[data-id='{world.failed}']").click()
    expect(page.locator("#drawer-error")).to_contain_text("the model gave up")
    expect(page.locator("#transcript li[data-kind='result']")).to_be_visible()
    page.locator("#drawer-content-box summary").click()
    violations = serious_violations(page)
    assert violations == [], report(violations)


def test_the_new_task_dialog_has_no_serious_violations(opened):
    page = opened()
    page.get_by_role("button", name="New task", exact=True).click()
    expect(page.locator("#new-task-dialog")).to_be_visible()
    violations = serious_violations(page)
    assert violations == [], report(violations)


def test_the_phone_layout_has_no_serious_violations(opened, world):
    page = opened(390, 844)
    violations = serious_violations(page)
    assert violations == [], report(violations)
    page.locator("#projects-summary").click()  # the folded projects, opened, with their controls
    expect(page.locator(".project[data-project='p']")).to_be_visible()
    violations = serious_violations(page)
    assert violations == [], report(violations)
