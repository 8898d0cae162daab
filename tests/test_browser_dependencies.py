"""Dependencies on the board (issue 12): a Blocked column whose cards say why (and only that: no
waiting time, no "after N"), an "after N" flag on pending cards, eight columns that fit a 1440 px
screen, and a drawer that lists what a task depends on and what depends on it, each a
link to that task, following a rerun live. A dashboard over a local project (its store on disk,
written here as an agent would), in Chromium."""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from backend.models import Owner, TaskStatus
from backend.store import TaskStore
from board_world import AXE, Board, open_page, wait_ready
from browsing import playwright_or_skip

playwright_api = playwright_or_skip()
expect = playwright_api.expect

OWNER = Owner(pid=os.getpid(), host="test", instance="browser-deps")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("deps"), agent=False)
    yield board
    board.close()


@pytest.fixture
def page(browser, world):
    # bypass_csp: the vendored axe-core is added as a script tag (test only).
    context, tab = open_page(browser, world.url, bypass_csp=True)
    tab.goto(world.url)
    wait_ready(tab)
    yield tab
    assert tab.errors == [], tab.errors
    context.close()


def chain(world: Board, prefix: str) -> tuple[str, str, str]:
    """Schema <- API <- Docs, created in one bulk by refs; the first one fails (as an agent's run
    would record it). Returns their ids."""
    created = httpx.post(f"{world.url}/api/projects/p/tasks/bulk", json={"tasks": [
        {"title": f"{prefix} schema", "ref": "schema"},
        {"title": f"{prefix} API", "ref": "api", "depends_on": ["schema"]},
        {"title": f"{prefix} docs", "depends_on": ["api", "schema"]},
    ]})
    assert created.status_code == 201, created.text
    first, second, third = (t["id"] for t in created.json()["tasks"])
    store = TaskStore(world.repo / "data" / "dev-tasks.json")
    assert store.claim(OWNER, 60, task_id=first) is not None
    store.transition(first, TaskStatus.failed, error_reason="agent_error", error_message="the model gave up")
    return first, second, third


