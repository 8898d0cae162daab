"""The board in a real browser (Playwright driving Debian's Chromium) against real processes:
baton-dashboard and two baton-agents using the fake CLI, one of them stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from browsing import playwright_or_skip

from conftest import FAKE_CLAUDE, fake_task
from support import ROOT, AgentProcess, free_port, make_repo, wait_for, wait_for_http

ARTIFACTS = ROOT / "test-artifacts"

playwright_api = playwright_or_skip()


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen] = []
        wrapper = root / "bin" / "claude"
        wrapper.parent.mkdir()
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CLAUDE} \"$@\"\n")
        wrapper.chmod(0o755)
        env = {"FAKE_CLAUDE_STATE": str(root / "fake-state"), "FAKE_CLAUDE_LOG": str(root / "fake.log")}
        self.alpha_repo = make_repo(root, "alpha")
        self.beta_repo = make_repo(root, "beta")
        for repo in (self.alpha_repo, self.beta_repo):
            (repo / "agent.yaml").write_text(
                f"poll_interval_seconds: 0.5\ntest_command: ''\nclaude_code:\n  command: {wrapper}\n")
        self.alpha, self.alpha_url = self._agent(self.alpha_repo, env)
        beta, beta_url = self._agent(self.beta_repo, env)
        assert beta.stop() == 0  # configured, but not running: the board must say so
        # Gamma's coding-agent CLI is missing: the agent answers, degraded, and claims nothing.
        self.missing_cli = root / "bin" / "no-such-claude"
        gamma_repo = make_repo(root, "gamma")
        (gamma_repo / "agent.yaml").write_text(f"claude_code:\n  command: {self.missing_cli}\n")
        _, self.gamma_url = self._agent(gamma_repo, env)
        (root / "projects.yaml").write_text(
            "agent_timeout_seconds: 1\nprojects:\n"
            f"  - id: alpha\n    name: Alpha\n    agent_url: {self.alpha_url}\n    color: '#4f8cff'\n"
            f"  - id: beta\n    name: Beta\n    agent_url: {beta_url}\n    color: '#e0567a'\n"
            f"  - id: gamma\n    name: Gamma\n    agent_url: {self.gamma_url}\n    color: '#2bb673'\n")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.dashboard = subprocess.Popen(
            [sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml", "--port", str(port)],
            cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
            stderr=open(root / "dashboard.err", "w"))
        wait_for_http(f"{self.url}/api/health", self.dashboard)

    def _agent(self, repo: Path, env: dict) -> tuple[AgentProcess, str]:
        port = free_port()
        agent = AgentProcess(["--port", str(port), "--project-dir", str(repo)], repo, self.root / f"logs-{repo.name}", env)
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/agent/health", agent.proc)
        self.processes.append(agent.proc)
        return agent, url

    def task(self, task_id: str) -> dict:
        groups = httpx.get(f"{self.alpha_url}/agent/tasks").json()
        return next(t for tasks in groups.values() for t in tasks if t["id"] == task_id)

    def close(self) -> None:
        self.dashboard.send_signal(signal.SIGTERM)
        self.dashboard.wait(timeout=30)
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("browser"))
    yield w
    w.close()


@pytest.fixture(autouse=True)
def alpha_dispatching(world):
    """Every test starts with Alpha's dispatcher running, whatever an earlier test left."""
    httpx.post(f"{world.alpha_url}/agent/dispatcher/start").raise_for_status()


@pytest.fixture
def page(browser, world):
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    tab = context.new_page()
    tab.dialogs = []  # any alert() would be an injected script running
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    tab.errors = []
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    # Console errors include Content-Security-Policy violations.
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.goto(world.url)
    tab.wait_for_selector("body[data-board-ready='1']")
    yield tab
    assert tab.errors == [], tab.errors
    context.close()


def column(page, status: str):
    return page.locator(f".column[data-status='{status}']")


def card(page, task_id: str):
    return page.locator(f".card[data-id='{task_id}']")


def bulk_add(page, lines: str) -> None:
    """Alpha's tasks, one per line, through the page's Bulk add dialog."""
    page.get_by_role("button", name="Bulk add", exact=True).click()
    bulk = page.locator("#bulk-dialog")
    bulk.locator("select[name='project']").select_option("alpha")
    bulk.locator("textarea[name='lines']").fill(lines)
    bulk.get_by_role("button", name="Add all", exact=True).click()


