"""The board's plans (issue #12) in Chromium against a real dashboard and a real agent running the
fake CLI: the list by state with invalid files, the editor (rename, add a task with a dependency,
remove a task and its edges, save with the revision), a cycle refused with the server's own
message, a stale revision said and reloaded, approve / back to draft / run, a running plan's task
statuses following the board's change stream with links to the drawer, the phone width, axe."""

from __future__ import annotations

import json

import httpx
import pytest

from board_world import AXE, Board, open_page, wait_ready
from browsing import playwright_or_skip
from conftest import fake_task

playwright_api = playwright_or_skip()
expect = playwright_api.expect

RUN_TIMEOUT = 90_000  # ms: tasks really run (fake CLI) and land on a loaded CI machine


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("plans"), agent=True)
    yield board
    board.close()


def make_plan(world: Board, title: str, tasks: list[dict], **body) -> dict:
    response = httpx.post(f"{world.url}/api/projects/p/plans", json={"plan": {"title": title, "tasks": tasks}, **body},
                          timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def plan_of(world: Board, plan_id: str) -> dict:
    response = httpx.get(f"{world.url}/api/projects/p/plans/{plan_id}", timeout=30)
    response.raise_for_status()
    return response.json()


def open_plan(page, world: Board, plan_id: str) -> None:
    page.goto(f"{world.url}/?plans=p/{plan_id}")
    wait_ready(page)
    expect(page.locator(f".plan-editor[data-plan='{plan_id}']")).to_be_visible()


def card(page, ref: str):
    """A draft's task card, found by the value of its ref input."""
    return page.locator(".plan-task").filter(has=page.locator(f"[data-role='task-ref'][value='{ref}']"))


def depend(page, index: int, on_ref: str, checked: bool = True) -> None:
    task = page.locator(".plan-task").nth(index)
    deps = task.locator("[data-role='task-deps']")
    if deps.get_attribute("open") is None:
        deps.locator("summary").click()
    box = deps.locator(f".plan-dep-choices label[data-ref='{on_ref}'] input")
    box.check() if checked else box.uncheck()


def expect_refused(page, status: int) -> None:
    """The browser logs an answer of `status` as a console error: that one was expected."""
    logged = f"status of {status}"
    assert any(logged in e for e in page.errors), page.errors
    page.errors[:] = [e for e in page.errors if logged not in e]


THREE = [{"ref": "a", "title": "First"}, {"ref": "b", "title": "Second", "depends_on": ["a"]},
         {"ref": "c", "title": "Third", "depends_on": ["a"]}]


def test_the_editor_edits_tasks_and_edges_and_saves_them_with_the_revision(page, world):
    plan = make_plan(world, "Edit me", THREE)
    open_plan(page, world, plan["id"])
    expect(page).to_have_url(f"{world.url}/?plans=p%2F{plan['id']}")
    tasks = page.locator(".plan-task")
    expect(tasks).to_have_count(3)
    expect(tasks.nth(1).locator("[data-role='after']")).to_have_text("Runs after: a")
    expect(page.locator("[data-role='plan-order'] li")).to_have_text(["First: a", "Then: b, c"])
    # Rename a: every task that runs after it follows the new name.
    tasks.nth(0).locator("[data-role='task-ref']").fill("base")
    tasks.nth(0).locator("[data-role='task-title']").fill("The base, renamed")
    expect(tasks.nth(1).locator("[data-role='after']")).to_have_text("Runs after: base")
    # Add a task that runs after b.
    page.locator("[data-role='add-task']").click()
    expect(tasks).to_have_count(4)
    expect(tasks.nth(3).locator("[data-role='task-title']")).to_be_focused()
    tasks.nth(3).locator("[data-role='task-title']").fill("Fourth, after b")
    tasks.nth(3).locator("[data-role='task-ref']").fill("d")
    tasks.nth(3).locator("select").first.select_option("docs")
    depend(page, 3, "b")
    expect(tasks.nth(3).locator("[data-role='after']")).to_have_text("Runs after: b")
    # Remove the edge base -> c, then the task c itself (d's choices no longer offer it).
    depend(page, 2, "base", checked=False)
    expect(tasks.nth(2).locator("[data-role='after']")).to_have_text("Runs first (after nothing)")
    tasks.nth(2).locator("[data-role='remove-task']").click()
    expect(tasks).to_have_count(3)
    expect(page.locator(".plan-task label[data-ref='c']")).to_have_count(0)
    expect(page.locator("[data-role='plan-order'] li")).to_have_text(["First: base", "Then: b", "Then: d"])
    page.locator("[data-role='save']").click()
    expect(page.locator(".plan-editor")).to_have_attribute("data-revision", "2")
    saved = plan_of(world, plan["id"])
    assert saved["revision"] == 2
    assert [(t["ref"], t["title"], t["depends_on"]) for t in saved["tasks"]] == [
        ("base", "The base, renamed", []), ("b", "Second", ["base"]), ("d", "Fourth, after b", ["b"])]
    assert saved["tasks"][2]["task_type"] == "docs"
    # Reloaded, the page comes back to the same plan as saved.
    page.reload()
    wait_ready(page)
    expect(page.locator(".plan-task [data-role='task-ref']")).to_have_count(3)
    assert [page.locator(".plan-task [data-role='task-ref']").nth(i).input_value() for i in range(3)] == ["base", "b", "d"]


def test_a_cycle_is_refused_with_the_servers_message_and_nothing_is_saved(page, world):
    plan = make_plan(world, "No cycles", THREE)
    open_plan(page, world, plan["id"])
    depend(page, 0, "b")  # a after b, and b after a
    expect(page.locator("[data-role='cycle']")).to_be_visible()
    page.locator("[data-role='save']").click()
    error = page.locator("[data-role='plan-error']")
    expect(error).to_be_visible()
    # What the server says about the very same edit is what the page shows.
    body = {"revision": 1, "plan": {"title": "No cycles", "summary": "", "tasks": [
        {**THREE[0], "depends_on": ["b"]}, THREE[1], THREE[2]]}}
    refused = httpx.put(f"{world.url}/api/projects/p/plans/{plan['id']}", json=body, timeout=30)
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    assert "cycle" in message
    expect(error).to_contain_text(message.split(": ", 1)[1])
    expect_refused(page, 422)
    unchanged = plan_of(world, plan["id"])
    assert unchanged["revision"] == 1 and unchanged["tasks"][0].get("depends_on", []) == []


def test_a_stale_revision_is_said_and_the_plan_can_be_reloaded(page, world):
    plan = make_plan(world, "Two editors", THREE)
    open_plan(page, world, plan["id"])
    page.locator("[data-role='plan-title']").fill("Mine")
    # Someone else saves first.
    theirs = {"revision": 1, "plan": {"title": "Theirs", "summary": "", "tasks": THREE}}
    httpx.put(f"{world.url}/api/projects/p/plans/{plan['id']}", json=theirs, timeout=30).raise_for_status()
    page.locator("[data-role='save']").click()
    error = page.locator("[data-role='plan-error']")
    expect(error).to_contain_text("changed elsewhere")
    expect_refused(page, 409)
    assert plan_of(world, plan["id"])["title"] == "Theirs"
    error.locator("[data-role='reload-plan']").click()
    expect(page.locator("[data-role='plan-title']")).to_have_value("Theirs")
    expect(page.locator(".plan-editor")).to_have_attribute("data-revision", "2")


def test_approve_back_to_draft_and_delete(page, world):
    plan = make_plan(world, "Decide", THREE)
    open_plan(page, world, plan["id"])
    page.locator("[data-role='plan-title']").fill("Decided")  # unsaved: Approve saves it first
    page.locator("[data-role='approve']").click()
    editor = page.locator(".plan-editor")
    expect(editor).to_have_attribute("data-state", "ready")
    expect(page.locator("h3[data-role='plan-title']")).to_have_text("Decided")
    assert plan_of(world, plan["id"])["state"] == "ready"
    page.locator("[data-role='reopen']").click()
    expect(editor).to_have_attribute("data-state", "draft")
    expect(page.locator("input[data-role='plan-title']")).to_have_value("Decided")
    delete = page.locator("[data-role='delete-plan']")
    delete.click()
    expect(delete).to_have_text("Delete: click again")
    delete.click()
    expect(page.locator(".plans-head")).to_be_visible()
    expect(page.locator(f".plan-item[data-plan='{plan['id']}']")).to_have_count(0)
    assert httpx.get(f"{world.url}/api/projects/p/plans/{plan['id']}", timeout=30).status_code == 404


def test_the_list_groups_plans_by_state_and_names_invalid_files(page, world):
    draft = make_plan(world, "A draft", THREE)
    ready = make_plan(world, "A ready one", THREE)
    httpx.post(f"{world.url}/api/projects/p/plans/{ready['id']}/approve", json={"revision": 1},
               timeout=30).raise_for_status()
    broken = world.repo / "plans" / "draft" / "broken.json"
    broken.write_text("{ not json")
    try:
        page.locator(".project[data-project='p'] [data-role='open-plans']").click()
        panel = page.locator("#workspace")
        expect(panel).to_be_visible()
        expect(page.locator("#workspace-title")).to_have_text("Plans · Pea")
        expect(page.locator(f".plans-state[data-state='draft'] .plan-item[data-plan='{draft['id']}']")).to_contain_text("A draft")
        expect(page.locator(f".plans-state[data-state='ready'] .plan-item[data-plan='{ready['id']}']")).to_contain_text(
            "3 tasks")
        invalid = page.locator("[data-role='invalid-plans']")
        expect(invalid).to_contain_text("broken.json")
        expect(page).to_have_url(f"{world.url}/?plans=p")
        broken.unlink()
        page.locator("[data-role='open-plans']").click()  # read again: no invalid files, nothing in their place
        expect(invalid).to_have_count(0)
        assert "null" not in page.locator("#workspace-body").inner_text()
        page.locator(f".plan-item[data-plan='{ready['id']}']").click()
        expect(page.locator(".plan-editor")).to_have_attribute("data-state", "ready")
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        expect(page.locator(".project[data-project='p'] [data-role='open-plans']")).to_be_focused()
        expect(page).to_have_url(f"{world.url}/")
    finally:
        broken.unlink(missing_ok=True)


def test_a_running_plan_follows_its_tasks_and_links_to_them(page, world):
    works = fake_task("x", {"steps": [{"write": "plan-a.txt", "text": "a\n"}]})["content"]
    fails = fake_task("x", {"result": "error_during_execution", "error": "the model gave up", "steps": []})["content"]
    plan = make_plan(world, "Runs", [
        {"ref": "a", "title": "Works", "content": works},
        {"ref": "b", "title": "Fails", "content": fails, "depends_on": ["a"]},
        {"ref": "c", "title": "Never starts", "depends_on": ["b"]}])
    open_plan(page, world, plan["id"])
    page.locator("[data-role='approve']").click()
    editor = page.locator(".plan-editor")
    expect(editor).to_have_attribute("data-state", "ready")
    page.locator("[data-role='run']").click()
    expect(editor).to_have_attribute("data-state", "executing")
    row = lambda ref: page.locator(f".plan-task.readonly[data-ref='{ref}']")  # noqa: E731
    expect(row("a")).to_have_attribute("data-status", "completed", timeout=RUN_TIMEOUT)
    expect(row("b")).to_have_attribute("data-status", "failed", timeout=RUN_TIMEOUT)
    expect(row("c")).to_have_attribute("data-status", "blocked", timeout=RUN_TIMEOUT)
    # The plan follows its tasks on the agent: failed, naming the task.
    expect(editor).to_have_attribute("data-state", "failed", timeout=RUN_TIMEOUT)
    expect(page.locator("[data-role='plan-reason']")).to_contain_text("b")
    # A task's link opens its drawer over the panel; closing it comes back to the link.
    link = row("a").locator("[data-role='task-link']")
    link.click()
    drawer = page.locator("#drawer")
    expect(drawer).to_be_visible()
    expect(page.locator("#drawer-title")).to_have_text("Works")
    task_id = plan_of(world, plan["id"])["task_ids"]["a"]
    assert f"task=p%2F{task_id}" in page.url and f"plans=p%2F{plan['id']}" in page.url
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    expect(page.locator("#workspace")).to_be_visible()
    expect(link).to_be_focused()


def test_the_plan_editor_fits_a_phone(browser, world):
    plan = make_plan(world, "On a phone " + "long-title-without-spaces" * 3, THREE)
    context, page = open_page(browser, world.url, width=390, height=844, is_mobile=True, has_touch=True)
    try:
        open_plan(page, world, plan["id"])
        box = page.locator("#workspace").bounding_box()
        assert (box["x"], box["width"]) == (0, 390)
        assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
        assert page.locator("#workspace-body").evaluate("node => node.scrollWidth <= node.clientWidth")
        approve = page.locator("[data-role='approve']")
        approve.scroll_into_view_if_needed()
        box = approve.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        page.locator("#workspace-close").tap()
        expect(page.locator("#workspace")).to_be_hidden()
        assert page.errors == [], page.errors
    finally:
        context.close()


def serious_violations(page) -> list[dict]:
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    serious = [{"id": v["id"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
    print(json.dumps(serious, indent=1))
    return serious


def test_the_plans_panel_has_no_serious_accessibility_violations(browser, world):
    plan = make_plan(world, "Accessible", THREE)
    context, page = open_page(browser, world.url, bypass_csp=True)
    try:
        open_plan(page, world, plan["id"])
        depend(page, 2, "b")
        page.add_script_tag(path=str(AXE))
        assert serious_violations(page) == [], "the editor"
        page.locator(".plan-back").click()
        expect(page.locator(".plans-head")).to_be_visible()
        assert serious_violations(page) == [], "the list"
        assert page.errors == [], page.errors
    finally:
        context.close()
