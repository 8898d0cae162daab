"""The board shows the state of an agent the dashboard started and its log tail, as text."""

from __future__ import annotations

import signal

import pytest

from browsing import chromium, playwright_or_skip
from support import free_port
from test_dashboard_supervisor import Dashboard, agent_repo

playwright_api = playwright_or_skip()
expect = playwright_api.expect


@pytest.fixture
def dashboard(tmp_path):
    # An agent.yaml whose unknown key is markup: the agent refuses it (exit 2) and says so in its log.
    repo = agent_repo(tmp_path, "p", '"<img src=x onerror=alert(1)>": 1\n')
    dash = Dashboard(tmp_path, f"projects:\n  - id: p\n    path: {repo}\n    agent_url: http://127.0.0.1:{free_port()}\n"
                               f"    start: true\n")
    yield dash
    assert dash.stop(signal.SIGTERM) == 0


def test_a_failed_agent_is_explained_on_its_card_and_its_log_opens_as_text(dashboard):
    with chromium(playwright_api) as browser:
        page = browser.new_page()
        dialogs, errors = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(dashboard.url)
        state = page.locator('.project[data-project="p"] [data-role="agent-state"]')
        expect(state).to_have_attribute("data-state", "failed", timeout=30_000)
        expect(state).to_contain_text("agent failed (exit 2): configuration or start-up problem")
        page.locator('.project[data-project="p"] [data-role="agent-log"]').click()
        lines = page.locator('[data-role="agent-log-lines"]')
        expect(lines).to_contain_text("<img src=x onerror=alert(1)>: unknown key")
        expect(lines).to_contain_text("starting baton-agent")
        assert page.locator(".agent-log-dialog img").count() == 0
        assert dialogs == [] and errors == [], (dialogs, errors)
