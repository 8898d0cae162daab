"""Issue #7: finished tasks older than `archive_after_days` leave the live store for an
append-only archive that the API still reads."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from backend.archive import Archiver, archive_finished
from backend.mirrors import MirrorWriter
from backend.models import NewTask, Owner, TaskStatus, utcnow
from backend.store import TaskStore
from support import make_repo, wait_for

OWNER = Owner(pid=1, host="test", instance="t")


def finished(store: TaskStore, title: str, status: TaskStatus, days_ago: float) -> str:
    task = store.create(NewTask(title=title))
    if status is TaskStatus.cancelled:
        store.cancel(task.id)
    else:
        store.claim(OWNER, 60, task.id)
        extra = {"error_reason": "tests_failed", "error_message": "red"} if status is TaskStatus.failed else {}
        store.transition(task.id, status, **extra)
    store.update(task.id, finished_at=utcnow() - timedelta(days=days_ago))
    return task.id


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    s = TaskStore(tmp_path / "data" / "dev-tasks.json", mirrors=MirrorWriter(tmp_path / "tasks"))
    s.initialize()
    return s


def live_ids(store: TaskStore) -> set[str]:
    return {t["id"] for t in json.loads(store.path.read_bytes())["tasks"]}


def test_old_finished_tasks_leave_the_live_file_and_stay_readable(store: TaskStore, tmp_path: Path):
    old_done = finished(store, "old done", TaskStatus.completed, 30)
    old_failed = finished(store, "old failed", TaskStatus.failed, 8)
    recent = finished(store, "recent", TaskStatus.completed, 1)
    pending = store.create(NewTask(title="still to do")).id

    moved = archive_finished(store, 7)
    assert {t.id for t in moved} == {old_done, old_failed}
    assert live_ids(store) == {recent, pending}
    assert not (tmp_path / "tasks" / "completed" / f"{old_done}.md").exists()  # mirrors follow the live store
    # Another process (no index yet) still finds them, as they were.
    fresh = TaskStore(store.path)
    assert fresh.get(old_done).status is TaskStatus.completed
    assert fresh.get(old_failed).error_message == "red"
    assert archive_finished(store, 7) == []  # nothing left to move


def test_archiving_is_off_with_zero_days(store: TaskStore):
    old = finished(store, "old", TaskStatus.completed, 400)
    assert archive_finished(store, 0) == []
    assert Archiver(store, 0).run_if_due() == 0
    assert live_ids(store) == {old}


def test_archiver_runs_at_first_call_then_at_most_every_interval(store: TaskStore):
    now = [1000.0]
    archiver = Archiver(store, 7, every=3600, clock=lambda: now[0])
    first = finished(store, "first", TaskStatus.completed, 9)
    assert archiver.run_if_due() == 1
    finished(store, "second", TaskStatus.completed, 9)
    now[0] += 10
    assert archiver.run_if_due() == 0
    now[0] += 3600
    assert archiver.run_if_due() == 1
    assert first not in live_ids(store)


def test_a_task_in_both_places_counts_as_live(store: TaskStore):
    task_id = finished(store, "crash between append and live write", TaskStatus.failed, 30)
    store.archive.append([store.get(task_id)])  # what a crash right after the append leaves
    store.rerun(task_id)
    assert store.get(task_id).status is TaskStatus.pending
    assert store.archive.page(0, 10, exclude=store.snapshot().tasks) == (0, [])


def test_a_torn_archive_line_is_skipped_and_later_appends_stay_whole(store: TaskStore):
    first = finished(store, "first", TaskStatus.completed, 30)
    archive_finished(store, 7)
    with open(store.archive.path, "ab") as handle:
        handle.write(b'{"id":"torn","title":"cut off by a cra')  # a crash mid-append
    second = finished(store, "second", TaskStatus.completed, 30)
    archive_finished(store, 7)
    fresh = TaskStore(store.path)
    assert fresh.get(first).title == "first" and fresh.get(second).title == "second"
    assert fresh.archive.page(0, 10)[0] == 2


# ----- through the API ----------------------------------------------------------------------------


def test_api_reads_archived_tasks_pages_them_and_reruns_them(agent_factory, fake_cli, tmp_path):
    project = make_repo(tmp_path, "archived")
    seed = TaskStore(project / "data" / "dev-tasks.json", mirrors=MirrorWriter(project / "tasks"))
    seed.initialize()
    done = finished(seed, "done long ago", TaskStatus.completed, 30)
    failed = finished(seed, "failed long ago", TaskStatus.failed, 20)
    cancelled = finished(seed, "cancelled long ago", TaskStatus.cancelled, 10)
    recent = finished(seed, "done yesterday", TaskStatus.completed, 1)
    (project / "logs").mkdir()
    (project / "logs" / f"{done}.events.jsonl").write_text(
        json.dumps({"seq": 1, "ts": utcnow().isoformat(), "kind": "baton", "text": "landed"}) + "\n")

    # The dispatcher archives when it starts (then hourly): nothing to run, only to archive.
    agent = agent_factory(project=project, config=fake_cli.config(archive_after_days=7), dispatch=True)
    wait_for(lambda: live_ids(agent.store) == {recent}, what="old finished tasks to be archived")
    client = agent.client

    assert {t["id"] for t in client.get("/agent/tasks/completed").json()} == {recent}
    detail = client.get(f"/agent/tasks/completed/{done}.md")
    assert detail.status_code == 200 and detail.json()["title"] == "done long ago"
    assert detail.json()["markdown"].startswith("# done long ago")
    assert client.get(f"/agent/tasks/failed/{done}").status_code == 404  # the status must still match
    events = client.get(f"/agent/tasks/{done}/events")
    assert events.status_code == 200 and [e["text"] for e in events.json()["events"]] == ["landed"]

    page = client.get("/agent/archive", params={"offset": 0, "limit": 2}).json()
    assert page["total"] == 3 and page["offset"] == 0 and page["limit"] == 2
    assert len(page["tasks"]) == 2
    rest = client.get("/agent/archive", params={"offset": 2, "limit": 2}).json()
    assert {t["id"] for t in page["tasks"] + rest["tasks"]} == {done, failed, cancelled}
    assert client.get("/agent/archive", params={"limit": 0}).status_code == 422

    # Rerun brings an archived failed task back to the live store; a completed one stays final.
    rerun = client.post(f"/agent/tasks/{failed}/rerun")
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["status"] == "pending" and rerun.json()["error_message"] is None
    assert failed in live_ids(agent.store)
    assert client.get("/agent/archive").json()["total"] == 2
    assert client.post(f"/agent/tasks/{done}/cancel").status_code == 409
    assert client.post(f"/agent/tasks/{done}/rerun").status_code == 409
