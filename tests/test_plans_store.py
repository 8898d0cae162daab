"""Plan files (backend/plans/store.py), running a plan and its state following its tasks
(backend/plans/run.py, follow.py), on real folders and a real task store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.models import NewTask, Owner, TaskStatus, utcnow
from backend.plans import store as plan_store_module
from backend.plans.follow import Memory, PlanFollower, sync
from backend.plans.model import PlanDraft
from backend.plans.run import delete_plan, idempotency_key, new_tasks, run_plan
from backend.plans.store import PlanError, PlanStore, encode
from backend.plans.views import plan_list, plan_view
from backend.store import TaskStore
from support import wait_for

OWNER = Owner(pid=os.getpid(), host="test", instance="plans")


def draft(title: str = "Ship it", **edges: list[str]) -> PlanDraft:
    """A plan whose tasks are the keys of `edges`, each depending on the refs listed."""
    edges = edges or {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    return PlanDraft(title=title, summary="why", tasks=[
        {"ref": ref, "title": f"Task {ref}", "content": f"do {ref}", "depends_on": deps}
        for ref, deps in edges.items()])


@pytest.fixture
def plans(tmp_path: Path) -> PlanStore:
    (tmp_path / "project").mkdir()
    return PlanStore(tmp_path / "project")


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    store = TaskStore(tmp_path / "project" / "data" / "dev-tasks.json")
    store.initialize()
    return store


def refused(code: str, fn, *args) -> PlanError:
    with pytest.raises(PlanError) as caught:
        fn(*args)
    assert caught.value.code == code, caught.value.message
    return caught.value


def files(plans: PlanStore) -> list[str]:
    return sorted(str(p.relative_to(plans.folder)) for p in plans.folder.glob("*/*"))


# ----- validation -------------------------------------------------------------------------

@pytest.mark.parametrize("tasks, problem", [
    ([{"ref": "a", "title": "A"}, {"ref": "a", "title": "B"}], "tasks[1].ref 'a' is also the ref of tasks[0]"),
    ([{"ref": "a", "title": "A", "depends_on": ["zz"]}], "depends on 'zz', which is no task of this plan"),
    ([{"ref": "a", "title": "A", "depends_on": ["a"]}], "tasks[0] (a) depends on itself"),
    ([{"ref": "a", "title": "A", "depends_on": ["c"]}, {"ref": "b", "title": "B", "depends_on": ["a"]},
      {"ref": "c", "title": "C", "depends_on": ["b"]}], "depends_on makes a cycle: a -> c -> b -> a"),
    ([], "at least 1 item"),
    ([{"ref": "-x", "title": "A"}], "String should match pattern"),
    ([{"ref": "a", "title": "   "}], "must not be blank"),
])
def test_a_plan_that_cannot_run_is_refused_with_its_problem(tasks, problem):
    with pytest.raises(ValidationError) as caught:
        PlanDraft(title="P", tasks=tasks)
    assert problem in str(caught.value)


def test_a_plan_title_is_one_line():
    assert PlanDraft(title="  Tidy  ", tasks=[{"ref": "a", "title": "A"}]).title == "Tidy"
    for bad in ("", "   ", "two\nlines"):
        with pytest.raises(ValidationError):
            PlanDraft(title=bad, tasks=[{"ref": "a", "title": "A"}])


# ----- files, states, revisions ------------------------------------------------------------

def test_a_plan_is_a_file_in_the_folder_of_its_state(plans):
    plan = plans.create(draft(), chat_id="chat1")
    assert (plan.state, plan.revision, plan.chat_id) == ("draft", 1, "chat1")
    assert files(plans) == [f"draft/{plan.id}.json"]
    on_disk = json.loads((plans.folder / "draft" / f"{plan.id}.json").read_text())
    assert on_disk["format"] == 1 and on_disk["id"] == plan.id and on_disk["tasks"][3]["depends_on"] == ["b", "c"]
    assert plans.get(plan.id) == plan

    approved = plans.approve(plan.id, 1)
    assert (approved.state, approved.revision) == ("ready", 2)
    assert files(plans) == [f"ready/{plan.id}.json"]  # moved, not copied
    reopened = plans.reopen(plan.id)
    assert (reopened.state, reopened.revision) == ("draft", 3)
    assert files(plans) == [f"draft/{plan.id}.json"]
    assert [p.id for p in plans.listing().plans] == [plan.id] and plans.listing().invalid == []


def test_edits_name_the_revision_they_were_made_on(plans):
    plan = plans.create(draft())
    edited = plans.edit(plan.id, 1, draft("Renamed", a=[], b=["a"]))
    assert (edited.title, edited.revision, [t.ref for t in edited.tasks]) == ("Renamed", 2, ["a", "b"])
    assert edited.created_at == plan.created_at and edited.updated_at > plan.updated_at
    # Someone else's edit on the old revision is refused, and changes nothing.
    error = refused("stale_plan", plans.edit, plan.id, 1, draft("Mine"))
    assert "revision 2, not 1" in error.message
    refused("stale_plan", plans.approve, plan.id, 1)
    assert plans.get(plan.id).title == "Renamed"
    plans.approve(plan.id, 2)
    refused("plan_not_editable", plans.edit, plan.id, 3, draft("Late"))
    refused("invalid_plan_state", plans.approve, plan.id, 3)
    refused("not_found", plans.get, "nosuchplan")
    refused("not_found", plans.get, "../etc")


def test_delete_removes_the_file_but_never_an_executing_plan(plans, store):
    kept = plans.create(draft())
    gone = plans.create(draft())
    plans.delete(gone.id)
    refused("not_found", plans.get, gone.id)
    plans.approve(kept.id, 1)
    run_plan(plans, store, kept.id)
    refused("invalid_plan_state", plans.delete, kept.id)
    assert files(plans) == [f"executing/{kept.id}.json"]


# ----- files that are not plans --------------------------------------------------------------

def test_a_damaged_file_is_listed_with_its_problem_and_never_touched(plans, monkeypatch):
    good = plans.create(draft())
    (plans.folder / "ready").mkdir()
    damaged = {
        "draft/broken1.json": b'{"format": 1, "id": "broken1", "tit',
        "draft/future1.json": json.dumps({"format": 2, "id": "future1"}).encode(),
        "draft/noformat1.json": json.dumps({"id": "noformat1"}).encode(),
        "draft/shape1.json": json.dumps({"format": 1, "id": "shape1", "title": "x"}).encode(),
        "draft/Bad Name.json": b"{}",
        "draft/named1.json": encode(good.model_copy(update={"id": "other1"})),
        "ready/moved1.json": encode(good.model_copy(update={"id": "moved1"})),
    }
    for name, data in damaged.items():
        (plans.folder / name).write_bytes(data)
    (plans.folder / "draft" / "notes.txt").write_text("not a plan file name, not ours")

    problems = {i.file.removeprefix("plans/"): i.problem for i in plans.listing().invalid}
    assert set(problems) == set(damaged)
    assert problems["draft/broken1.json"].startswith("not valid JSON")
    assert problems["draft/future1.json"] == "format 2 is not one this Baton reads (it reads format 1)"
    assert problems["draft/noformat1.json"].startswith("no `format`")
    assert problems["draft/shape1.json"].startswith("not a valid plan: ")
    assert "plan id" in problems["draft/Bad Name.json"]
    assert problems["draft/named1.json"] == "its id is 'other1' but the file is named named1.json"
    assert problems["ready/moved1.json"] == "its state is 'draft' but it lies in plans/ready/"
    assert [p.id for p in plans.listing().plans] == [good.id]

    # Asked for by id: refused with the problem; a new plan never takes a damaged file's id.
    error = refused("plan_invalid", plans.get, "broken1")
    assert "plans/draft/broken1.json: not valid JSON" in error.message
    refused("plan_invalid", plans.edit, "future1", 1, draft())
    refused("plan_invalid", plans.delete, "broken1")
    ids = iter(["broken1", "future1", "fresh1"])
    monkeypatch.setattr(plan_store_module, "new_task_id", lambda: next(ids))
    assert plans.create(draft()).id == "fresh1"
    for name, data in damaged.items():
        assert (plans.folder / name).read_bytes() == data  # byte for byte as it was


# ----- an interrupted state change ----------------------------------------------------------

def test_the_newer_copy_of_a_plan_in_two_folders_wins_and_the_older_goes(plans):
    plan = plans.create(draft())
    approved = plans.approve(plan.id, 1)
    # A crash after writing ready/ and before removing draft/ leaves both.
    (plans.folder / "draft" / f"{plan.id}.json").write_bytes(encode(plan))
    assert plans.get(plan.id) == approved
    assert files(plans) == [f"ready/{plan.id}.json"]

    # Listing repairs it too; with equal revisions the later updated_at wins.
    later = approved.model_copy(update={"state": "draft", "updated_at": approved.updated_at.replace(year=2099)})
    (plans.folder / "draft" / f"{plan.id}.json").write_bytes(encode(later))
    assert [(p.id, p.state) for p in plans.listing().plans] == [(plan.id, "draft")]
    assert files(plans) == [f"draft/{plan.id}.json"]


def test_a_valid_copy_beside_a_damaged_one_is_read_but_not_changed(plans):
    plan = plans.create(draft())
    (plans.folder / "ready").mkdir()
    (plans.folder / "ready" / f"{plan.id}.json").write_text("{ half written by hand")
    assert plans.get(plan.id) == plan
    error = refused("plan_invalid", plans.approve, plan.id, 1)
    assert f"plans/ready/{plan.id}.json" in error.message
    assert (plans.folder / "ready" / f"{plan.id}.json").read_text() == "{ half written by hand"
    assert [i.file for i in plans.listing().invalid] == [f"plans/ready/{plan.id}.json"]


# ----- running and following ---------------------------------------------------------------

def finish(store: TaskStore, task_id: str, status: TaskStatus, **fields) -> None:
    store.claim(OWNER, 60, task_id=task_id)
    store.transition(task_id, status, **fields)


def test_run_creates_every_task_in_one_write_with_dependencies_by_id(plans, store):
    plan = plans.approve(plans.create(draft()).id, 1)
    revision_before = store.snapshot().revision
    running = run_plan(plans, store, plan.id)
    assert store.snapshot().revision == revision_before + 1  # one write
    assert running.state == "executing" and set(running.task_ids) == {"a", "b", "c", "d"}
    ids = running.task_ids
    tasks = {ref: store.get(task_id) for ref, task_id in ids.items()}
    assert tasks["d"].depends_on == [ids["b"], ids["c"]] and tasks["a"].depends_on == []
    assert {(t.ref, t.plan_id, t.title, t.content) for t in tasks.values()} == {
        (r, plan.id, f"Task {r}", f"do {r}") for r in ids}
    assert files(plans) == [f"executing/{plan.id}.json"]
    refused("invalid_plan_state", run_plan, plans, store, plan.id)  # a second click
    assert len(store.list_tasks()) == 4
    draft_only = plans.create(draft())
    error = refused("invalid_plan_state", run_plan, plans, store, draft_only.id)
    assert "approve it first" in error.message


def test_a_run_interrupted_after_the_tasks_were_created_is_completed_not_repeated(plans, store):
    plan = plans.approve(plans.create(draft()).id, 1)
    # The crash: tasks created, plan file still ready.
    created = store.create_many(new_tasks(plan), idempotency_key=idempotency_key(plan), plan_id=plan.id)
    assert plans.get(plan.id).state == "ready"
    (repaired,) = sync(plans, store)  # what the agent does at start
    assert repaired.state == "executing" and repaired.task_ids == {t.ref: t.id for t in created}
    assert len(store.list_tasks()) == 4

    # Or the person clicks Run again before any follower ran: the same tasks, recorded.
    other = plans.approve(plans.create(draft()).id, 1)
    first = store.create_many(new_tasks(other), idempotency_key=idempotency_key(other), plan_id=other.id)
    assert run_plan(plans, store, other.id).task_ids == {t.ref: t.id for t in first}
    assert len(store.list_tasks()) == 8


def test_a_plan_with_a_damaged_file_creates_no_tasks(plans, store):
    plan = plans.approve(plans.create(draft()).id, 1)
    (plans.folder / "executing").mkdir()
    (plans.folder / "executing" / f"{plan.id}.json").write_text("[]")
    refused("plan_invalid", run_plan, plans, store, plan.id)
    assert store.list_tasks() == [] and plans.get(plan.id).state == "ready"


def test_a_plan_is_done_when_all_its_tasks_completed(plans, store):
    plan = run_plan(plans, store, plans.approve(plans.create(draft()).id, 1).id)
    ids = plan.task_ids
    for ref in ("a", "b", "c"):
        finish(store, ids[ref], TaskStatus.completed)
        assert sync(plans, store) == [] and plans.get(plan.id).state == "executing"
    finish(store, ids["d"], TaskStatus.completed)
    (done,) = sync(plans, store)
    assert (done.state, done.reason) == ("done", None)
    assert files(plans) == [f"done/{plan.id}.json"]


def test_a_failed_task_fails_the_plan_and_its_rerun_resumes_it(plans, store):
    plan = run_plan(plans, store, plans.approve(plans.create(draft()).id, 1).id)
    ids = plan.task_ids
    finish(store, ids["a"], TaskStatus.completed)
    finish(store, ids["b"], TaskStatus.failed, error_reason="tests_failed", error_message="2 tests failed")
    (failed,) = sync(plans, store)
    assert failed.state == "failed"
    assert failed.reason == f"b ({ids['b']}, “Task b”) failed: 2 tests failed"
    assert store.get(ids["d"]).status is TaskStatus.blocked
    assert files(plans) == [f"failed/{plan.id}.json"]

    store.rerun(ids["b"])
    (resumed,) = sync(plans, store)
    assert (resumed.state, resumed.reason) == ("executing", None)
    store.cancel(ids["c"])
    assert sync(plans, store)[0].reason == f"c ({ids['c']}, “Task c”) was cancelled"


def test_the_follower_moves_plans_after_store_writes(plans, store):
    follower = PlanFollower(plans, store)
    follower.start()
    try:
        plan = run_plan(plans, store, plans.approve(plans.create(draft(a=[])).id, 1).id)
        finish(store, plan.task_ids["a"], TaskStatus.completed)
        wait_for(lambda: plans.get(plan.id).state == "done", timeout=10, what="the plan to be done")
    finally:
        follower.stop()


# ----- the plans folder cannot be used --------------------------------------------------------

def test_a_plans_path_that_is_not_a_folder_is_a_problem_not_no_plans(plans):
    plans.folder.write_text("someone's notes")
    (problem,) = plans.listing().invalid
    assert (problem.file, problem.problem) == ("plans", "not a folder: remove or rename it")
    assert plans.listing().plans == []
    error = refused("plans_unavailable", plans.create, draft())
    assert error.status == 503 and str(plans.folder) in error.message and "not a folder" in error.message
    refused("plans_unavailable", plans.get, "abc")
    assert plans.folder.read_text() == "someone's notes"

    # A file where a state folder should be: the other states still work, that one is a problem.
    plans.folder.unlink()
    kept = plans.create(draft())
    (plans.folder / "ready").write_text("not a folder")
    error = refused("plans_unavailable", plans.approve, kept.id, 1)
    assert f"{plans.folder / 'ready'}: not a folder" in error.message
    assert plans.get(kept.id) == kept  # nothing moved
    assert [(i.file, i.problem) for i in plans.listing().invalid] == [
        ("plans/ready", "not a folder: remove or rename it")]
    assert [p.id for p in plans.listing().plans] == [kept.id]


# ----- links under plans/ are never followed --------------------------------------------------

def tree(folder: Path) -> dict[str, bytes | str]:
    """Everything under `folder`: files by content, links by target."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        found[key] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return found


