"""Runtimes on the board, in a real browser (Playwright driving Debian's Chromium): the new-task
form offers the project's configured runtimes (from GET /agent/runtimes, through the dashboard)
and a model, cards show where a task runs or ran, and the drawer marks an estimated cost and
shows every runtime's events as text."""

from __future__ import annotations

import pytest

from backend.config import CodexConfig
from backend.dispatcher.events import EventWriter, TaskLogs
from backend.runtimes.base import EventKind, event
from browsing import playwright_or_skip
from conftest import fake_task
from support import wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect


@pytest.fixture
def world(agent_factory, dashboard_factory, fake_cli):
    """One agent with two runtimes: claude_code (the fake CLI, the default) and codex, whose CLI
    is missing (listed as unavailable; its tasks stay pending)."""
    agent = agent_factory(config=fake_cli.config(codex=CodexConfig(command="/nonexistent/bin/codex")), dispatch=True)
    agent.client.get("/agent/health").raise_for_status()  # its first health asks git: not in the budget
    client = dashboard_factory([{"id": "alpha", "name": "Alpha", "agent_url": agent.url,
                                 "agent_project_id": agent.settings.project_id}], timeout=5)
    return agent, str(client.base_url)


@pytest.fixture
def page(browser, world):
    _, url = world
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    tab = context.new_page()
    tab.dialogs = []  # any alert() would be an injected script running
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    tab.errors = []
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" and "422" not in m.text else None)
    tab.goto(url)
    tab.wait_for_selector("body[data-board-ready='1']")
    yield tab
    assert tab.errors == [] and tab.dialogs == [], (tab.errors, tab.dialogs)
    context.close()


def open_form(page):
    page.get_by_role("button", name="New task", exact=True).click()
    form = page.locator("#new-task-form")
    form.locator("select[name='project']").select_option("alpha")
    page.wait_for_selector("#new-task-form[data-runtimes-for='alpha']")
    return form


def task_titled(agent, title: str) -> dict | None:
    groups = agent.client.get("/agent/tasks").json()
    return next((t for tasks in groups.values() for t in tasks if t["title"] == title), None)


def test_the_form_offers_the_configured_runtimes_and_creates_with_the_choice(page, world):
    agent, _ = world
    form = open_form(page)
    options = form.locator("select[name='runtime'] option")
    expect(options).to_have_text(["project default (claude_code)", "claude_code", "codex (unavailable)"])
    assert form.locator("select[name='runtime'] option[value='codex']").get_attribute("data-available") == "false"

    form.locator("input[name='title']").fill("Runs on codex")
    form.locator("select[name='runtime']").select_option("codex")
    form.locator("input[name='model']").fill("gpt-5.5")
    form.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("#new-task-dialog")).to_be_hidden()
    created = wait_for(lambda: task_titled(agent, "Runs on codex"), what="the created task")
    assert (created["runtime"], created["model"], created["status"]) == ("codex", "gpt-5.5", "pending")
    # Not run yet: the card shows what it chose.
    expect(page.locator(f".card[data-id='{created['id']}'] [data-role='runtime']")).to_have_text("codex · gpt-5.5")

    # No choice: the project's defaults, sent as null.
    form = open_form(page)
    form.locator("input[name='title']").fill("Runs on the default")
    form.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("#new-task-dialog")).to_be_hidden()
    default = wait_for(lambda: task_titled(agent, "Runs on the default"), what="the default task")
    assert (default["runtime"], default["model"]) == (None, None)


def test_a_runtime_the_agent_refuses_is_explained_in_the_form(page, world):
    agent, _ = world
    form = open_form(page)
    # As if the page's list were out of date: the agent's 422 and its message reach the person.
    page.evaluate("""() => {
      const option = document.createElement("option");
      option.value = "opencode"; option.textContent = "opencode";
      document.querySelector("#new-task-form select[name='runtime']").append(option);
    }""")
    form.locator("input[name='title']").fill("Nowhere to run")
    form.locator("select[name='runtime']").select_option("opencode")
    form.get_by_role("button", name="Create", exact=True).click()
    expect(form.locator("[data-role='error']")).to_have_text(
        "runtime 'opencode' is not configured for this project; available: claude_code, codex")
    expect(page.locator("#new-task-dialog")).to_be_visible()
    assert task_titled(agent, "Nowhere to run") is None


