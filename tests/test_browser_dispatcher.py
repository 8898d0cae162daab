"""Dispatcher controls on a project card (issue #10, item 5), in a real browser against a real
dashboard process and a real agent running the fake CLI: the buttons follow the dispatcher's
state, and Force stop asks first, naming how many tasks run."""

from __future__ import annotations

import pytest

from boardpage import BoardDashboard, BoardPage
from browsing import playwright_or_skip
from conftest import fake_task
from support import wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect


@pytest.fixture
def world(browser, agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config())  # dispatcher stopped at first
    dashboard = BoardDashboard(tmp_path, {"alpha": agent})
    board = BoardPage(browser, dashboard.url)
    yield agent, board
    errors = board.errors
    board.close()
    dashboard.stop()
    agent.client.post("/agent/dispatcher/stop", params={"force": "true"})
    assert errors == [], errors


def status_of(agent, task_id: str) -> str:
    groups = agent.client.get("/agent/tasks").json()
    return next(t["status"] for tasks in groups.values() for t in tasks if t["id"] == task_id)


def buttons(page):
    project = page.locator(".project[data-project='alpha']")
    return {name: project.get_by_role("button", name=name, exact=True)
            for name in ("Start", "Stop", "Restart", "Force stop")}


def test_the_buttons_follow_the_dispatchers_state(world):
    agent, board = world
    b = buttons(board.page)
    expect(b["Start"]).to_be_enabled()
    for name in ("Stop", "Restart", "Force stop"):
        expect(b[name]).to_be_disabled()
    b["Start"].click()
    expect(b["Start"]).to_be_disabled()
    expect(b["Stop"]).to_be_enabled()
    expect(b["Restart"]).to_be_enabled()
    expect(b["Force stop"]).to_be_enabled()
    # Stopped elsewhere (the agent's own API): the page learns it from the stream.
    agent.client.post("/agent/dispatcher/stop").raise_for_status()
    expect(b["Start"]).to_be_enabled()
    expect(b["Stop"]).to_be_disabled()
    expect(b["Restart"]).to_be_disabled()


def test_force_stop_asks_and_only_a_confirmation_stops(world, tmp_path):
    agent, board = world
    page = board.page
    gate = tmp_path / "gate"
    task_id = agent.client.post("/agent/tasks", json=fake_task(
        "Runs until told", {"steps": [{"wait_for": str(gate), "seconds": 120}]})).json()["id"]
    agent.client.post("/agent/dispatcher/start").raise_for_status()
    expect(page.locator(f".column[data-status='in_progress'] .card[data-id='{task_id}']")).to_be_visible(timeout=30000)
    b = buttons(page)
    dialog = page.locator("#force-stop-dialog")

    expect(b["Force stop"]).to_be_enabled()
    b["Force stop"].click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("1 running task will be interrupted")
    expect(dialog).to_contain_text("“Runs until told”")
    dialog.get_by_role("button", name="Cancel", exact=True).click()
    expect(dialog).to_be_hidden()
    # Cancelled: nothing was asked of the dispatcher.
    assert not [p for m, p, _ in board.requests if m == "POST" and "/dispatcher/" in p]
    assert agent.client.get("/agent/dispatcher").json()["state"] == "running"
    assert status_of(agent, task_id) == "in_progress"

    b["Force stop"].click()
    dialog.get_by_role("button", name="Force stop", exact=True).click()
    expect(dialog).to_be_hidden()
    wait_for(lambda: status_of(agent, task_id) == "pending", timeout=30,
             what="the running task back to pending")
    assert agent.client.get("/agent/dispatcher").json()["state"] == "stopped"
    expect(page.locator(f".column[data-status='pending'] .card[data-id='{task_id}']")).to_be_visible()
    expect(b["Start"]).to_be_enabled()
    # (Read after Playwright calls: the page's request events reach Python during them.)
    assert [p for m, p, _ in board.requests if m == "POST"] == ["/api/projects/alpha/dispatcher/stop?force=true"]