def test_links_under_plans_are_never_read_written_or_removed_through(plans, store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    plan = plans.approve(plans.create(draft()).id, 1)
    stale = plans.create(draft())
    # What a commit could bring: plans/executing -> a folder outside the project holding a plan
    # file, and an older copy of a plan (which repair would remove were the link followed).
    lure = plan.model_copy(update={"id": "lure1", "state": "executing"})
    (outside / "lure1.json").write_bytes(encode(lure))
    (outside / f"{plan.id}.json").write_bytes(b"precious, not a plan")
    (outside / f"{stale.id}.json").write_bytes(encode(stale.model_copy(update={"state": "executing"})))
    (plans.folder / "executing").symlink_to(outside)
    before = tree(outside)

    listing = plans.listing()
    assert sorted(p.id for p in listing.plans) == sorted([plan.id, stale.id])
    assert [(i.file, i.problem.split(":")[0]) for i in listing.invalid] == [("plans/executing", "a symbolic link")]
    assert plans.get(stale.id) == stale  # the copy behind the link is neither the plan nor removed
    plans.edit(stale.id, 1, draft("Edited"))

    # Running would write through the link: refused before any task is created.
    error = refused("plans_unavailable", run_plan, plans, store, plan.id)
    assert error.status == 503 and "symbolic link" in error.message and str(plans.folder / "executing") in error.message
    assert store.list_tasks() == [] and plans.get(plan.id).state == "ready"
    assert sync(plans, store) == []
    plans.delete(stale.id)
    assert tree(outside) == before

    # A plan file that is a link: invalid, never read, changed or removed.
    lure_draft = plan.model_copy(update={"id": "lure2", "state": "draft"})
    (outside / "lure2.json").write_bytes(encode(lure_draft))
    (plans.folder / "draft" / "lure2.json").symlink_to(outside / "lure2.json")
    before = tree(outside)
    assert ("plans/draft/lure2.json", "a symbolic link") in [(i.file, i.problem.split(":")[0])
                                                             for i in plans.listing().invalid]
    refused("plan_invalid", plans.get, "lure2")
    refused("plan_invalid", plans.edit, "lure2", 1, draft())
    refused("plan_invalid", plans.delete, "lure2")
    assert tree(outside) == before and (plans.folder / "draft" / "lure2.json").is_symlink()

    # The lock file as a link: never opened (an older filelock truncated what it opened).
    (outside / "victim").write_text("keep me")
    os.rename(plans.folder / ".plans.lock", tmp_path / "lock-aside")
    (plans.folder / ".plans.lock").symlink_to(outside / "victim")
    error = refused("plans_unavailable", plans.create, draft())
    assert ".plans.lock: a symbolic link" in error.message
    assert (outside / "victim").read_text() == "keep me"

    # plans/ itself as a link.
    other = tmp_path / "other"
    (other / "project").mkdir(parents=True)
    linked = PlanStore(other / "project")
    linked.folder.symlink_to(outside)
    before = tree(outside)
    assert [(i.file, i.problem.split(":")[0]) for i in linked.listing().invalid] == [("plans", "a symbolic link")]
    refused("plans_unavailable", linked.create, draft())
    assert tree(outside) == before


# ----- running on the revision shown; deleting after an interrupted run ----------------------

def test_run_names_the_revision_it_was_asked_on(plans, store):
    plan = plans.approve(plans.create(draft()).id, 1)
    error = refused("stale_plan", run_plan, plans, store, plan.id, 1)
    assert "revision 2, not 1" in error.message
    assert store.list_tasks() == [] and plans.get(plan.id).state == "ready"
    assert run_plan(plans, store, plan.id, 2).state == "executing"


def test_a_ready_plan_whose_tasks_exist_is_not_deleted(plans, store):
    plan = plans.approve(plans.create(draft()).id, 1)
    created = store.create_many(new_tasks(plan), idempotency_key=idempotency_key(plan), plan_id=plan.id)
    error = refused("invalid_plan_state", delete_plan, plans, store, plan.id)
    assert "is executing" in error.message and "would orphan them" in error.message
    recorded = plans.get(plan.id)  # caught up: it is executing, its tasks recorded
    assert (recorded.state, recorded.task_ids) == ("executing", {t.ref: t.id for t in created})
    gone = plans.approve(plans.create(draft()).id, 1)
    delete_plan(plans, store, gone.id)  # a ready plan that never ran goes
    refused("not_found", plans.get, gone.id)


# ----- following done plans ------------------------------------------------------------------

def test_a_done_plan_follows_a_task_a_follow_up_reopened(plans, store):
    plan = run_plan(plans, store, plans.approve(plans.create(draft(a=[], b=["a"])).id, 1).id)
    ids = plan.task_ids
    finish(store, ids["a"], TaskStatus.completed)
    finish(store, ids["b"], TaskStatus.completed)
    assert sync(plans, store)[0].state == "done"
    # The first task leaves the live store: the plan stays done (and still shows it completed).
    store.archive_finished(lambda t: t.id == ids["a"])
    assert sync(plans, store) == [] and plans.get(plan.id).state == "done"
    assert plan_view(plans.get(plan.id), store)["task_status"] == {"a": "completed", "b": "completed"}

    store.transition(ids["b"], TaskStatus.pending)  # a follow-up message starts another run
    (reopened,) = sync(plans, store)
    assert (reopened.state, reopened.reason) == ("executing", None)
    finish(store, ids["b"], TaskStatus.failed, error_message="the follow-up broke it")
    (failed,) = sync(plans, store)
    assert failed.state == "failed" and failed.reason.endswith("failed: the follow-up broke it")
    store.rerun(ids["b"])
    finish(store, ids["b"], TaskStatus.completed)
    assert sync(plans, store)[0].state == "done"


# ----- a pass reads only what changed ---------------------------------------------------------

def counted(monkeypatch, owner, name: str) -> list:
    calls: list = []
    original = getattr(owner, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, counting)
    return calls


def test_a_pass_reads_only_what_changed_since_the_last(plans, store, monkeypatch):
    ran = []
    for _ in range(4):
        plan = run_plan(plans, store, plans.approve(plans.create(draft(a=[], b=["a"])).id, 1).id)
        finish(store, plan.task_ids["a"], TaskStatus.failed, error_message="no")
        ran.append(plan)
    memory = Memory()
    assert [p.state for p in sync(plans, store, memory)] == ["failed"] * 4
    parsed = counted(monkeypatch, plans, "_parse")
    gets = counted(monkeypatch, store, "get")
    archived = counted(monkeypatch, store.archive, "get")
    assert sync(plans, store, memory) == []  # the pass after its own moves: reads the 4 moved files
    assert (len(parsed), len(gets), len(archived)) == (4, 0, 0)

    # Writes a plan does not depend on (another task, a heartbeat of a plan's task): nothing is read.
    parsed.clear()
    store.create(NewTask(title="not in a plan"))
    store.update(ran[0].task_ids["b"], last_activity_at=utcnow())
    assert sync(plans, store, memory) == []
    assert (len(parsed), len(gets), len(archived)) == (0, 0, 0)

    # A status change: one snapshot, no file read again, the changed plan written; the next pass
    # reads that one file.
    store.rerun(ran[0].task_ids["a"])
    (resumed,) = sync(plans, store, memory)
    assert (resumed.id, resumed.state) == (ran[0].id, "executing")
    assert (len(parsed), len(gets), len(archived)) == (0, 0, 0)
    assert sync(plans, store, memory) == [] and len(parsed) == 1

    # A failed task archived: looked up there once per pass; the plan stays failed.
    store.archive_finished(lambda t: t.id == ran[1].task_ids["a"])
    assert sync(plans, store, memory) == []
    assert len(archived) == 1 and plans.get(ran[1].id).reason.endswith("failed: no")
    # A hand edit of a followed file is seen.
    path = plans.folder / "failed" / f"{ran[2].id}.json"
    path.write_bytes(encode(plans.get(ran[2].id).model_copy(update={"reason": "edited by hand"})))
    (corrected,) = sync(plans, store, memory)
    assert corrected.id == ran[2].id and corrected.reason.endswith("failed: no")

    # The views: one snapshot, archived tasks read once each.
    archived.clear()
    listed = plan_list(plans.listing(), store)
    assert len(gets) == 0 and len(archived) == 1
    assert {p["id"]: p["progress"] for p in listed["plans"]}[ran[1].id] == {"failed": 1, "blocked": 1}
