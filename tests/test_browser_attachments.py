"""Attachments in the board (issue 12, item 4): the drawer lists a task's files with their size and
a download link, uploads more from its file input (a refused file says why), and the new-task form
attaches its files once the task exists. A real baton-dashboard over a local project, in Chromium."""

from __future__ import annotations

import json

import httpx
import pytest

from board_world import AXE, Board, open_page, wait_ready
from browsing import playwright_or_skip
from support import wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
NOTES = "Use the blue button.\nNever the red one.\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("attachments"), agent=False)
    yield board
    board.close()


def open_task(page, task_id: str, title: str) -> None:
    card = page.locator(f".column[data-status='pending'] .card[data-id='{task_id}']")
    expect(card).to_be_visible()
    card.click()
    expect(page.locator("#drawer-title")).to_have_text(title)


def test_upload_from_the_drawer_list_and_download(page, world, tmp_path):
    task_id = world.create("Fix the button")
    open_task(page, task_id, "Fix the button")
    box = page.locator("#drawer-attachments")
    expect(box.get_by_text("No files attached.")).to_be_visible()
    box.locator("[data-role='attach-input']").set_input_files([
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": NOTES.encode()},
        {"name": "screen shot.png", "mimeType": "image/png", "buffer": PNG}])
    links = box.locator("[data-role='attachment-link']")
    expect(links).to_have_text(["notes.txt", "screen shot.png"])
    expect(box.locator("li[data-name='screen shot.png']")).to_contain_text("2 KB · image")
    expect(box.get_by_text("No files attached.")).to_be_hidden()
    expect(page.locator(".toast-item", has_text="Attached 2 files")).to_be_visible()
    # On the task in the store, as the agent reads it.
    assert [a["name"] for a in world.task(task_id)["attachments"]] == ["notes.txt", "screen shot.png"]

    for name, data in (("notes.txt", NOTES.encode()), ("screen shot.png", PNG)):
        with page.expect_download() as info:
            box.locator(f"li[data-name='{name}'] a").click()
        download = info.value
        assert download.suggested_filename == name
        assert open(download.path(), "rb").read() == data

    # The same name again replaces the file; the drawer and the toast say so.
    box.locator("[data-role='attach-input']").set_input_files(
        [{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"newer notes\n"}])
    expect(page.locator(".toast-item", has_text="replaced notes.txt")).to_be_visible()
    expect(links).to_have_count(2)
    assert httpx.get(f"{world.url}/api/projects/p/tasks/{task_id}/attachments/notes.txt").content == b"newer notes\n"


def test_a_refused_file_says_why(page, world):
    task_id = world.create("Gets a bad file")
    open_task(page, task_id, "Gets a bad file")
    box = page.locator("#drawer-attachments")
    box.locator("[data-role='attach-input']").set_input_files(
        [{"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ\x90\x00"}])
    expect(box.locator("[data-role='attach-error']")).to_contain_text("tool.exe: this kind of file is not accepted")
    expect(box.locator("[data-role='attachment-link']")).to_have_count(0)
    expect(box.locator("[data-role='attach-input']")).to_be_enabled()
    # The browser logs the refused request itself; nothing else went wrong.
    assert all("status of 415" in e for e in page.errors), page.errors
    page.errors.clear()


def test_the_new_task_form_attaches_its_files_after_the_create(page, world):
    page.locator("#new-task-button").click()
    form = page.locator("#new-task-form")
    form.locator("input[name='title']").fill("Made with files")
    form.locator("input[name='files']").set_input_files([
        {"name": "spec.md", "mimeType": "text/markdown", "buffer": b"# Spec\n"},
        {"name": "mock.png", "mimeType": "image/png", "buffer": PNG}])
    form.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator(".toast-item", has_text="Attached 2 files")).to_be_visible()

    def made() -> dict | None:
        pending = httpx.get(f"{world.url}/api/projects/p/tasks").json()["pending"]
        return next((t for t in pending if t["title"] == "Made with files"), None)

    task = wait_for(made, what="the new task")
    assert [a["name"] for a in world.task(task["id"])["attachments"]] == ["spec.md", "mock.png"]
    open_task(page, task["id"], "Made with files")
    expect(page.locator("#drawer-attachments [data-role='attachment-link']")).to_have_text(["spec.md", "mock.png"])


def test_the_drawer_with_attachments_has_no_serious_violations(browser, world):
    task_id = world.create("Accessible files")
    resp = httpx.post(f"{world.url}/api/projects/p/tasks/{task_id}/attachments",
                      files=[("files", ("a.txt", b"a")), ("files", ("b.png", PNG))])
    assert resp.status_code == 201, resp.text
    context, page = open_page(browser, world.url, bypass_csp=True)
    try:
        page.goto(world.url)
        wait_ready(page)
        open_task(page, task_id, "Accessible files")
        expect(page.locator("#drawer-attachments [data-role='attachment-link']")).to_have_count(2)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("() => axe.run(document.getElementById('drawer'), { resultTypes: ['violations'] })")
        serious = [{"id": v["id"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
                   for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert serious == [], json.dumps(serious, indent=1)
        assert page.errors == [], page.errors
    finally:
        context.close()


def test_files_fit_a_phone(browser, world):
    task_id = world.create("Phone files")
    long_name = "a-very-long-file-name-without-any-space-that-must-wrap-on-a-phone-screen-somehow.txt"
    assert httpx.post(f"{world.url}/api/projects/p/tasks/{task_id}/attachments",
                      files=[("files", (long_name, b"x"))]).status_code == 201
    context, page = open_page(browser, world.url, width=390, height=844, is_mobile=True, has_touch=True)
    try:
        page.goto(world.url)
        wait_ready(page)
        page.locator("#new-task-button").tap()
        form = page.locator("#new-task-form")
        expect(form.locator("input[name='files']")).to_be_visible()
        assert form.evaluate("node => node.scrollWidth <= node.clientWidth")
        page.locator("#new-task-form [data-role='cancel']").tap()
        page.goto(f"{world.url}/?task=p/{task_id}")
        wait_ready(page)
        expect(page.locator("#drawer-attachments [data-role='attachment-link']")).to_have_text([long_name])
        assert page.locator("#drawer").evaluate("node => node.scrollWidth <= node.clientWidth")
        assert page.errors == [], page.errors
    finally:
        context.close()
