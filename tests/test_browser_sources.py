"""The board of a project whose tasks come from Linear (issue 13, item 5), in Chromium: a card shows
its issue's key as a link to the issue, the project shows its sync's health, and "Sync now" reads
the tracker at once. Real processes: the stand-in Linear, a baton-agent running the fake CLI, and
baton-dashboard started by its CLI from a projects.yaml with a `source:` that polls only once an
hour (anything newer can only come from "Sync now")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from board_world import AXE, open_page, wait_ready
from browsing import playwright_or_skip
from conftest import FAKE_CLAUDE
from support import ROOT, AgentProcess, free_port, make_repo, wait_for, wait_for_http
from trackers_support import start_linear_standin

playwright_api = playwright_or_skip()
expect = playwright_api.expect

KOLKATA = ZoneInfo("Asia/Kolkata")
QUICK = "FAKE: " + json.dumps({"steps": []})


class World:
    def __init__(self, root) -> None:
        self.root = root
        self.linear = start_linear_standin(root / "linear")
        self.first = self.linear.admin.seed([{"title": "Fix the login button", "state": "Todo",
                                              "description": QUICK}])[0]
        self.repo = make_repo(root, "p")
        wrapper = root / "bin" / "claude"
        wrapper.parent.mkdir()
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CLAUDE} \"$@\"\n")
        wrapper.chmod(0o755)
        (self.repo / "agent.yaml").write_text(f"poll_interval_seconds: 0.5\ntest_command: ''\n"
                                              f"claude_code:\n  command: {wrapper}\n")
        port = free_port()
        self.agent = AgentProcess(["--port", str(port), "--project-dir", str(self.repo)], self.repo,
                                  root / "agent-logs", {"FAKE_CLAUDE_STATE": str(root / "fake-state")})
        self.agent_url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{self.agent_url}/agent/health", self.agent.proc)
        config = root / "config" / "projects.yaml"
        config.parent.mkdir()
        config.write_text(
            f"agent_timeout_seconds: 10\nprojects:\n  - id: p\n    name: Pea\n    agent_url: {self.agent_url}\n    color: '#4f8cff'\n"
            f"    source:\n      kind: linear\n      base_url: {self.linear.url}\n      api_key: ${self.linear.var}\n"
            f"      filter: {{team: {self.linear.team}}}\n      poll_seconds: 3600\n")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.dashboard = subprocess.Popen(
            [sys.executable, "-m", "backend.dashboard.cli", "--config", str(config), "--port", str(port)],
            cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT), **self.linear.environ},
            stdout=subprocess.DEVNULL, stderr=open(root / "dashboard.err", "w"))
        wait_for_http(f"{self.url}/api/health", self.dashboard)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/api/projects/p/source", timeout=30).json()

    def close(self) -> None:
        self.dashboard.send_signal(signal.SIGTERM)
        self.dashboard.wait(timeout=30)
        self.agent.stop()
        self.linear.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("sources"))
    yield world
    world.close()


def card_of(page, title: str):
    return page.locator(".card-box", has=page.locator(".card-title", has_text=title))


def test_a_card_shows_its_issue_key_linking_to_the_issue(page, world):
    box = card_of(page, "Fix the login button")
    expect(box).to_have_count(1, timeout=60_000)
    link = box.locator("a.issue-key")
    expect(link).to_have_text(world.first["identifier"])
    expect(link).to_have_attribute("href", world.first["url"])
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    # The link is beside the card button, not inside it; the card still opens the drawer.
    assert box.locator(".card a").count() == 0
    box.locator(".card").click()
    issue_row = page.locator("#drawer-meta [data-field='issue'] a.issue-key")
    expect(issue_row).to_have_text(world.first["identifier"])
    expect(issue_row).to_have_attribute("href", world.first["url"])
    # The site's key file was made beside the config folder (data/tool-key), readable by the owner alone.
    key = world.root / "data" / "tool-key"
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"


def test_the_project_shows_its_sources_health(browser, world):
    # The browser's clock in another zone than the machine's: the retry time must be the browser's.
    context, page = open_page(browser, world.url, timezone_id="Asia/Kolkata")
    page.goto(world.url)
    wait_ready(page)
    try:
        source_health_shown(browser, page, world)
        assert page.errors == [], page.errors
    finally:
        context.close()


def source_health_shown(browser, page, world):
    row = page.locator(".project[data-project='p'] [data-role='source']")
    expect(row).to_have_attribute("data-state", "ok", timeout=30_000)
    # Says it is the tracker sync's state (not the project's, whose badge is the agent's).
    expect(row.locator("[data-role='source-text']")).to_have_text(
        re.compile(r"^Linear sync: ok · synced \d+[smhd] ago$"))
    # A tracker that fails: the health says why, as a problem; "Sync now" once it is back: synced again.
    world.linear.admin.fail("outage", seconds=600)
    try:
        page.locator("[data-role='sync-now']").click()
        expect(row).to_have_attribute("data-state", "error", timeout=90_000)
        expect(row.locator("[data-role='source-status']")).to_contain_text("Linear sync: error — ")
        # Styled as a problem: the board's "bad" colour (--bad, #ef6b8e).
        assert row.locator("[data-role='source-text']").evaluate("e => getComputedStyle(e).color") == "rgb(239, 107, 142)"
        # When it tries again, in the browser's local time (its zone is UTC+05:30 here).
        health = world.health()
        retry = datetime.fromisoformat(health["next_sync_at"].replace("Z", "+00:00")).astimezone(KOLKATA)
        expect(row.locator("[data-role='source-retry']")).to_have_text(f"retrying at {retry:%H:%M:%S}")
        # On a phone the projects start folded: the outage shows in their summary line.
        context, tab = open_page(browser, world.url, width=390, height=844, has_touch=True)
        try:
            tab.goto(world.url)
            wait_ready(tab)
            expect(tab.locator("#projects-box")).not_to_have_attribute("open", "")
            expect(tab.locator("#projects-summary")).to_have_text("Projects: 1 · 1 sync error")
            assert tab.locator("#projects-summary").evaluate("e => getComputedStyle(e).color") == "rgb(239, 107, 142)"
        finally:
            context.close()
    finally:
        world.linear.admin.fail("none")
    page.locator("[data-role='sync-now']").click()
    expect(row).to_have_attribute("data-state", "ok", timeout=90_000)
    expect(row.locator("[data-role='source-retry']")).to_have_count(0)


def test_sync_now_brings_a_new_issue_without_waiting_for_the_poll(page, world):
    expect(card_of(page, "Fix the login button")).to_have_count(1, timeout=60_000)
    polled = world.health()["last_sync_at"]
    new = world.linear.admin.seed([{"title": "Add a dark mode", "state": "Todo", "description": QUICK}])[0]
    button = page.get_by_role("button", name="Sync now")
    expect(button).to_have_attribute("aria-label", "Sync now: read Linear for Pea")
    held = []
    page.route("**/api/projects/p/source/sync", lambda route: held.append(route))
    button.focus()
    page.keyboard.press("Enter")  # reachable and usable from the keyboard
    # (Playwright hands the route over while one of its calls runs: a cheap one per look.)
    wait_for(lambda: held or page.evaluate("() => false"), timeout=30, what="the sync request")
    expect(button).to_be_disabled()  # while the request runs (aria-disabled: it keeps the focus)
    assert page.evaluate("() => document.activeElement.dataset.role") == "sync-now"
    status = page.locator(".project[data-project='p'] [data-role='source-status']")
    expect(status).to_have_text("Linear sync: syncing…")
    # Announced politely when the state's words change; the ticking clock is outside the live region.
    expect(status).to_have_attribute("aria-live", "polite")
    assert page.locator("[aria-live] [data-tick]").count() == 0
    held[0].continue_()
    page.unroute("**/api/projects/p/source/sync")
    expect(button).to_be_enabled()
    expect(status).to_have_text("Linear sync: ok", timeout=60_000)  # once the health shows the sync ended
    box = card_of(page, "Add a dark mode")
    expect(box).to_have_count(1, timeout=120_000)
    expect(box.locator("a.issue-key")).to_have_text(new["identifier"])
    assert world.health()["last_sync_at"] != polled


def test_syncing_lasts_until_the_health_shows_the_sync_ended(page, world):
    row = page.locator(".project[data-project='p'] [data-role='source']")
    status = row.locator("[data-role='source-status']")
    expect(status).to_have_text("Linear sync: ok", timeout=60_000)
    # A request answered without reaching the dashboard: no sync runs, so the health does not move
    # and the line keeps saying "syncing…" after the request ended.
    page.route("**/api/projects/p/source/sync",
               lambda route: route.fulfill(status=202, content_type="application/json", body="{}"))
    button = page.get_by_role("button", name="Sync now")
    button.click()
    expect(button).to_be_enabled()
    expect(status).to_have_text("Linear sync: syncing…")
    expect(row).to_have_attribute("data-syncing", "true")
    page.unroute("**/api/projects/p/source/sync")
    before = world.health()["last_sync_at"]
    button.click()  # a real one: the health moves on, and the line with it
    expect(status).to_have_text("Linear sync: ok", timeout=60_000)
    expect(row).to_have_attribute("data-syncing", "false")
    assert world.health()["last_sync_at"] != before


def test_a_cancelled_tasks_reason_shows_on_its_card_and_in_the_drawer(page, world):
    reason = "ENG-4 moved to Done in Linear <b>not bold</b>"
    created = httpx.post(f"{world.agent_url}/agent/tasks", timeout=30, json={
        "title": "Migrate the orders", "content": "FAKE: " + json.dumps({"steps": [{"sleep": 120}]})})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    answer = httpx.post(f"{world.agent_url}/agent/tasks/{task_id}/cancel", json={"reason": reason}, timeout=60)
    assert answer.status_code in (200, 202), answer.text
    wait_for(lambda: httpx.get(f"{world.agent_url}/agent/tasks/any/{task_id}.md", timeout=30).json()["status"] == "cancelled",
             timeout=60, what="the task to be cancelled")
    card = page.locator(".column[data-status='cancelled'] .card", has_text="Migrate the orders")
    expect(card).to_have_count(1, timeout=60_000)
    line = card.locator("[data-role='cancel-reason']")
    expect(line).to_have_text(reason)  # as text: the markup in it is not markup
    assert line.locator("b").count() == 0
    assert reason in card.get_attribute("title")
    card.click()
    expect(page.locator("#drawer-meta [data-field='status']")).to_have_text("Cancelled")
    expect(page.locator("#drawer-meta [data-field='reason']")).to_have_text(reason)


def test_a_source_warning_shows_under_the_sync_line(page, world):
    # The row as the board draws it for a health with a warning (the runner's `warning`: a problem
    # the sync got past), drawn by the board's own module beside the real project's.
    page.evaluate("""async () => {
      const { sourceRow } = await import("/js/sources.js");
      const health = { kind: "jira", state: "ok", healthy: true, reason: null, warning: null,
                       last_sync_at: new Date().toISOString(), next_sync_at: null };
      const project = { id: "w", name: "Warned", source: health };
      const node = sourceRow(project);
      node.id = "warned";
      document.querySelector(".project").append(node);
      window.redrawWarned = (fields) => sourceRow({ ...project, source: { ...health, ...fields } });
    }""")
    row = page.locator("#warned")
    warning = row.locator("[data-role='source-warning']")
    expect(warning).to_be_hidden()
    page.evaluate("() => redrawWarned({ warning: 'could not move ABC-1 to <i>In Progress</i>' })")
    expect(warning).to_be_visible()
    expect(warning).to_have_text("warning: could not move ABC-1 to <i>In Progress</i>")
    assert warning.locator("i").count() == 0
    # Muted, on its own line under the sync's.
    assert warning.evaluate("e => getComputedStyle(e).color") == "rgb(154, 163, 178)"
    assert warning.bounding_box()["y"] > row.locator("[data-role='source-text']").bounding_box()["y"]
    expect(row.locator("[data-role='source-status']")).to_have_text("Jira sync: ok")
    page.evaluate("() => redrawWarned({ warning: null })")
    expect(warning).to_be_hidden()


def test_a_failed_sync_request_says_so(page, world):
    page.route("**/api/projects/p/source/sync", lambda route: route.abort())
    page.get_by_role("button", name="Sync now").click()
    expect(page.locator("#toast")).to_contain_text("Could not sync now: the dashboard server cannot be reached")
    expect(page.get_by_role("button", name="Sync now")).to_be_enabled()
    # The browser logs the request it could not make; that one is expected here.
    assert "Failed to load resource: net::ERR_FAILED" in page.errors
    page.errors.remove("Failed to load resource: net::ERR_FAILED")


def test_on_a_phone_the_key_the_health_and_sync_now_fit(browser, world):
    context, tab = open_page(browser, world.url, width=390, height=844, has_touch=True)
    try:
        tab.goto(world.url)
        wait_ready(tab)
        tab.locator("#projects-summary").tap()
        button = tab.locator("[data-role='sync-now']")
        expect(button).to_be_visible()
        for locator in (button, tab.locator("[data-role='source-text']")):
            bounds = locator.bounding_box()
            assert bounds["x"] >= 0 and bounds["x"] + bounds["width"] <= 390, bounds
        assert button.bounding_box()["height"] >= 40  # a finger's target
        tab.locator("#column-picker [data-status='completed']").tap()
        tab.wait_for_function("() => { const r = document.querySelector(\".column[data-status='completed']\")"
                              ".getBoundingClientRect(); return r.x >= 0 && r.right <= innerWidth; }")
        link = tab.locator(".column[data-status='completed'] a.issue-key").first
        expect(link).to_be_visible()
        bounds = link.bounding_box()
        assert bounds["x"] >= 0 and bounds["x"] + bounds["width"] <= 390, bounds
        assert tab.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
        assert tab.errors == [], tab.errors
    finally:
        context.close()


def test_the_board_with_issue_keys_has_no_serious_accessibility_violations(browser, world):
    context, tab = open_page(browser, world.url, bypass_csp=True)
    try:
        tab.goto(world.url)
        wait_ready(tab)
        expect(tab.locator("a.issue-key").first).to_be_visible(timeout=60_000)
        tab.add_script_tag(path=str(AXE))
        result = tab.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
        serious = [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:5]}
                   for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert serious == [], serious
    finally:
        context.close()
