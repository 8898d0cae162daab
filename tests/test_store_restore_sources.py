"""Issue #7 (review): whichever process restores a missing store restores the last state written,
generations are never pruned in favour of an older store's, and a store with no usable good copy
is refused rather than started empty."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backend.models import NewTask
from backend.store import StoreCorruptError, TaskStore
from backend.storeview import view_path
from test_store_safety import kill_mid_write


@pytest.fixture
def path(tmp_path: Path) -> Path:
    store_path = tmp_path / "data" / "dev-tasks.json"
    TaskStore(store_path).initialize()
    return store_path


def test_a_process_with_an_older_memory_restores_the_last_write_of_another(path: Path):
    agent, dashboard = TaskStore(path), TaskStore(path)
    first = agent.create(NewTask(title="seen by both"))
    assert [t.id for t in dashboard.list_tasks()] == [first.id]  # the dashboard's memory stops here
    later = [agent.create(NewTask(title=f"acknowledged {i}")).id for i in range(2)]
    path.unlink()
    # The dashboard notices first; its memory lacks the agent's last two writes.
    assert [t.id for t in dashboard.list_tasks()] == [first.id, *later]
    assert [t.id for t in agent.list_tasks()] == [first.id, *later]


def test_a_store_put_back_with_a_lower_revision_keeps_its_generations(path: Path):
    store = TaskStore(path)
    for i in range(8):
        store.create(NewTask(title=f"before {i}"))
    # A person puts back an older copy of the store, written without a revision.
    doc = json.loads(path.read_bytes())
    path.write_text(json.dumps({"schema_version": 1, "tasks": doc["tasks"][:1]}))
    fresh = TaskStore(path)
    fresh.initialize()
    added = [fresh.create(NewTask(title=f"after {i}")).id for i in range(3)]
    path.unlink()
    # Restored from the put-back store's successors, not from the generations before it.
    assert [t.id for t in TaskStore(path).list_tasks()] == [doc["tasks"][0]["id"], *added]


def test_a_missing_store_whose_generations_are_all_damaged_is_refused_not_emptied(path: Path):
    store = TaskStore(path)
    for i in range(3):
        store.create(NewTask(title=f"t{i}"))
    for _, generation in store.generations.newest_first():
        generation.write_bytes(b"damaged")
    path.unlink()
    with pytest.raises(StoreCorruptError) as info:
        TaskStore(path).list_tasks()
    assert "missing" in info.value.problem and "no usable good copy" in info.value.problem
    assert not path.exists()  # nothing was started over it


def test_start_up_removes_leftovers_of_the_agents_copy_and_of_generations(path: Path):
    lock = path.with_name(path.name + ".lock")
    view = view_path(path)
    view.parent.mkdir()
    kill_mid_write(view, lock)
    # What a kill between making a generation's link and renaming it leaves: a full-size link.
    staged = path.parent / "store-generations" / ".dev-tasks.json.7.tmp"
    staged.parent.mkdir(exist_ok=True)
    os.link(path, staged)
    leftovers = [*view.parent.glob(".dev-tasks.json.*.tmp"), staged]
    assert len(leftovers) == 2

    TaskStore(path).initialize()
    assert not any(p.exists() for p in leftovers)
