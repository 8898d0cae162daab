"""The board's plans (issue #12) in Chromium against a real dashboard and a real agent running the
fake CLI: the list by state with invalid files, the editor (rename, add a task with a dependency,
remove a task and its edges, save with the revision), a cycle named and not saved, what the server
refuses said in its words until the next edit, unsaved changes kept per plan (closing the panel,
another plan) and asked about before the page is left, a plan changed elsewhere followed (or said,
keeping the changes made here), approve / back to draft / run, a running plan's task statuses
following the board's change stream with links to the drawer and back to the plan, news when it
fails and a rerun of its failed tasks, the phone width, axe."""

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

RUN_TIMEOUT = 90_000  # ms: tasks really run (fake CLI) and land on a loaded CI machine
FOLLOW_TIMEOUT = 30_000  # ms: an open Plans view reads again every few seconds


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


def test_a_plan_is_written_by_hand_without_a_chat(page, world):
    page.goto(f"{world.url}/?plans=p")
    wait_ready(page)
    page.locator("[data-role='new-plan']").click()
    editor = page.locator(".plan-editor")
    expect(editor).to_be_visible()
    plan_id = editor.get_attribute("data-plan")
    expect(page).to_have_url(f"{world.url}/?plans=p%2F{plan_id}")
    tasks = page.locator(".plan-task")
    expect(tasks).to_have_count(1)
    tasks.nth(0).locator("[data-role='task-title']").fill("Write the parser")
    page.locator("[data-role='add-task']").click()
    tasks.nth(1).locator("[data-role='task-title']").fill("Test the parser")
    tasks.nth(1).locator("[data-role='task-ref']").fill("tests")
    depend(page, 1, "task-1")
    page.locator("[data-role='save']").click()
    expect(editor).to_have_attribute("data-revision", "2")
    saved = plan_of(world, plan_id)
    assert saved["state"] == "draft" and saved["chat_id"] is None
    assert [(t["ref"], t["title"], t["depends_on"]) for t in saved["tasks"]] == [
        ("task-1", "Write the parser", []), ("tests", "Test the parser", ["task-1"])]


def test_a_cycle_is_named_and_not_saved_and_a_refusal_is_said_until_the_next_edit(page, world):
    plan = make_plan(world, "No cycles", THREE)
    open_plan(page, world, plan["id"])
    save, approve = page.locator("[data-role='save']"), page.locator("[data-role='approve']")
    depend(page, 0, "c")  # a after c, and c after a
    cycle = page.locator("[data-role='cycle']")
    expect(cycle).to_contain_text("a runs after c, c runs after a")
    expect(save).to_be_disabled()
    expect(approve).to_be_disabled()
    assert "cycle" in save.get_attribute("title")
    depend(page, 0, "c", checked=False)
    expect(cycle).to_have_count(0)
    expect(save).to_be_enabled()
    # What the page does not check, the server refuses in its own words: two tasks named b.
    tasks = page.locator(".plan-task")
    tasks.nth(2).locator("[data-role='task-ref']").fill("b")
    save.click()
    error = page.locator("[data-role='plan-error']")
    expect(error).to_be_visible()
    body = {"revision": 1, "plan": {"title": "No cycles", "summary": "", "tasks": [THREE[0], THREE[1], {**THREE[2], "ref": "b"}]}}
    refused = httpx.put(f"{world.url}/api/projects/p/plans/{plan['id']}", json=body, timeout=30)
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    expect(error).to_contain_text(message.split(": ", 1)[1])
    expect_refused(page, 422)
    # The next edit is another plan than the one refused: the refusal goes.
    tasks.nth(2).locator("[data-role='task-ref']").fill("c")
    expect(error).to_be_hidden()
    unchanged = plan_of(world, plan["id"])
    assert unchanged["revision"] == 1 and [t["ref"] for t in unchanged["tasks"]] == ["a", "b", "c"]


