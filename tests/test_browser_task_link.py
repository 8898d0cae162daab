"""A link to a task (?task=<project>/<id>) that names no task: the drawer says so instead of
"Loading…" for ever. A local project (the store on disk), in Chromium."""

from __future__ import annotations

import pytest

from board_world import Board, open_page, wait_ready
from browsing import playwright_or_skip

playwright_api = playwright_or_skip()
expect = playwright_api.expect


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("link"), agent=False)
    yield board
    board.close()


def test_a_link_to_a_task_that_does_not_exist_says_it_was_not_found(browser, world):
    context, page = open_page(browser, world.url)
    try:
        page.goto(f"{world.url}/?task=p/no-such-task")
        wait_ready(page)
        expect(page.locator("#drawer")).to_be_visible()
        expect(page.locator("#drawer-title")).to_have_text("Task not found")
        expect(page.locator("#drawer-content")).to_have_text("There is no task no-such-task in p.")
        # Only the refused requests (the reads' 404s, the transcript's): nothing failed in the page's code.
        assert not [e for e in page.errors if not e.startswith("Failed to load resource")], page.errors
    finally:
        context.close()
