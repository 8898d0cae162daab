"""From a conversation to tasks landing in dependency order, without leaving the board (issue #12):
a real dashboard whose chat talks to the stand-in Messages API, a real baton-agent running the fake
Claude CLI over a repository with a real bare origin, and Chromium. The person chats (the answer
streams in), makes a plan (the model calls `propose_plan`), edits it in the editor (renames a task,
adds one that runs after another, removes an edge), approves and runs it; the page follows the
tasks live, and on origin's main every task's commit comes after those of the tasks it depends on,
each task having started only once its dependencies were completed."""

from __future__ import annotations

import subprocess
from datetime import datetime

import httpx
import pytest

from board_world import open_page, wait_ready
from browsing import playwright_or_skip
from chat_board import chat_board
from conftest import fake_task
from fakes.messages_standin import MessagesStandIn, text, tool

playwright_api = playwright_or_skip()
expect = playwright_api.expect

RUN_TIMEOUT = 120_000  # ms: four tasks really run and land, on a loaded CI machine


def writes(path: str) -> str:
    return fake_task("x", {"steps": [{"write": path, "text": f"{path}\n"}]})["content"]


# What the model proposes: a first, then b and c, each after a.
PROPOSED = {
    "title": "Widgets with an API",
    "summary": "The schema first, then the API and its documentation.",
    "tasks": [
        {"ref": "schema", "title": "Add the schema", "content": writes("schema.txt"), "task_type": "feature",
         "priority": "high", "depends_on": []},
        {"ref": "api", "title": "Add the API", "content": writes("api.txt"), "task_type": "feature",
         "priority": "medium", "depends_on": ["schema"]},
        {"ref": "docs", "title": "Document it", "content": writes("docs.txt"), "task_type": "docs",
         "priority": "low", "depends_on": ["schema"]},
    ],
}


@pytest.fixture
def api():
    with MessagesStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def world(tmp_path, api):
    board = chat_board(tmp_path, api, agent=True, agent_yaml="max_parallel_workers: 3\n")
    yield board
    api.release.set()
    board.close()


def origin_subjects(world) -> list[str]:
    """Commit subjects on the bare origin's main, oldest first."""
    origin = world.repo.parent / "p-origin.git"
    out = subprocess.run(["git", "log", "--reverse", "--format=%s", "main"], cwd=origin, capture_output=True,
                         text=True, check=True).stdout
    return out.splitlines()