def test_a_plan_changed_elsewhere_keeps_the_changes_made_here_until_reloaded(page, world):
    plan = make_plan(world, "Two editors", THREE)
    open_plan(page, world, plan["id"])
    title = page.locator("input[data-role='plan-title']")
    title.fill("Mine")
    # Someone else saves first: the view notices (it reads the plan again) and keeps what was typed here.
    theirs = {"revision": 1, "plan": {"title": "Theirs", "summary": "", "tasks": THREE}}
    httpx.put(f"{world.url}/api/projects/p/plans/{plan['id']}", json=theirs, timeout=30).raise_for_status()
    notice = page.locator("[data-role='plan-elsewhere']")
    expect(notice).to_contain_text("changed elsewhere", timeout=FOLLOW_TIMEOUT)
    expect(notice).to_contain_text("revision 2")
    expect(title).to_have_value("Mine")
    expect(page.locator("[data-role='save']")).to_be_disabled()  # the server would refuse it
    notice.locator("[data-role='reload-plan']").click()
    expect(title).to_have_value("Theirs")
    expect(page.locator(".plan-editor")).to_have_attribute("data-revision", "2")
    expect(page.locator(".plan-editor [data-role='unsaved']")).to_be_hidden()
    expect(notice).to_be_hidden()


def test_an_open_plan_and_the_list_follow_what_is_done_elsewhere(page, world):
    plan = make_plan(world, "Approved elsewhere", THREE)
    open_plan(page, world, plan["id"])
    editor = page.locator(".plan-editor")
    expect(page.locator("[data-role='save']")).to_have_text("Saved")
    httpx.post(f"{world.url}/api/projects/p/plans/{plan['id']}/approve", json={"revision": 1},
               timeout=30).raise_for_status()
    expect(editor).to_have_attribute("data-state", "ready", timeout=FOLLOW_TIMEOUT)
    expect(page.locator("[data-role='plan-state']")).to_have_text("Ready")
    expect(page.locator("[data-role='save']")).to_have_count(0)
    page.locator(".plan-back").click()
    expect(page.locator(".plans-head")).to_be_visible()
    other = make_plan(world, "Made in another tab", THREE)
    expect(page.locator(f".plans-state[data-state='draft'] .plan-item[data-plan='{other['id']}']")).to_be_visible(
        timeout=FOLLOW_TIMEOUT)


def test_the_plans_view_reads_again_only_while_it_is_open(browser, world):
    context, page = open_page(browser, world.url)
    try:
        # Counts the page's requests for plans (the clock is the page's: no waiting for real seconds).
        page.add_init_script("""(() => {
          const real = window.fetch; window.plansAsked = 0;
          window.fetch = (input, init) => {
            if (String(input && input.url || input).includes("/plans")) window.plansAsked += 1;
            return real(input, init);
          };
        })()""")
        page.clock.install()
        page.goto(world.url)
        wait_ready(page)
        page.locator(".project[data-project='p'] [data-role='open-plans']").click()
        expect(page.locator(".plans-head")).to_be_visible()
        other = make_plan(world, "Seen on the next read", THREE)
        page.clock.run_for(6000)
        expect(page.locator(f".plan-item[data-plan='{other['id']}']")).to_be_visible()
        page.locator("#workspace-close").click()
        expect(page.locator("#workspace")).to_be_hidden()
        asked = page.evaluate("() => window.plansAsked")
        page.clock.run_for(60_000)
        assert page.evaluate("() => window.plansAsked") == asked
        assert page.errors == [], page.errors
    finally:
        context.close()