def test_create_in_the_page_and_watch_it_move_with_a_live_transcript(page, world):
    expect = playwright_api.expect
    alpha = page.locator(".project[data-project='alpha']")
    alpha.get_by_role("button", name="Stop", exact=True).click()  # dispatcher stop from the page
    expect(alpha.locator("[data-role='dispatcher-state']")).to_contain_text("dispatcher stopped")

    gate = world.root / "gate-create"
    scenario = {"steps": [{"write": "page.txt", "text": "from the page\n"}, {"wait_for": str(gate), "seconds": 60},
                          {"write": "more.txt", "text": "more\n"}]}
    page.get_by_role("button", name="New task", exact=True).click()
    dialog = page.locator("#new-task-dialog")
    dialog.locator("select[name='project']").select_option("alpha")
    dialog.locator("input[name='title']").fill("Created in the browser")
    dialog.locator("textarea[name='content']").fill("FAKE: " + json.dumps(scenario))
    dialog.locator("select[name='task_type']").select_option("docs")
    dialog.get_by_role("button", name="Create", exact=True).click()

    created = column(page, "pending").locator(".card", has_text="Created in the browser")
    expect(created).to_be_visible()
    task_id = created.get_attribute("data-id")

    alpha.get_by_role("button", name="Start", exact=True).click()  # and start again
    expect(column(page, "in_progress").locator(f".card[data-id='{task_id}']")).to_be_visible(timeout=15000)
    card(page, task_id).click()
    assert f"task=alpha%2F{task_id}" in page.url or f"task=alpha/{task_id}" in page.url
    transcript = page.locator("#transcript")
    expect(transcript.locator("li[data-kind='tool_use']").first).to_contain_text("page.txt", timeout=15000)
    assert world.task(task_id)["status"] == "in_progress"  # the line arrived while it was running

    gate.touch()
    expect(column(page, "completed").locator(f".card[data-id='{task_id}']")).to_be_visible(timeout=30000)
    expect(transcript.locator("li[data-kind='result']")).to_contain_text("Done.", timeout=15000)
    expect(page.locator("#drawer-meta dd[data-field='status']")).to_have_text("Completed")  # in words


def test_the_stopped_agent_is_shown_unavailable_while_the_other_works(page, world):
    expect = playwright_api.expect
    beta = page.locator(".project[data-project='beta']")
    expect(beta.locator(".badge")).to_have_text("unavailable")
    expect(beta.locator(".project-reason")).to_contain_text("cannot reach")
    expect(page.locator(".notice[data-project='beta']")).to_contain_text("Beta is unavailable")
    expect(page.locator(".project[data-project='alpha'] .badge")).to_have_text("healthy")
    resp = httpx.post(f"{world.alpha_url}/agent/tasks", json=fake_task("Alpha keeps working", {"steps": []}))
    expect(card(page, resp.json()["id"])).to_be_visible()


def test_a_degraded_project_shows_its_problem_and_its_tasks(page, world):
    expect = playwright_api.expect
    task_id = httpx.post(f"{world.gamma_url}/agent/tasks", json={"title": "Waits for a CLI"}).json()["id"]
    gamma = page.locator(".project[data-project='gamma']")
    expect(gamma.locator(".badge")).to_have_text("degraded")
    expect(gamma.locator(".project-problems li[data-code='runtime_unavailable']")).to_contain_text(
        f"{world.missing_cli} not found")
    expect(page.locator(".notice[data-project='gamma']")).to_contain_text("Gamma is degraded")
    expect(column(page, "pending").locator(f".card[data-id='{task_id}']")).to_be_visible()  # still available
    httpx.post(f"{world.gamma_url}/agent/tasks/{task_id}/cancel")