def serious_violations(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def test_a_blocked_task_has_its_column_and_says_why(page, world):
    first, second, third = chain(world, "Column")
    columns = page.locator(".column").evaluate_all("cols => cols.map(c => c.dataset.status)")
    assert columns[:3] == ["pending", "blocked", "plan_review"]
    expect(page.locator(".column[data-status='blocked'] h2")).to_contain_text("Blocked")
    expect(page.locator("#column-picker button[data-status='blocked']")).to_have_count(1)

    card = page.locator(f".column[data-status='blocked'] .card[data-id='{second}']")
    expect(card.locator("[data-role='blocked-reason']")).to_have_text(
        f"blocked: “Column schema” ({first}) failed: the model gave up")
    assert "blocked: " in card.get_attribute("title")
    other = page.locator(f".column[data-status='blocked'] .card[data-id='{third}']")
    expect(other.locator("[data-role='blocked-reason']")).to_contain_text(f"“Column API” ({second}) is blocked")
    expect(page.locator(".column[data-status='blocked'] .count")).to_have_text("2")
    # The blocked line says what it waits for: no "waiting Ns", no "after N tasks" beside it.
    for blocked in (card, other):
        expect(blocked.locator("[data-role='depends']")).to_have_count(0)
        expect(blocked.locator("[data-tick]")).to_have_count(0)
        expect(blocked).not_to_contain_text("waiting")


def test_a_pending_task_says_how_many_it_runs_after(page, world):
    created = httpx.post(f"{world.url}/api/projects/p/tasks/bulk", json={"tasks": [
        {"title": "Pending base", "ref": "base"}, {"title": "Pending after", "depends_on": ["base"]}]})
    assert created.status_code == 201, created.text
    after = created.json()["tasks"][1]["id"]
    card = page.locator(f".column[data-status='pending'] .card[data-id='{after}']")
    expect(card.locator("[data-role='depends']")).to_have_text("after 1 task")
    expect(card.locator("[data-role='age']")).to_contain_text("waiting")


def test_the_eight_columns_fit_a_1440_px_screen(browser, world):
    context, page = open_page(browser, world.url, width=1440, height=900)
    try:
        page.goto(world.url)
        wait_ready(page)
        board = page.locator("#board")
        assert board.evaluate("n => n.scrollWidth <= n.clientWidth"), "the board scrolls sideways"
        cancelled = page.locator(".column[data-status='cancelled']").bounding_box()
        box = board.bounding_box()
        assert cancelled["x"] + cancelled["width"] <= box["x"] + box["width"]
        assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
        assert page.errors == [], page.errors
    finally:
        context.close()


def test_the_drawer_lists_dependencies_as_links_and_follows_a_rerun(page, world):
    first, second, third = chain(world, "Drawer")
    page.locator(f".column[data-status='blocked'] .card[data-id='{second}']").click()
    expect(page.locator("#drawer-title")).to_have_text("Drawer API")
    deps = page.locator("#drawer-deps")
    expect(deps.locator("[data-role='blocked-reason']")).to_contain_text(
        f"Blocked: “Drawer schema” ({first}) failed: the model gave up")
    needed = deps.locator(f"[data-role='dependencies'] li[data-task='{first}']")
    expect(needed.locator("a")).to_have_text("Drawer schema")
    expect(needed.locator("[data-role='task-status']")).to_have_text("Failed")
    expect(deps.locator(f"[data-role='dependents'] li[data-task='{third}'] [data-role='task-status']")).to_have_text(
        "Blocked")
    # A blocked task can be cancelled, not rerun (its dependency is what runs again).
    actions = page.locator("#drawer-actions")
    expect(actions.get_by_role("button", name="Cancel", exact=True)).to_be_visible()
    expect(actions.get_by_role("button", name="Rerun", exact=True)).to_have_count(0)
    violations = serious_violations(page)
    assert violations == [], json.dumps(violations, indent=1)

    # The link opens the dependency in the drawer, and the URL says so.
    needed.locator("a").click()
    expect(page.locator("#drawer-title")).to_have_text("Drawer schema")
    assert parse_qs(urlparse(page.url).query)["task"] == [f"p/{first}"]
    waiting = deps.locator(f"[data-role='dependents'] li[data-task='{second}']")
    expect(waiting.locator("[data-role='task-status']")).to_have_text("Blocked")

    # Its rerun unblocks what waits for it, live: the cards move and the drawer's list follows.
    actions.get_by_role("button", name="Rerun", exact=True).click()
    expect(page.locator(f".column[data-status='pending'] .card[data-id='{second}']")).to_be_visible()
    expect(page.locator(f".column[data-status='pending'] .card[data-id='{third}']")).to_be_visible()
    expect(page.locator(f".column[data-status='blocked'] .card[data-id='{second}']")).to_have_count(0)
    expect(page.locator(f".card[data-id='{second}'] [data-role='blocked-reason']")).to_have_count(0)
    expect(waiting.locator("[data-role='task-status']")).to_have_text("Pending")


def test_a_blocked_task_is_cancelled_from_the_drawer(page, world):
    page.clock.install()  # the cancel's undo delay passes without the test sleeping through it
    page.reload()
    wait_ready(page)
    _, second, third = chain(world, "Cancel")
    page.locator(f".column[data-status='blocked'] .card[data-id='{second}']").click()
    page.locator("#drawer-actions").get_by_role("button", name="Cancel", exact=True).click()
    page.clock.run_for(6000)
    expect(page.locator(f".column[data-status='cancelled'] .card[data-id='{second}']")).to_be_visible()
    expect(page.locator(f".card[data-id='{third}'] [data-role='blocked-reason']")).to_contain_text(
        f"“Cancel API” ({second}) was cancelled")