def test_unsaved_changes_are_kept_per_plan_and_leaving_the_page_asks_first(page, world):
    plan = make_plan(world, "Keep my changes", THREE)
    other = make_plan(world, "Another plan", THREE)
    open_plan(page, world, plan["id"])
    title = page.locator("input[data-role='plan-title']")
    second = page.locator(".plan-task").nth(1).locator("[data-role='task-title']")
    unsaved = page.locator(".plan-editor [data-role='unsaved']")
    expect(unsaved).to_be_hidden()
    title.fill("Changed, not saved")
    second.fill("Second, changed")
    expect(unsaved).to_be_visible()
    # Escape in a field closes the panel; opened again, the plan has its changes, marked.
    title.press("Escape")
    expect(page.locator("#workspace")).to_be_hidden()
    page.locator(".project[data-project='p'] [data-role='open-plans']").click()
    item = page.locator(f".plan-item[data-plan='{plan['id']}']")
    expect(item.locator("[data-role='unsaved']")).to_have_text("Unsaved changes")
    expect(page.locator(f".plan-item[data-plan='{other['id']}'] [data-role='unsaved']")).to_have_count(0)
    item.click()
    expect(title).to_have_value("Changed, not saved")
    expect(second).to_have_value("Second, changed")
    expect(unsaved).to_be_visible()
    expect(page.locator("[data-role='save']")).to_be_enabled()
    # Another plan, and back: still there.
    page.locator(".plan-back").click()
    page.locator(f".plan-item[data-plan='{other['id']}']").click()
    expect(title).to_have_value("Another plan")
    page.locator(".plan-back").click()
    item.click()
    expect(title).to_have_value("Changed, not saved")
    # Leaving the page asks first (a beforeunload the browser turns into its own question).
    leaving = "() => { const e = new Event('beforeunload', { cancelable: true }); window.dispatchEvent(e); return e.defaultPrevented; }"
    assert page.evaluate(leaving) is True
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.type), dialog.accept()))
    page.reload()
    wait_ready(page)
    assert asked == ["beforeunload"]
    expect(title).to_have_value("Keep my changes")  # kept by this page only: a reload drops them
    # Discard (clicked twice) drops them at once; then nothing is asked.
    title.fill("Changed again")
    discard = unsaved.locator("[data-role='discard']")
    discard.click()
    expect(discard).to_have_text("Discard: click again")
    expect(title).to_have_value("Changed again")
    discard.click()
    expect(title).to_have_value("Keep my changes")
    expect(unsaved).to_be_hidden()
    assert page.evaluate(leaving) is False
    assert plan_of(world, plan["id"])["revision"] == 1


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
    expect(delete).to_have_text("Delete plan")  # a plan that never ran has no tasks to keep
    delete.click()
    expect(delete).to_have_text("Delete plan: click again")
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
    # The plan follows its tasks on the agent: failed, naming the task; that is news.
    expect(editor).to_have_attribute("data-state", "failed", timeout=RUN_TIMEOUT)
    expect(page.locator("[data-role='plan-reason']")).to_contain_text("b")
    expect(page.locator(f"#toast .toast-item[data-key='plan:p/{plan['id']}']")).to_contain_text("Plan “Runs” failed")
    expect(page.locator("[data-role='delete-plan']")).to_have_text("Delete plan (its tasks stay)")
    # A task's link opens its drawer over the panel; closing it comes back to the link.
    link = row("a").locator("[data-role='task-link']")
    link.click()
    drawer = page.locator("#drawer")
    expect(drawer).to_be_visible()
    expect(page.locator("#drawer-title")).to_have_text("Works")
    task_ids = plan_of(world, plan["id"])["task_ids"]
    assert f"task=p%2F{task_ids['a']}" in page.url and f"plans=p%2F{plan['id']}" in page.url
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    expect(page.locator("#workspace")).to_be_visible()
    expect(link).to_be_focused()
    # The drawer names the plan by its title, a link back to it.
    link.click()
    plan_link = page.locator("#drawer-meta [data-role='plan-link']")
    expect(plan_link).to_have_text("Runs")
    plan_link.click()
    expect(drawer).to_be_hidden()
    expect(editor).to_have_attribute("data-plan", plan["id"])
    expect(page).to_have_url(f"{world.url}/?plans=p%2F{plan['id']}")
    # Rerun failed tasks: the failed one runs again (and fails again, as its scenario says).
    rerun = page.locator("[data-role='rerun-failed']")
    expect(rerun).to_have_text("Rerun failed tasks (1)")
    runs = world.task(task_ids["b"])["runs"]
    rerun.click()
    wait_for(lambda: world.task(task_ids["b"])["runs"] > runs, timeout=RUN_TIMEOUT / 1000, what="b to run again")
    expect(editor).to_have_attribute("data-state", "failed", timeout=RUN_TIMEOUT)
    expect(row("b")).to_have_attribute("data-status", "failed", timeout=RUN_TIMEOUT)


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