def test_a_hostile_title_is_shown_as_text(page, world):
    expect = playwright_api.expect
    title = "<img src=x onerror=alert(1)> and <b>bold</b>"
    httpx.post(f"{world.alpha_url}/agent/dispatcher/stop")
    try:
        task_id = httpx.post(f"{world.alpha_url}/agent/tasks", json={"title": title}).json()["id"]
        shown = card(page, task_id).locator(".card-title")
        expect(shown).to_have_text(title)
        assert page.locator(".card img, .card b").count() == 0
        card(page, task_id).click()
        expect(page.locator("#drawer-title")).to_have_text(title)
        assert page.locator("#drawer img").count() == 0
        assert page.dialogs == []
        httpx.post(f"{world.alpha_url}/agent/tasks/{task_id}/cancel")
    finally:
        httpx.post(f"{world.alpha_url}/agent/dispatcher/start")


def test_a_failed_tasks_reason_and_rerun(page, world):
    expect = playwright_api.expect
    flag = world.root / "fail-once"
    task_id = httpx.post(f"{world.alpha_url}/agent/tasks", json=fake_task(
        "Fails the first time", {"fail_once": str(flag), "error": "the model gave up",
                                 "steps": [{"write": "retry.txt", "text": "again\n"}]})).json()["id"]
    failed = column(page, "failed").locator(f".card[data-id='{task_id}']")
    expect(failed).to_be_visible(timeout=30000)
    # The reason in words; the code stays in the tooltip.
    expect(failed.locator(".card-error")).to_have_text("the coding agent reported an error")
    expect(failed.locator(".card-error")).to_have_attribute("title", "agent_error")
    failed.focus()
    page.keyboard.press("Enter")  # keyboard works as well as the mouse
    # In the drawer too: words first, the code beside them in the details.
    expect(page.locator("#drawer-error")).to_have_text(re.compile(r"^the coding agent reported an error: .*the model gave up"))
    expect(page.locator("#drawer-meta dd[data-field='failure']")).to_have_text(
        "the coding agent reported an error (agent_error)")
    page.locator("#drawer-actions").get_by_role("button", name="Rerun", exact=True).click()
    expect(column(page, "completed").locator(f".card[data-id='{task_id}']")).to_be_visible(timeout=30000)
    page.keyboard.press("Escape")
    expect(page.locator("#drawer")).to_be_hidden()


def test_filter_search_bulk_and_screenshot(page, world):
    expect = playwright_api.expect
    httpx.post(f"{world.alpha_url}/agent/dispatcher/stop")
    try:
        bulk_add(page, "Bulk one\nBulk two\n\nBulk three")
        expect(column(page, "pending").locator(".card", has_text="Bulk")).to_have_count(3)
        page.keyboard.press("/")
        page.keyboard.type("bulk two")
        expect(page.locator(".card")).to_have_count(1)
        assert "q=bulk+two" in page.url
        page.reload()
        page.wait_for_selector("body[data-board-ready='1']")
        expect(page.locator("#search")).to_have_value("bulk two")
        expect(page.locator(".card")).to_have_count(1)
        page.locator("#search").fill("")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)
        assert (ARTIFACTS / "board.png").stat().st_size > 10_000
    finally:
        for t in httpx.get(f"{world.alpha_url}/agent/tasks/pending").json():
            httpx.post(f"{world.alpha_url}/agent/tasks/{t['id']}/cancel")
        httpx.post(f"{world.alpha_url}/agent/dispatcher/start")


def test_each_submission_of_the_forms_carries_its_own_idempotency_key(page, world):
    expect = playwright_api.expect
    httpx.post(f"{world.alpha_url}/agent/dispatcher/stop")
    try:
        dialog = page.locator("#new-task-dialog")
        for _ in range(2):  # the same text twice, on purpose: two submissions, two tasks
            page.get_by_role("button", name="New task", exact=True).click()
            dialog.locator("select[name='project']").select_option("alpha")
            dialog.locator("input[name='title']").fill("Keyed twice")
            dialog.get_by_role("button", name="Create", exact=True).click()
            expect(dialog).to_be_hidden()
        expect(column(page, "pending").locator(".card", has_text="Keyed twice")).to_have_count(2)
        bulk_add(page, "Keyed line one\nKeyed line two")
        expect(column(page, "pending").locator(".card", has_text="Keyed line")).to_have_count(2)
        pending = httpx.get(f"{world.alpha_url}/agent/tasks/pending").json()
        singles = {t["idempotency_key"] for t in pending if t["title"] == "Keyed twice"}
        bulked = {t["idempotency_key"] for t in pending if t["title"].startswith("Keyed line")}
        assert len(singles) == 2 and None not in singles
        assert len(bulked) == 1 and None not in bulked and not bulked & singles
    finally:
        for t in httpx.get(f"{world.alpha_url}/agent/tasks/pending").json():
            httpx.post(f"{world.alpha_url}/agent/tasks/{t['id']}/cancel")
        httpx.post(f"{world.alpha_url}/agent/dispatcher/start")