def test_a_conversation_becomes_an_edited_plan_whose_tasks_land_in_dependency_order(browser, world, api):
    api.script(text(["Start with ", "the schema;\n", "then the API ", "and its docs."], usage=(900, 40), hold_after=2),
               tool("propose_plan", PROPOSED, usage=(1500, 300)))
    context, page = open_page(browser, world.url)
    try:
        page.goto(world.url)
        wait_ready(page)
        # ----- chat: the answer streams in
        page.locator(".project[data-project='p'] [data-role='open-chat']").click()
        page.locator("[data-role='new-chat']").click()
        box = page.locator("[data-role='chat-input']")
        expect(box).to_be_visible()
        box.fill("We need widgets with an HTTP API. How would you split the work?")
        box.press("Control+Enter")
        streaming = page.locator("[data-role='messages'] > li[data-streaming='1'] [data-role='text']")
        expect(streaming).to_have_text("Start with the schema;\n")  # on the page while the model still writes
        api.release.set()
        answer = page.locator("[data-role='messages'] > li[data-role='assistant'] [data-role='text']")
        expect(answer).to_have_text("Start with the schema;\nthen the API and its docs.")
        chat_id = page.locator(".chat-view").get_attribute("data-chat")

        # ----- make a plan: the editor opens on the model's draft
        page.locator("[data-role='make-plan']").click()
        editor = page.locator(".plan-editor")
        expect(editor).to_have_attribute("data-state", "draft", timeout=30_000)
        plan_id = editor.get_attribute("data-plan")
        assert f"plans=p%2F{plan_id}" in page.url
        tasks = page.locator(".plan-task")
        expect(tasks).to_have_count(3)
        plan_url = f"{world.url}/api/projects/p/plans/{plan_id}"
        assert httpx.get(plan_url, timeout=30).json()["chat_id"] == chat_id

        # ----- edit: rename the API task, add tests after it, take docs off the schema
        tasks.nth(1).locator("[data-role='task-title']").fill("Add the HTTP API")
        page.locator("[data-role='add-task']").click()
        added = tasks.nth(3)
        added.locator("[data-role='task-ref']").fill("tests")
        added.locator("[data-role='task-title']").fill("Test the API")
        added.locator("[data-role='task-content']").fill(writes("tests.txt"))
        added.locator("[data-role='task-deps'] summary").click()
        added.locator(".plan-dep-choices label[data-ref='api'] input").check()
        docs = tasks.nth(2)
        docs.locator("[data-role='task-deps'] summary").click()
        docs.locator(".plan-dep-choices label[data-ref='schema'] input").uncheck()
        expect(page.locator("[data-role='plan-order'] li")).to_have_text(
            ["First: schema, docs", "Then: api", "Then: tests"])
        page.locator("[data-role='save']").click()
        expect(editor).to_have_attribute("data-revision", "2")

        # ----- approve, run; the page follows the tasks
        page.locator("[data-role='approve']").click()
        expect(editor).to_have_attribute("data-state", "ready")
        page.locator("[data-role='run']").click()
        expect(editor).to_have_attribute("data-state", "executing")
        expect(editor).to_have_attribute("data-state", "done", timeout=RUN_TIMEOUT)
        rows = page.locator(".plan-task.readonly")
        expect(rows).to_have_count(4)
        for ref in ("schema", "api", "docs", "tests"):
            expect(page.locator(f".plan-task.readonly[data-ref='{ref}']")).to_have_attribute("data-status", "completed")
        # That is news; and the conversation names the plan made from it by its title, a link back.
        expect(page.locator(f"#toast .toast-item[data-key='plan:p/{plan_id}']")).to_contain_text(
            "Plan “Widgets with an API” is done")
        page.get_by_role("button", name="its conversation").click()
        made = page.locator(f".chat-head [data-role='chat-plan'][data-plan='{plan_id}']")
        expect(made).to_have_text("Plan: Widgets with an API")
        made.click()
        expect(editor).to_have_attribute("data-state", "done")
        assert page.errors == [], page.errors
    finally:
        context.close()

    # ----- what ran is the edited plan, in dependency order
    plan = httpx.get(plan_url, timeout=30).json()
    ids = plan["task_ids"]
    deps = {t["ref"]: t["depends_on"] for t in plan["tasks"]}
    assert deps == {"schema": [], "api": ["schema"], "docs": [], "tests": ["api"]}
    ran = {ref: world.task(task_id) for ref, task_id in ids.items()}
    assert ran["api"]["title"] == "Add the HTTP API" and ran["tests"]["title"] == "Test the API"
    assert all(task["status"] == "completed" for task in ran.values())
    assert ran["tests"]["depends_on"] == [ids["api"]] and ran["docs"]["depends_on"] == []
    at = lambda value: datetime.fromisoformat(value)  # noqa: E731
    for ref, needs in deps.items():
        for dep in needs:
            assert at(ran[ref]["started_at"]) >= at(ran[dep]["finished_at"]), (ref, dep, ran[ref], ran[dep])
    subjects = origin_subjects(world)
    position = {ref: next(i for i, s in enumerate(subjects) if f"({task_id})" in s) for ref, task_id in ids.items()}
    assert position["schema"] < position["api"] < position["tests"], subjects
    # The model was asked for the plan with the forced tool, after the conversation.
    planned = api.requests[-1]["body"]
    assert planned["tool_choice"] == {"type": "tool", "name": "propose_plan"}