def test_a_card_that_ran_shows_what_ran_it(page, world, fake_cli):
    agent, _ = world
    form = open_form(page)
    body = fake_task("Ran on claude", {"steps": [], "result": "success"})
    form.locator("input[name='title']").fill(body["title"])
    form.locator("textarea[name='content']").fill(body["content"])
    form.locator("select[name='runtime']").select_option("claude_code")
    form.locator("input[name='model']").fill("claude-sonnet-4-5")
    form.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("#new-task-dialog")).to_be_hidden()
    created = wait_for(lambda: task_titled(agent, "Ran on claude"), what="the created task")
    card = page.locator(f".column[data-status='completed'] .card[data-id='{created['id']}']")
    expect(card).to_be_visible(timeout=30000)
    # What ran it: the runtime, and the model the fake CLI reported.
    expect(card.locator("[data-role='runtime']")).to_have_text("claude_code · claude-fake-1")
    assert any("claude-sonnet-4-5" in call["argv"] for call in fake_cli.calls())
    card.click()
    expect(page.locator("#drawer-meta [data-field='runtime']")).to_have_text("claude_code · ran on claude_code")
    expect(page.locator("#drawer-meta [data-field='model']")).to_have_text(
        "claude-sonnet-4-5 · reported claude-fake-1")


def test_the_drawer_marks_an_estimated_cost_and_shows_every_runtimes_events_as_text(page, world):
    agent, _ = world
    task = agent.client.post("/agent/tasks", json={"title": "Estimated", "runtime": "codex", "model": "gpt-5.5"}).json()
    # As the dispatcher records a Codex run (codex is unavailable here, so it stays pending).
    agent.store.update(task["id"], agent_runtime="codex", agent_model="gpt-5.5", cost_usd=0.0123,
                       cost_estimated=True, input_tokens=1000, output_tokens=50)
    writer = EventWriter(TaskLogs(agent.settings.logs_dir, task["id"]).events)
    for ev in (
        event(EventKind.session_started, session_id="thr_1", model="gpt-5.5"),
        event(EventKind.system, subtype="retry", text="stream disconnected; retrying 1/5"),
        event(EventKind.tool_use, tool_name="command", tool_input="pytest -q", tool_use_id="c1"),
        event(EventKind.tool_result, tool_name="command", tool_use_id="c1", ok=True, text="3 passed"),
        event(EventKind.tool_use, tool_name="edit", tool_input="<img src=x onerror=alert(1)>", tool_use_id="e1"),
        event(EventKind.tool_result, tool_name="edit", tool_use_id="e1", ok=False, text="<b>patch rejected</b>"),
        event(EventKind.system, subtype="error", text="model overloaded"),
        event(EventKind.unparsed, text="{not json"),
        event(EventKind.baton, text="worktree ready"),
        event(EventKind.result, ok=True, text="Done.", num_turns=1, cost_usd=0.0123, cost_estimated=True),
    ):
        writer.append(ev)

    card = page.locator(f".card[data-id='{task['id']}']")
    expect(card.locator("[data-role='cost']")).to_have_text("≈ $0.0123")
    expect(card.locator("[data-role='runtime']")).to_have_text("codex · gpt-5.5")
    card.click()
    expect(page.locator("#drawer-meta [data-field='cost']")).to_have_text("≈ $0.0123 (estimated)")
    transcript = page.locator("#transcript")
    expect(transcript.locator("li")).to_have_count(10)
    # Each line: its kind, then the text (the kind is a label of its own).
    expect(transcript.locator("li[data-kind='system']")).to_contain_text(
        ["retry: stream disconnected; retrying 1/5", "error: model overloaded"])
    expect(transcript.locator("li[data-kind='tool_use']")).to_contain_text(
        ["command: pytest -q", "edit: <img src=x onerror=alert(1)>"])
    expect(transcript.locator("li[data-kind='tool_result']")).to_contain_text(
        ["command ok: 3 passed", "edit error: <b>patch rejected</b>"])
    expect(transcript.locator("li[data-kind='result']")).to_contain_text("Done. · 1 turns · ≈ $0.0123 (estimated)")
    expect(transcript.locator("li[data-kind='session_started']")).to_contain_text("session · thr_1 · gpt-5.5")
    assert page.locator("#drawer img, #drawer b").count() == 0  # text, never markup
