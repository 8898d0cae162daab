"""backend/changefeed.py over a real TaskStore on disk: summaries, cursors and deltas, windows and
pages, usage buckets, and the event sequence of the change stream."""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backend.agent.schemas import TaskSummary
from backend.changefeed import ChangeFeed, change_events, summary
from backend.models import NewTask, Owner, TaskStatus, utcnow
from backend.store import TaskStore

OWNER = Owner(pid=1, host="here", instance="test")


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    store = TaskStore(tmp_path / "data" / "dev-tasks.json")
    store.initialize()
    return store


def finish(store: TaskStore, task_id: str, status: TaskStatus = TaskStatus.completed, **fields):
    store.claim(OWNER, 60, task_id=task_id)
    return store.transition(task_id, status, **fields)


def test_summary_carries_the_card_fields_and_drops_nulls_and_false(store):
    task = store.create(NewTask(title="Card", priority="high"))
    card = summary(task)
    assert card["id"] == task.id and card["title"] == "Card" and card["status"] == "pending"
    assert card["priority"] == "high" and card["runs"] == 0 and card["attempts"] == 0
    for dropped in ("needs_plan_review", "cost_estimated", "started_at", "error_reason", "cost_usd"):
        assert dropped not in card
    assert "content" not in card and "updated_at" not in card and "heartbeat_at" not in card


def test_a_cancelled_tasks_summary_says_why_and_a_rerun_drops_it(store):
    feed = ChangeFeed(store)
    task = store.create(NewTask(title="From an issue"))
    cursor = feed.changes(None)["cursor"]
    store.cancel(task.id, "ENG-4 moved to Done in Linear")
    delta = feed.changes(cursor)
    assert [t["id"] for t in delta["tasks"]] == [task.id]
    assert delta["tasks"][0]["status"] == "cancelled"
    assert delta["tasks"][0]["cancel_reason"] == "ENG-4 moved to Done in Linear"
    store.rerun(task.id)  # a rerun clears the reason: the card no longer says it
    again = feed.changes(delta["cursor"])
    assert again["tasks"][0]["status"] == "pending" and "cancel_reason" not in again["tasks"][0]
    # The agent's answers keep the field (the board's summaries are validated by TaskSummary).
    card = summary(store.cancel(task.id, "closed"))
    assert TaskSummary.model_validate(card).model_dump(exclude_none=True)["cancel_reason"] == "closed"


def test_sort_orders_pending_by_priority_then_age_and_the_rest_newest_first(store):
    low = store.create(NewTask(title="low", priority="low"))
    old = store.create(NewTask(title="old"))
    new = store.create(NewTask(title="new"))
    urgent = store.create(NewTask(title="urgent", priority="urgent"))
    pending = sorted((summary(store.get(t.id)) for t in (low, old, new, urgent)), key=lambda s: s["sort"])
    assert [s["title"] for s in pending] == ["urgent", "old", "new", "low"]

    first = finish(store, old.id)
    second = finish(store, new.id)
    done = sorted((summary(t) for t in (first, second)), key=lambda s: s["sort"])
    assert [s["title"] for s in done] == ["new", "old"]


def test_changes_since_a_cursor_are_the_changed_summaries_and_the_archived_ids(store):
    feed = ChangeFeed(store)
    a = store.create(NewTask(title="a"))
    b = store.create(NewTask(title="b"))
    start = feed.changes(None)
    assert start["reset"] and {t["id"] for t in start["tasks"]} == {a.id, b.id} and start["removed"] == []

    nothing = feed.changes(start["cursor"])
    assert not nothing["reset"] and nothing["tasks"] == [] and nothing["cursor"] == start["cursor"]

    finish(store, a.id, TaskStatus.failed, error_reason="agent_error")
    delta = feed.changes(start["cursor"])
    assert not delta["reset"] and [t["id"] for t in delta["tasks"]] == [a.id]
    assert delta["tasks"][0]["status"] == "failed" and delta["tasks"][0]["error_reason"] == "agent_error"
    assert delta["revision"] == store.snapshot().revision

    store.archive_finished(lambda task: task.id == a.id)
    gone = feed.changes(delta["cursor"])
    assert gone["removed"] == [a.id] and gone["tasks"] == []
    # From the older cursor: the archived task is reported as removed, not as changed.
    both = feed.changes(start["cursor"])
    assert both["removed"] == [a.id] and both["tasks"] == []

    store.rerun(a.id)  # back from the archive
    back = feed.changes(gone["cursor"])
    assert [t["id"] for t in back["tasks"]] == [a.id] and back["removed"] == []


def test_a_heartbeat_only_write_is_no_change(store):
    feed = ChangeFeed(store)
    task = store.create(NewTask(title="running"))
    store.claim(OWNER, 60, task_id=task.id)
    cursor = feed.changes(None)["cursor"]
    store.update(task.id, heartbeat_at=utcnow(), lease_expires_at=utcnow() + timedelta(seconds=60))
    quiet = feed.changes(cursor)
    assert quiet["tasks"] == [] and quiet["revision"] > int(cursor.split(".")[1])
    store.update(task.id, last_activity_at=utcnow())
    assert [t["id"] for t in feed.changes(quiet["cursor"])["tasks"]] == [task.id]


