"""A project whose baton-agent runs a WORKFLOW.md on the board, in Chromium (issue 14): its sync line
says the workflow runs it ("WORKFLOW.md · Linear sync: ok · synced 20s ago"), "Sync now" asks the
agent to poll, an edit the agent refused shows as a warning (its message as text, in full in the
title), a tracker outage counts on a phone like any sync error, and axe finds nothing serious.
The world (stand-in Linear, the agent started with the guardrails flag, the dashboard) is
tests/test_workflow_board.py's."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from board_world import AXE, open_page, wait_ready
from browsing import playwright_or_skip
from support import wait_for
from test_workflow_board import INVALID, World, workflow_text

playwright_api = playwright_or_skip()
expect = playwright_api.expect

KOLKATA = ZoneInfo("Asia/Kolkata")
# A key the agent refuses, with markup in its name: the board must show it as text.
MARKED = INVALID.replace("max_turnz: 3", "max_turnz<b>bold</b>: 3")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("browser-workflow"))
    world.synced()
    yield world
    world.close()


@pytest.fixture(autouse=True)
def good_file(world):
    yield
    world.workflow.write_text(workflow_text(world.linear))
    wait_for(lambda: world.source()["workflow"]["state"] == "ok", timeout=30, what="the good WORKFLOW.md back")


def row_of(page):
    return page.locator(".project[data-project='w'] [data-role='source']")


def serious_violations(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def test_the_sync_line_says_the_workflow_runs_it(page, world):
    row = row_of(page)
    expect(row).to_have_attribute("data-state", "ok", timeout=30_000)
    expect(row).to_have_attribute("data-origin", "workflow")
    expect(row).to_have_attribute("data-workflow", "ok")
    expect(row.locator("[data-role='source-text']")).to_have_text(
        re.compile(r"^WORKFLOW\.md · Linear sync: ok · synced \d+[smhd] ago$"))
    expect(row.locator("[data-role='source-file']")).to_have_attribute("title", str(world.workflow))
    expect(row.locator("[data-role='workflow-warning']")).to_be_hidden()
    # Sync now: the agent polls its tracker (the workflow's own poll is an hour away).
    button = page.get_by_role("button", name="Sync now")
    expect(button).to_have_attribute("aria-label", "Sync now: read Linear for Workflow")
    before = world.source()["last_sync_at"]
    world.linear.admin.reset()
    button.click()
    wait_for(lambda: world.linear.admin.stats()["calls"] > 0, timeout=60, what="a poll of the stand-in")
    wait_for(lambda: world.source()["last_sync_at"] != before, timeout=60, what="the sync's health to move on")
    expect(row).to_have_attribute("data-syncing", "false", timeout=60_000)
    expect(row.locator("[data-role='source-status']")).to_have_text("Linear sync: ok")


def test_an_invalid_edit_is_a_warning_with_its_message_as_text(browser, world):
    context, page = open_page(browser, world.url, timezone_id="Asia/Kolkata", bypass_csp=True)
    try:
        page.goto(world.url)
        wait_ready(page)
        row = row_of(page)
        expect(row).to_have_attribute("data-state", "ok", timeout=30_000)
        assert serious_violations(page) == []
        world.workflow.write_text(workflow_text(world.linear, MARKED))
        source = wait_for(lambda: (s := world.source())["workflow"]["state"] == "invalid" and s, timeout=30,
                          what="the refused edit")
        message = source["workflow"]["error"]["message"]
        assert "max_turnz<b>bold</b>" in message, message
        loaded = datetime.fromisoformat(source["workflow"]["loaded_at"].replace("Z", "+00:00")).astimezone(KOLKATA)
        warning = row.locator("[data-role='workflow-warning']")
        expect(warning).to_be_visible(timeout=30_000)
        expect(row).to_have_attribute("data-workflow", "invalid")
        expect(warning).to_contain_text(
            f"WORKFLOW.md: invalid edit ignored — running the version loaded at {loaded:%H:%M} (")
        expect(warning).to_contain_text("max_turnz<b>bold</b>")  # as text: the markup in it is not markup
        assert row.locator("b").count() == 0
        expect(warning).to_have_attribute("title", message)
        # A warning (the board's warning colour), under the sync's line, which still says ok.
        assert warning.evaluate("e => getComputedStyle(e).color") == "rgb(245, 217, 168)"
        assert warning.bounding_box()["y"] > row.locator("[data-role='source-text']").bounding_box()["y"]
        expect(row).to_have_attribute("data-state", "ok")
        expect(row.locator("[data-role='source-status']")).to_have_text("Linear sync: ok")
        assert serious_violations(page) == []
        # The good file back: the warning goes.
        world.workflow.write_text(workflow_text(world.linear))
        expect(warning).to_be_hidden(timeout=30_000)
        expect(row).to_have_attribute("data-workflow", "ok")
        assert page.errors == [], page.errors
    finally:
        context.close()


def test_on_a_phone_a_tracker_outage_counts_as_a_sync_error(page, browser, world):
    row = row_of(page)
    expect(row).to_have_attribute("data-state", "ok", timeout=30_000)
    world.linear.admin.fail("outage", seconds=600)
    try:
        page.get_by_role("button", name="Sync now").click()
        expect(row).to_have_attribute("data-state", "error", timeout=90_000)
        expect(row.locator("[data-role='source-status']")).to_contain_text("Linear sync: error — ")
        expect(row.locator("[data-role='source-text']")).to_contain_text("WORKFLOW.md · Linear sync: error — ")
        context, tab = open_page(browser, world.url, width=390, height=844, has_touch=True)
        try:
            tab.goto(world.url)
            wait_ready(tab)
            expect(tab.locator("#projects-summary")).to_have_text("Projects: 1 · 1 sync error")
            tab.locator("#projects-summary").tap()
            for locator in (tab.get_by_role("button", name="Sync now"), tab.locator("[data-role='source-text']")):
                bounds = locator.bounding_box()
                assert bounds["x"] >= 0 and bounds["x"] + bounds["width"] <= 390, bounds
            assert tab.errors == [], tab.errors
        finally:
            context.close()
    finally:
        world.linear.admin.fail("none")
    page.get_by_role("button", name="Sync now").click()
    expect(row).to_have_attribute("data-state", "ok", timeout=90_000)