def test_hostile_text_in_errors_and_transcript_stays_text(page, world):
    expect = playwright_api.expect
    hostile = "<img src=x onerror=alert(2)><script>alert(3)</script>"
    task_id = httpx.post(f"{world.alpha_url}/agent/tasks", json=fake_task(
        "Hostile output", {"result": "error_during_execution", "error": hostile, "steps": []})).json()["id"]
    failed = column(page, "failed").locator(f".card[data-id='{task_id}']")
    expect(failed).to_be_visible(timeout=30000)
    failed.click()
    expect(page.locator("#drawer-error")).to_contain_text(hostile)
    expect(page.locator("#transcript li[data-kind='result']")).to_contain_text(hostile)
    assert page.locator("#drawer img, #drawer script").count() == 0
    assert page.dialogs == []


def test_a_link_to_a_task_opens_it(page, world):
    expect = playwright_api.expect
    httpx.post(f"{world.alpha_url}/agent/dispatcher/stop")
    try:
        task_id = httpx.post(f"{world.alpha_url}/agent/tasks", json={"title": "Linked task"}).json()["id"]
        page.goto(f"{world.url}/?task=alpha/{task_id}")
        expect(page.locator("#drawer")).to_be_visible()
        expect(page.locator("#drawer-title")).to_have_text("Linked task")
        expect(card(page, task_id)).to_have_class(re.compile("selected"))
        httpx.post(f"{world.alpha_url}/agent/tasks/{task_id}/cancel")
    finally:
        httpx.post(f"{world.alpha_url}/agent/dispatcher/start")


def test_keyboard_focus_and_open_details_survive_refreshes(page, world):
    # Its own card, which stays pending (and so in place) while the dispatcher is stopped: the
    # test needs nothing an earlier test left behind.
    expect = playwright_api.expect
    alpha = page.locator(".project[data-project='alpha']")
    httpx.post(f"{world.alpha_url}/agent/dispatcher/stop").raise_for_status()
    try:
        task_id = httpx.post(f"{world.alpha_url}/agent/tasks", json={"title": "Keeps the focus"}).json()["id"]
        expect(alpha.locator("[data-role='dispatcher-state']")).to_contain_text("dispatcher stopped")
        own = column(page, "pending").locator(f".card[data-id='{task_id}']")
        expect(own).to_be_visible()
        details = alpha.locator("details")
        details.locator("summary").click()
        expect(details.locator(".details-body")).to_contain_text("Recent commits")
        own.focus()
        key = own.get_attribute("data-key")
        # Another task arrives through the stream: the board is drawn again around the focused card.
        other = httpx.post(f"{world.alpha_url}/agent/tasks", json={"title": "Redraws the board"}).json()["id"]
        expect(card(page, other)).to_be_visible()
        expect(page.locator(f".card[data-key='{key}']")).to_be_focused()
        expect(details).to_have_attribute("open", "")
        page.keyboard.press("Enter")
        expect(page.locator("#drawer")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#drawer")).to_be_hidden()
        expect(page.locator(f".card[data-key='{key}']")).to_be_focused()  # focus returns to the card
        httpx.post(f"{world.alpha_url}/agent/tasks/{task_id}/cancel")
        httpx.post(f"{world.alpha_url}/agent/tasks/{other}/cancel")
    finally:
        httpx.post(f"{world.alpha_url}/agent/dispatcher/start")


def test_sign_in_and_log_out(browser, tmp_path):
    token = "browser-session-token-1234"
    repo = make_repo(tmp_path, "signed")
    (tmp_path / "projects.yaml").write_text(f"projects:\n  - id: signed\n    path: {repo}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml", "--port", str(port)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "BATON_DASHBOARD_TOKEN": token},
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "dashboard.err", "w"))
    context = browser.new_context()
    try:
        wait_for_http(f"{url}/api/health", dashboard)
        expect = playwright_api.expect
        tab = context.new_page()
        tab.goto(url)
        login = tab.locator("#login-dialog")
        expect(login).to_be_visible()
        login.locator("input[name='token']").fill(token)
        login.get_by_role("button", name="Sign in", exact=True).click()
        tab.wait_for_selector("body[data-board-ready='1']")
        [cookie] = [c for c in context.cookies() if c["name"] == "baton_session"]
        assert cookie["httpOnly"] and cookie["value"] != token
        signed_in = {"Cookie": f"baton_session={cookie['value']}"}
        assert httpx.get(f"{url}/api/projects", headers=signed_in).status_code == 200
        tab.get_by_role("button", name="Log out", exact=True).click()
        expect(login).to_be_visible()
        assert httpx.get(f"{url}/api/projects", headers=signed_in).status_code == 401  # ended on the server
        assert [c for c in context.cookies() if c["name"] == "baton_session"] == []
    finally:
        context.close()
        dashboard.send_signal(signal.SIGTERM)
        dashboard.wait(timeout=30)