def test_cursors_the_feed_cannot_answer_reset(store, tmp_path):
    store.create(NewTask(title="before the feed"))
    early = store.snapshot().revision
    feed = ChangeFeed(store)
    current = feed.changes(None)
    epoch, revision = current["cursor"].split(".")
    store.create(NewTask(title="after"))
    assert not feed.changes(current["cursor"])["reset"]
    assert feed.changes(f"{'0' * 16}.{revision}")["reset"]  # another agent process
    assert feed.changes(f"{epoch}.{int(revision) + 100}")["reset"]  # newer than the store
    # Older than the first revision the feed saw: what changed before is unknown.
    reset = feed.changes(f"{epoch}.{early - 1}")
    assert reset["reset"] and len(reset["tasks"]) == 2
    with pytest.raises(ValueError):
        feed.changes("not-a-cursor")


def test_another_process_write_is_seen_on_the_next_call(store):
    feed = ChangeFeed(store)
    cursor = feed.changes(None)["cursor"]
    other = TaskStore(store.path)  # another writer: its writes do not call this store's listener
    task = other.create(NewTask(title="from elsewhere"))
    assert [t["id"] for t in feed.changes(cursor)["tasks"]] == [task.id]


def test_the_window_is_the_first_summaries_of_each_status(store):
    feed = ChangeFeed(store)
    ids = [store.create(NewTask(title=f"task {i}")).id for i in range(5)]
    for task_id in ids[:3]:
        finish(store, task_id)
    window = feed.changes(None, window=2)
    by_status: dict[str, list[str]] = {}
    for card in window["tasks"]:
        by_status.setdefault(card["status"], []).append(card["id"])
    assert by_status == {"pending": ids[3:5], "completed": [ids[2], ids[1]]}
    with pytest.raises(ValueError):
        feed.changes(None, window=0)


def test_summaries_page_through_a_column_and_search(store):
    feed = ChangeFeed(store)
    ids = [store.create(NewTask(title=f"Item {i}" + (" needle" if i % 2 else ""))).id for i in range(7)]
    first = feed.summaries("pending", None, limit=3)
    assert [t["id"] for t in first["tasks"]] == ids[:3] and first["more"]
    rest = feed.summaries("pending", first["tasks"][-1]["sort"], limit=10)
    assert [t["id"] for t in rest["tasks"]] == ids[3:] and not rest["more"]
    found = feed.summaries("pending", None, limit=2, q="NEEDLE")
    assert [t["id"] for t in found["tasks"]] == [ids[1], ids[3]] and found["more"]
    assert [t["id"] for t in feed.summaries("pending", None, q=ids[4])["tasks"]] == [ids[4]]
    assert [t["id"] for t in feed.summaries("pending", None, q=ids[4].upper())["tasks"]] == [ids[4]]
    assert feed.summaries("completed", None) == {"tasks": [], "more": False}


def test_usage_buckets_by_hour_over_live_and_archived_tasks(store):
    now = datetime.now(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)
    live = store.create(NewTask(title="live"))
    finish(store, live.id, cost_usd=0.5, input_tokens=100, output_tokens=10)
    archived = store.create(NewTask(title="archived"))
    finish(store, archived.id, TaskStatus.failed, cost_usd=0.25, input_tokens=50, output_tokens=5)
    ancient = store.create(NewTask(title="ancient"))
    finish(store, ancient.id, TaskStatus.failed, cost_usd=9.0)
    store.update(ancient.id, finished_at=now - timedelta(days=9))
    earlier = store.create(NewTask(title="yesterday"))
    finish(store, earlier.id, cost_usd=1.0, input_tokens=1, output_tokens=2)
    store.update(earlier.id, finished_at=now - timedelta(days=1))
    running = store.create(NewTask(title="running, already spent"))
    store.claim(OWNER, 60, task_id=running.id)
    store.update(running.id, cost_usd=0.125)

    feed = ChangeFeed(store)
    before = feed.usage()
    store.archive_finished(lambda task: task.id in (archived.id, ancient.id))
    assert feed.usage() == before  # the archived task still counts, once; the ancient one never
    hours = {h["hour"]: h for h in before["hours"]}
    this = hours[hour.strftime("%Y-%m-%dT%H:00:00Z")]
    assert this == {"hour": hour.strftime("%Y-%m-%dT%H:00:00Z"), "cost_usd": 0.875,
                    "input_tokens": 150, "output_tokens": 15, "tasks": 3}
    yesterday = hours[(hour - timedelta(days=1)).strftime("%Y-%m-%dT%H:00:00Z")]
    assert yesterday["cost_usd"] == 1.0 and yesterday["tasks"] == 1
    assert len(hours) == 2

    # A rerun brings the archived task back: it is counted from the live store, not twice.
    store.rerun(archived.id)
    def total(usage):
        return sum(h["cost_usd"] for h in usage["hours"]), sum(h["tasks"] for h in usage["hours"])
    assert total(feed.usage()) == total(before) == (1.875, 4)
    # Appended to the archive by another process: read on the next call.
    other = TaskStore(store.path)
    late = other.create(NewTask(title="late"))
    finish(other, late.id, cost_usd=2.0)
    other.archive_finished(lambda task: task.id == late.id)
    assert total(feed.usage()) == (3.875, 5)


