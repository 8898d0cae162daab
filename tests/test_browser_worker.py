"""Where a task runs, on the board (issue 16, executor: dask): a running card says "on box-a", a
finished one "ran on box-a", a pending one "pinned to box-b" (its run_on), a task re-queued after
its worker was lost says so in words, and one that failed that way too; the drawer has the same
facts. Names are rendered as text. A dashboard over a local project whose agent.yaml says
`executor: dask` (its store on disk, written here as the dispatcher would), in Chromium."""

from __future__ import annotations

import os

import httpx
import pytest

from backend.models import Owner, TaskStatus
from backend.store import TaskStore
from board_world import Board
from browsing import playwright_or_skip

playwright_api = playwright_or_skip()
expect = playwright_api.expect

OWNER = Owner(pid=os.getpid(), host="test", instance="browser-worker")
HOSTILE = '<img src=x onerror="window.owned=1">box'


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    board = Board(tmp_path_factory.mktemp("worker"), agent=False)
    # Read by the dashboard at each create (a run_on is refused where turns run here).
    (board.repo / "agent.yaml").write_text("executor: dask\ndask:\n  scheduler: tcp://127.0.0.1:8786\n")
    board.store = TaskStore(board.repo / "data" / "dev-tasks.json")
    yield board
    board.close()


def create(world: Board, title: str, **fields) -> str:
    resp = httpx.post(f"{world.url}/api/projects/p/tasks", json={"title": title, **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def started_on(world: Board, task_id: str, worker: str) -> None:
    """Claimed, and its turn started on `worker` (as the dispatcher records it)."""
    assert world.store.claim(OWNER, 600, task_id=task_id) is not None
    world.store.update(task_id, worker=worker)


def card(page, status: str, task_id: str):
    return page.locator(f".column[data-status='{status}'] .card[data-id='{task_id}']")


def test_a_card_says_which_machine_runs_ran_or_will_run_it(page, world):
    pinned = create(world, "Pinned to b", run_on="box-b")
    running = create(world, "Running on a")
    done = create(world, "Done on a", run_on="box-a")
    started_on(world, running, "box-a")
    started_on(world, done, "box-a")
    world.store.transition(done, TaskStatus.completed)

    expect(card(page, "pending", pinned).locator("[data-role='run-on']")).to_have_text("pinned to box-b")
    expect(card(page, "pending", pinned).locator("[data-role='worker']")).to_have_count(0)
    expect(card(page, "in_progress", running).locator("[data-role='worker']")).to_have_text("on box-a")
    finished = card(page, "completed", done)
    expect(finished.locator("[data-role='worker']")).to_have_text("ran on box-a")
    expect(finished.locator("[data-role='run-on']")).to_have_count(0)  # it ran: where, not where it was meant to

    # The drawer says both.
    finished.click()
    expect(page.locator("#drawer-title")).to_have_text("Done on a")
    expect(page.locator("dd[data-field='machine']")).to_have_text("ran on box-a · pinned to box-a")


def test_a_task_requeued_after_its_worker_was_lost_says_so(page, world):
    lost = create(world, "Lost once", run_on="box-b")
    started_on(world, lost, "box-b")
    item = card(page, "in_progress", lost)
    expect(item.locator("[data-role='worker']")).to_have_text("on box-b")
    world.store.transition(lost, TaskStatus.pending, error_reason="worker_lost",
                           error_message="the worker box-b stopped answering (SIGSTOP)")
    item = card(page, "pending", lost)
    expect(item.locator("[data-role='requeued']")).to_have_text("its worker machine was lost; it was re-queued")
    expect(item.locator("[data-role='run-on']")).to_have_text("pinned to box-b")
    expect(item.locator("[data-role='worker']")).to_have_count(0)  # the lost box is not where it runs

    # After dask.max_attempts lost workers it fails: the card says it in words, the code in the title.
    started_on(world, lost, "box-b")
    world.store.transition(lost, TaskStatus.failed, error_reason="worker_lost", error_message="lost again")
    failed = card(page, "failed", lost)
    expect(failed.locator(".card-error")).to_have_text("its worker machine was lost, every attempt")
    expect(failed.locator(".card-error")).to_have_attribute("title", "worker_lost")
    expect(failed.locator("[data-role='requeued']")).to_have_count(0)


def test_a_worker_name_is_text_never_markup(page, world):
    """A worker names itself (dask worker --name): whatever it says is shown, never parsed."""
    task_id = create(world, "Odd worker")
    started_on(world, task_id, HOSTILE)
    item = card(page, "in_progress", task_id)
    expect(item.locator("[data-role='worker']")).to_have_text(f"on {HOSTILE}")
    expect(item.locator("img")).to_have_count(0)
    assert page.evaluate("() => window.owned") is None
