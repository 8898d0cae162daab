"""Contract tests of TaskStore against a real file in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backend.mirrors import MirrorWriter
from backend.models import NewTask, Owner, TaskStatus, is_valid_task_id
from backend.store import (
    SCHEMA_VERSION,
    InvalidTransitionError,
    StoreCorruptError,
    StoreUnreadableError,
    TaskNotFoundError,
    TaskStore,
)

OWNER = Owner(pid=os.getpid(), host="test", instance="t1")


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "data" / "dev-tasks.json", tmp_path / "tasks"


@pytest.fixture
def store(paths) -> TaskStore:
    store_path, tasks_dir = paths
    s = TaskStore(store_path, mirrors=MirrorWriter(tasks_dir))
    s.initialize()
    return s


def new(title: str = "Do a thing", **kw) -> NewTask:
    return NewTask(title=title, **kw)


def read_doc(store: TaskStore) -> dict:
    return json.loads(store.path.read_bytes())


# ----- basics ---------------------------------------------------------------------------------


def test_initialize_creates_versioned_empty_store(store: TaskStore):
    doc = read_doc(store)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["tasks"] == []


def test_create_assigns_short_id_and_pending_and_persists(store: TaskStore, paths):
    task = store.create(new("Add login", content="details", task_type="bugfix", priority="high"))
    assert is_valid_task_id(task.id) and len(task.id) <= 32
    assert task.status is TaskStatus.pending
    assert task.created_at == task.updated_at
    assert task.attempts == 0
    # A fresh store object (no shared cache) reads the same task from disk.
    again = TaskStore(paths[0]).get(task.id)
    assert again == task
    assert read_doc(store)["tasks"][0]["title"] == "Add login"


def test_create_many_is_one_write(store: TaskStore):
    before = store.snapshot().revision
    tasks = store.create_many([new(f"t{i}") for i in range(5)])
    assert len({t.id for t in tasks}) == 5
    assert store.snapshot().revision == before + 1


def test_get_unknown_raises(store: TaskStore):
    with pytest.raises(TaskNotFoundError):
        store.get("nope")


def test_writes_leave_no_temp_files(store: TaskStore):
    for i in range(3):
        store.create(new(f"t{i}"))
    # store-generations/ holds the last good versions (tests/test_store_safety.py).
    assert sorted(p.name for p in store.path.parent.iterdir()) == [
        "dev-tasks.json", "dev-tasks.json.lock", "store-generations"]
    assert not [p for p in store.path.parent.rglob("*") if p.name.endswith((".tmp", ".link"))]


# ----- claiming -------------------------------------------------------------------------------


def test_claim_takes_most_urgent_then_oldest(store: TaskStore):
    low = store.create(new("low", priority="low"))
    first_high = store.create(new("high 1", priority="high"))
    second_high = store.create(new("high 2", priority="high"))
    order = [store.claim(OWNER, 60) for _ in range(3)]
    assert [t.id for t in order] == [first_high.id, second_high.id, low.id]
    assert store.claim(OWNER, 60) is None


def test_claim_sets_owner_lease_and_start(store: TaskStore):
    task = store.create(new())
    claimed = store.claim(OWNER, 30)
    assert claimed.id == task.id
    assert claimed.status is TaskStatus.in_progress
    assert claimed.owner == OWNER
    assert claimed.started_at is not None
    assert (claimed.lease_expires_at - claimed.heartbeat_at).total_seconds() == pytest.approx(30)


def test_claim_by_id_is_compare_and_set(store: TaskStore, paths):
    task = store.create(new())
    other = TaskStore(paths[0])  # another holder with its own cache
    assert other.claim(OWNER, 60, task_id=task.id).id == task.id
    assert store.claim(OWNER, 60, task_id=task.id) is None  # lost the race: nothing
    assert store.get(task.id).status is TaskStatus.in_progress


def test_threads_never_claim_the_same_task(store: TaskStore):
    store.create_many([new(f"t{i}") for i in range(60)])
    claimed: list[str] = []
    lock = threading.Lock()

    def worker():
        while (task := store.claim(OWNER, 60)) is not None:
            with lock:
                claimed.append(task.id)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 60 and len(set(claimed)) == 60


# ----- lifecycle ------------------------------------------------------------------------------


def test_completion_stamps_finish_and_clears_owner(store: TaskStore):
    task = store.create(new())
    store.claim(OWNER, 60)
    done = store.transition(task.id, TaskStatus.completed, commit_sha="abc123")
    assert done.status is TaskStatus.completed
    assert done.finished_at is not None and done.owner is None and done.lease_expires_at is None
    assert done.commit_sha == "abc123"


def test_illegal_transition_is_refused_and_changes_nothing(store: TaskStore):
    task = store.create(new())
    revision = store.snapshot().revision
    with pytest.raises(InvalidTransitionError):
        store.transition(task.id, TaskStatus.completed)  # pending cannot complete
    assert store.get(task.id).status is TaskStatus.pending
    assert store.snapshot().revision == revision


def test_completed_only_reopens_for_a_follow_up(store: TaskStore):
    """A completed task never goes back to running, failing or review; only a follow-up message
    makes it pending again (review.post_message)."""
    task = store.create(new())
    store.claim(OWNER, 60)
    store.transition(task.id, TaskStatus.completed)
    for target in TaskStatus:
        if target is TaskStatus.pending:
            continue
        with pytest.raises(InvalidTransitionError):
            store.transition(task.id, target)
    assert store.transition(task.id, TaskStatus.pending).status is TaskStatus.pending


def test_rerun_failed_clears_error_keeps_branch(store: TaskStore):
    task = store.create(new())
    store.claim(OWNER, 60)
    store.transition(
        task.id, TaskStatus.failed, error_reason="tests_failed", error_message="2 failed", branch=f"task/{task.id}"
    )
    again = store.rerun(task.id)
    assert again.status is TaskStatus.pending
    assert again.error_reason is None and again.error_message is None
    assert again.branch == f"task/{task.id}"
    assert again.finished_at is None


def test_rerun_refuses_pending(store: TaskStore):
    task = store.create(new())
    with pytest.raises(InvalidTransitionError, match="expected cancelled or failed"):
        store.rerun(task.id)


def test_cancel_pending_then_rerun(store: TaskStore):
    task = store.create(new())
    assert store.cancel(task.id).status is TaskStatus.cancelled
    assert store.rerun(task.id).status is TaskStatus.pending


def test_cancel_refuses_running_task(store: TaskStore):
    task = store.create(new())
    store.claim(OWNER, 60)
    with pytest.raises(InvalidTransitionError):
        store.cancel(task.id)


def test_update_cannot_change_status_and_validates(store: TaskStore):
    task = store.create(new())
    with pytest.raises(ValueError):
        store.update(task.id, status=TaskStatus.completed)
    updated = store.update(task.id, cost_usd=0.25, input_tokens=100)
    assert (updated.cost_usd, updated.input_tokens) == (0.25, 100)
    with pytest.raises(ValueError):
        store.update(task.id, input_tokens="many")
    assert store.get(task.id).input_tokens == 100


def test_update_with_expected_status(store: TaskStore):
    task = store.create(new())
    with pytest.raises(InvalidTransitionError):
        store.update(task.id, expect={TaskStatus.in_progress}, cost_usd=1.0)
    assert store.get(task.id).cost_usd is None


# ----- mirrors --------------------------------------------------------------------------------


def test_mirror_follows_status_changes(store: TaskStore, paths):
    tasks_dir = paths[1]
    task = store.create(new("Mirror me", content="body text"))
    pending = tasks_dir / "pending" / f"{task.id}.md"
    assert pending.read_text().startswith("# Mirror me\n")
    assert "body text" in pending.read_text()
    store.claim(OWNER, 60)
    store.transition(task.id, TaskStatus.failed, error_reason="timeout", error_message="ran 600s")
    assert not pending.exists()
    assert not (tasks_dir / "in_progress" / f"{task.id}.md").exists()
    failed_text = (tasks_dir / "failed" / f"{task.id}.md").read_text()
    assert "Failed (timeout): ran 600s" in failed_text


def test_mirrors_are_rebuilt_from_json_at_start(store: TaskStore, paths):
    store_path, tasks_dir = paths
    task = store.create(new("Truth"))
    (tasks_dir / "pending" / f"{task.id}.md").write_text("# edited by hand\n")
    (tasks_dir / "completed").mkdir(exist_ok=True)
    (tasks_dir / "completed" / f"{task.id}.md").write_text("# stale copy\n")
    (tasks_dir / "completed" / "zzzzstale.md").write_text("# no such task\n")
    (tasks_dir / "completed" / "notes.txt").write_text("not a mirror\n")

    TaskStore(store_path, mirrors=MirrorWriter(tasks_dir)).initialize()

    assert (tasks_dir / "pending" / f"{task.id}.md").read_text().startswith("# Truth\n")
    assert not (tasks_dir / "completed" / f"{task.id}.md").exists()
    assert not (tasks_dir / "completed" / "zzzzstale.md").exists()
    assert (tasks_dir / "completed" / "notes.txt").exists()


# ----- other writers, other forms -------------------------------------------------------------


def test_change_by_another_process_is_seen(store: TaskStore):
    task = store.create(new())
    store.create(new("untouched"))
    script = (
        "import sys; from backend.store import TaskStore; from backend.models import TaskStatus;"
        "TaskStore(sys.argv[1]).cancel(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", script, str(store.path), task.id], check=True)
    assert store.get(task.id).status is TaskStatus.cancelled
    assert len(store.list_tasks()) == 2


def test_hand_formatted_json_is_accepted_and_rewritten_canonically(store: TaskStore, paths):
    task = store.create(new())
    doc = read_doc(store)
    store.path.write_text(json.dumps(doc, indent=2))  # pretty-printed by a person
    fresh = TaskStore(paths[0])
    assert fresh.get(task.id).title == task.title
    fresh.create(new("second"))
    lines = store.path.read_bytes().split(b"\n")
    assert lines[0].startswith(b'{"schema_version":1') and lines[-2] == b"]}"
    assert len(read_doc(store)["tasks"]) == 2


def test_store_reached_through_symlink_shares_the_lock(tmp_path: Path, store: TaskStore):
    link_dir = tmp_path / "worktree" / "data"
    link_dir.mkdir(parents=True)
    (link_dir / "dev-tasks.json").symlink_to(store.path)
    linked = TaskStore(link_dir / "dev-tasks.json")
    assert linked.lock_path == store.lock_path
    task = linked.create(new("via link"))
    assert store.get(task.id).title == "via link"
    assert (link_dir / "dev-tasks.json").is_symlink()


# ----- corruption: refused, never overwritten -------------------------------------------------

CORRUPT = {
    "not json": (b'{"schema_version":1,"tasks":[', "not valid JSON"),
    "empty": (b"", "file is empty"),
    "list at top": (b"[]", "top level must be a JSON object"),
    "no version": (b'{"tasks":[]}', "missing schema_version"),
    "future version": (b'{"schema_version":99,"tasks":[]}', "unsupported schema_version 99"),
    "tasks not list": (b'{"schema_version":1,"tasks":{}}', "tasks must be a list"),
    "bad status": (
        b'{"schema_version":1,"tasks":[{"id":"abc","title":"x","status":"weird",'
        b'"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}]}',
        "tasks[0] (id 'abc'): status",
    ),
    "bad id": (
        b'{"schema_version":1,"tasks":[{"id":"../etc","title":"x",'
        b'"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}]}',
        "tasks[0] (id '../etc'): id",
    ),
    "duplicate id": (
        b'{"schema_version":1,"tasks":['
        b'{"id":"abc","title":"x","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"},\n'
        b'{"id":"abc","title":"y","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}]}',
        "duplicate id 'abc'",
    ),
    "unknown key": (b'{"schema_version":1,"tasks":[],"extra":1}', "unknown top-level key"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_store_is_refused_and_left_untouched(paths, case: str):
    store_path, tasks_dir = paths
    content, problem = CORRUPT[case]
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(content)
    store = TaskStore(store_path, mirrors=MirrorWriter(tasks_dir))
    with pytest.raises(StoreCorruptError) as info:
        store.initialize()
    assert str(store_path) in str(info.value)
    assert problem in str(info.value)
    with pytest.raises(StoreCorruptError):
        store.create(new())
    with pytest.raises(StoreCorruptError):
        store.claim(OWNER, 60)
    assert store_path.read_bytes() == content


def test_corruption_while_running_is_repaired_from_memory_and_kept_aside(store: TaskStore):
    # Issue #7 changed this: a process holding a good copy restores it (test_store_safety.py
    # has the details); a process without one still refuses, leaving the file untouched.
    first = store.create(new())
    garbage = b'{"schema_version":1,"tasks":[{"id":"abc"'
    store.path.write_bytes(garbage)
    with pytest.raises(StoreCorruptError):
        TaskStore(store.path).create(new("from a fresh process"))
    assert store.path.read_bytes() == garbage
    more = store.create(new("more"))
    assert [t.id for t in store.list_tasks()] == [first.id, more.id]
    [aside] = store.path.parent.glob("dev-tasks.json.damaged-*")
    assert aside.read_bytes() == garbage


def test_only_claim_can_start_a_task(store: TaskStore):
    task = store.create(new())
    with pytest.raises(InvalidTransitionError, match="only claim"):
        store.transition(task.id, TaskStatus.in_progress)
    assert store.get(task.id).status is TaskStatus.pending


def test_in_place_edit_below_an_unchanged_header_is_seen_not_overwritten(store: TaskStore):
    task = store.create(new("original"))
    store.get(task.id)  # cache is warm
    data = store.path.read_bytes()
    store.path.write_bytes(data.replace(b'"title":"original"', b'"title":"edited by hand"'))  # same first line
    assert store.get(task.id).title == "edited by hand"
    store.create(new("another"))
    assert {t["title"] for t in read_doc(store)["tasks"]} == {"edited by hand", "another"}


def test_corrupt_body_below_an_unchanged_header_is_seen(store: TaskStore):
    store.create(new())
    header = store.path.read_bytes().split(b"\n")[0]
    garbage = header + b"\nGARBAGE not json\n"
    store.path.write_bytes(garbage)
    # Seen although the header is unchanged: repaired, not served stale (nor overwritten blindly).
    assert len(store.list_tasks()) == 1
    [aside] = store.path.parent.glob("dev-tasks.json.damaged-*")
    assert aside.read_bytes() == garbage
    assert len(TaskStore(store.path).list_tasks()) == 1


def test_non_canonical_task_line_is_normalised_when_read(store: TaskStore, paths):
    task = store.create(new())
    lines = store.path.read_bytes().split(b"\n")
    lines[1] = (b'{"id":"%s","title":"short","created_at":"2026-01-01T01:00:00+01:00",'
                b'"updated_at":"2026-01-01T00:00:00Z"}' % task.id.encode())
    store.path.write_bytes(b"\n".join(lines))
    fresh = TaskStore(paths[0])
    got = fresh.get(task.id)
    assert got.created_at.isoformat() == "2026-01-01T00:00:00+00:00"
    served = json.loads(fresh.snapshot().task_json(task.id))
    assert served["content"] == "" and served["attempts"] == 0 and served["created_at"] == "2026-01-01T00:00:00Z"


def test_timestamps_without_a_time_zone_are_refused(store: TaskStore, paths):
    store.path.write_bytes(
        b'{"schema_version":1,"tasks":[{"id":"abc","title":"x","created_at":"2026-01-01T00:00:00",'
        b'"updated_at":"2026-01-01T00:00:00Z"}]}'
    )
    with pytest.raises(StoreCorruptError, match="created_at"):
        TaskStore(paths[0]).check()


def test_negative_revision_refused_in_any_formatting(store: TaskStore, paths):
    store.path.write_bytes(b'{"schema_version":1,"revision":-1,"write_id":"x","tasks":[\n]}\n')
    with pytest.raises(StoreCorruptError, match="revision"):
        TaskStore(paths[0]).check()


def test_mirrors_follow_changes_made_by_another_writer(store: TaskStore, paths):
    task = store.create(new())
    other = TaskStore(paths[0])  # e.g. another process: no mirrors of its own
    other.cancel(task.id)
    store.list_tasks()  # the mirrored store notices the new revision
    assert (paths[1] / "cancelled" / f"{task.id}.md").exists()
    assert not (paths[1] / "pending" / f"{task.id}.md").exists()


def test_claim_counts_attempts_and_rerun_starts_again(store: TaskStore):
    task = store.create(new())
    assert store.claim(OWNER, 60).attempts == 1
    store.transition(task.id, TaskStatus.pending)  # recovery after a crash
    assert store.claim(OWNER, 60).attempts == 2
    store.transition(task.id, TaskStatus.failed)
    assert store.rerun(task.id).attempts == 0


def test_store_file_stays_readable_by_others(store: TaskStore):
    store.create(new())
    assert store.path.stat().st_mode & 0o777 == 0o644


def test_unreadable_store_is_a_clear_error(paths):
    paths[0].parent.mkdir(parents=True)
    paths[0].mkdir()  # a folder where the file should be
    with pytest.raises(StoreUnreadableError, match="cannot be read"):
        TaskStore(paths[0]).initialize()