def test_the_board_shows_the_merge_queue(browser, tmp_path):
    # Two finished tasks whose tests are held by a gate: the project card lists the queue in
    # landing order, the second tested on top of the first; it empties once both land.
    gate = tmp_path / "gate"
    repo = make_repo(tmp_path, "queued")
    (repo / "gated.py").write_text(f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.02)\n")
    for args in (["add", "gated.py"], ["commit", "-q", "-m", "gated tests"], ["push", "-q", "origin", "main"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    wrapper = tmp_path / "bin" / "claude"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CLAUDE} \"$@\"\n")
    wrapper.chmod(0o755)
    (repo / "agent.yaml").write_text(f"poll_interval_seconds: 0.5\nmax_parallel_tests: 2\n"
                                     f"test_command: {sys.executable} gated.py\nclaude_code:\n  command: {wrapper}\n")
    agent_port, port = free_port(), free_port()
    agent = AgentProcess(["--port", str(agent_port), "--project-dir", str(repo)], repo, tmp_path / "agent-logs",
                         {"FAKE_CLAUDE_STATE": str(tmp_path / "fake-state")})
    agent_url, url = f"http://127.0.0.1:{agent_port}", f"http://127.0.0.1:{port}"
    (tmp_path / "projects.yaml").write_text(f"projects:\n  - id: queued\n    agent_url: {agent_url}\n")
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml", "--port", str(port)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "dashboard.err", "w"))
    page = browser.new_page()
    try:
        wait_for_http(f"{agent_url}/agent/health", agent.proc)
        wait_for_http(f"{url}/api/health", dashboard)
        ids = [httpx.post(f"{agent_url}/agent/tasks", json=fake_task(
            f"Queued {name}", {"steps": [{"write": f"{name}.txt", "text": f"{name}\n"}]})).json()["id"]
            for name in ("one", "two")]
        queue = lambda: httpx.get(f"{agent_url}/agent/dispatcher").json()["merge_queue"]  # noqa: E731
        # Both agents run at once, so either may finish (and enter the queue) first.
        entries = wait_for(lambda: (q := queue()) and sorted(e["task_id"] for e in q) == sorted(ids)
                           and all(e["state"] == "testing" for e in q) and q,
                           timeout=60, what="both candidates under test")
        head, behind = entries
        assert behind["on_top_of"] == head["task_id"]
        expect = playwright_api.expect
        page.goto(url)
        strip = page.locator("[data-role='merge-queue']")
        expect(strip.locator("li")).to_have_count(2)
        expect(strip.locator(f"li[data-task='{head['task_id']}']")).to_have_attribute("data-state", "testing")
        expect(strip.locator(f"li[data-task='{behind['task_id']}']")).to_contain_text(
            f"{behind['title']} · testing on top of “{head['title']}”")
        gate.touch()
        expect(strip).to_have_count(0, timeout=60_000)  # both landed: the queue is gone from the card
        wait_for(lambda: {t["id"] for t in httpx.get(f"{agent_url}/agent/tasks").json()["completed"]} == set(ids),
                 timeout=30, what="both queued tasks to be completed")
    finally:
        gate.touch()
        page.close()
        dashboard.send_signal(signal.SIGTERM)
        dashboard.wait(timeout=30)
        agent.stop()