def test_change_events_state_first_then_changes_woken_by_writes(store):
    feed = ChangeFeed(store)
    existing = store.create(NewTask(title="existing"))
    events: list[tuple] = []
    writer = threading.Thread(target=lambda: store.create(NewTask(title="new")))

    def state() -> dict:  # as the agent's counts: follows the store
        return {"n": len(store.list_tasks())}

    async def disconnected() -> bool:
        if not writer.is_alive() and writer.ident is None:
            writer.start()  # once the stream caught up and is about to wait: a write in another thread
        return len(events) >= 4

    async def run():
        # A long poll: the write must wake the stream through the store listener.
        async for item in change_events(feed, state, None, 100, disconnected,
                                        poll_seconds=3600, keepalive_seconds=3600):
            events.append(item)

    asyncio.run(asyncio.wait_for(run(), timeout=30))
    writer.join()
    names = [name for name, _, _ in events]
    assert names[:2] == ["state", "changes"]
    assert events[0][1] == {"n": 1} and events[1][1]["reset"] and events[1][2] == events[1][1]["cursor"]
    assert [t["id"] for t in events[1][1]["tasks"]] == [existing.id]
    # The write: its change, then the state that changed with it (state is compared after each change).
    assert names[2:4] == ["changes", "state"] and events[3][1] == {"n": 2}
    assert [t["title"] for t in events[2][1]["tasks"]] == ["new"] and not events[2][1]["reset"]


def test_change_events_resume_quietly_and_keep_alive(store):
    store.create(NewTask(title="seen before"))
    feed = ChangeFeed(store)
    cursor = feed.changes(None)["cursor"]
    events: list[tuple] = []

    async def disconnected() -> bool:
        return len(events) >= 3

    async def run():
        async for item in change_events(feed, lambda: {"same": True}, cursor, 100, disconnected,
                                        poll_seconds=0.05, keepalive_seconds=0.1):
            events.append(item)

    asyncio.run(asyncio.wait_for(run(), timeout=30))
    # Nothing changed since the cursor: no `changes` event, only keep-alives after the state.
    assert events == [("state", {"same": True}, None), ("", None, None), ("", None, None)]


def test_a_store_put_back_to_an_older_revision_starts_a_new_epoch(store, tmp_path):
    feed = ChangeFeed(store)
    store.create(NewTask(title="kept"))
    saved = store.path.read_bytes()
    store.create(NewTask(title="lost when the file is put back"))
    cursor = feed.changes(None)["cursor"]
    (tmp_path / "by-hand").write_bytes(saved)
    (tmp_path / "by-hand").replace(store.path)  # a person restores an older copy
    after = feed.changes(cursor)
    assert after["reset"] and after["cursor"].split(".")[0] != cursor.split(".")[0]
    assert [t["title"] for t in after["tasks"]] == ["kept"]


def test_when_old_removals_are_forgotten_older_cursors_reset(store, monkeypatch):
    monkeypatch.setattr("backend.changefeed._REMOVED_KEPT", 1)
    feed = ChangeFeed(store)
    a, b = (store.create(NewTask(title=t)).id for t in ("a", "b"))
    finish(store, a)
    finish(store, b)
    before = feed.changes(None)["cursor"]
    store.archive_finished(lambda task: task.id == a)
    middle = feed.changes(before)
    assert middle["removed"] == [a]
    store.archive_finished(lambda task: task.id == b)  # `a`'s removal is forgotten
    assert feed.changes(before)["reset"]
    assert feed.changes(middle["cursor"])["removed"] == [b]


def test_a_bulk_create_shows_pending_in_the_order_claims_take_it(tmp_path):
    # Equal priority: claims take the oldest first, i.e. the first in the store; the board's
    # pending order (`sort`) must be the same, also within one bulk create (same instant).
    store = TaskStore(tmp_path / "data" / "dev-tasks.json")
    store.initialize()
    created = store.create_many([NewTask(title=f"Bulk task {i:02d}") for i in range(40)])
    feed = ChangeFeed(store)
    shown = [item["id"] for item in feed.summaries("pending", None, limit=100)["tasks"]]
    owner = Owner(pid=os.getpid(), host="test", instance="feed")
    claimed = [store.claim(owner, 60).id for _ in range(40)]
    assert shown == claimed == [task.id for task in created]
