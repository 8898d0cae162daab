"""Task dependencies: the store's rules (resolve, claim only when ready, blocked settled in the
same write) and the APIs that create them (agent single/bulk, the dashboard's local connector)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend import changefeed
from backend.dependencies import DependencyError
from backend.mirrors import MirrorWriter
from backend.models import NewTask, Owner, TaskStatus
from backend.store import InvalidTransitionError, TaskStore
from support import make_local_repo

OWNER = Owner(pid=os.getpid(), host="test", instance="deps")


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    s = TaskStore(tmp_path / "data" / "dev-tasks.json", mirrors=MirrorWriter(tmp_path / "tasks"))
    s.initialize()
    return s


def new(title: str, ref: str | None = None, depends_on: tuple[str, ...] = (), **kw) -> NewTask:
    return NewTask(title=title, ref=ref, depends_on=list(depends_on), **kw)


def finish(store: TaskStore, task_id: str, status: TaskStatus = TaskStatus.completed, **fields) -> None:
    """Run a task to its end through the store's own lifecycle (claim, then finish)."""
    assert store.claim(OWNER, 60, task_id=task_id) is not None, f"{task_id} is not claimable"
    store.transition(task_id, status, **fields)


def fail(store: TaskStore, task_id: str, message: str = "the tests failed: 2 errors") -> None:
    finish(store, task_id, TaskStatus.failed, error_reason="tests_failed", error_message=message)


def archive_all(store: TaskStore) -> list:
    """Every finished task to the archive (as the archiver does once they are old enough)."""
    return store.archive_finished(lambda task: True)


def diamond(store: TaskStore) -> dict[str, str]:
    """A -> {B, C} -> D, created by refs in one request; returns ref -> id."""
    tasks = store.create_many([new("A", "a"), new("B", "b", ["a"]), new("C", "c", ["a"]), new("D", "d", ["b", "c"])])
    return {t.ref: t.id for t in tasks}


# ----- ordering ---------------------------------------------------------------------------------


def test_a_diamond_is_claimed_in_dependency_order(store):
    ids = diamond(store)
    assert store.get(ids["d"]).depends_on == [ids["b"], ids["c"]]  # refs resolved to ids, in order
    assert all(store.get(i).status is TaskStatus.pending for i in ids.values())  # waiting is pending, not blocked
    assert store.claim(OWNER, 60).id == ids["a"]
    assert store.claim(OWNER, 60) is None, "B, C and D wait for A"
    assert store.claim(OWNER, 60, task_id=ids["b"]) is None, "not by id either"
    store.transition(ids["a"], TaskStatus.completed)
    assert {store.claim(OWNER, 60).id, store.claim(OWNER, 60).id} == {ids["b"], ids["c"]}
    assert store.claim(OWNER, 60) is None, "D waits for B and C"
    store.transition(ids["b"], TaskStatus.completed)
    assert store.claim(OWNER, 60) is None, "D still waits for C"
    store.transition(ids["c"], TaskStatus.completed)
    assert store.claim(OWNER, 60).id == ids["d"]


def test_depending_on_an_existing_completed_task_is_ready_at_once(store):
    done = store.create(new("done"))
    finish(store, done.id)
    later = store.create(new("later", depends_on=[done.id]))
    assert later.status is TaskStatus.pending and later.depends_on == [done.id]
    assert store.claim(OWNER, 60).id == later.id


def test_a_completed_dependency_still_counts_once_archived(store, tmp_path):
    first = store.create(new("first"))
    waiting = store.create(new("waiting", depends_on=[first.id]))
    finish(store, first.id)
    assert [t.id for t in archive_all(store)] == [first.id]
    assert first.id not in store.snapshot().tasks
    assert store.claim(OWNER, 60).id == waiting.id
    # ...and a task created afterwards may name it.
    after = store.create(new("after the archive", depends_on=[first.id]))
    assert after.status is TaskStatus.pending
    assert store.claim(OWNER, 60).id == after.id


# ----- refused requests -------------------------------------------------------------------------


@pytest.mark.parametrize("items, words", [
    ([new("x", depends_on=["nosuchtask"])], "depends_on 'nosuchtask' is neither an existing task's id nor the ref"),
    ([new("x", "a", ["b"]), new("y", "b", ["a"])], "depends_on makes a cycle: a -> b -> a"),
    ([new("x", "a", ["c"]), new("y", "b", ["a"]), new("z", "c", ["b"])], "depends_on makes a cycle: "),
    ([new("x", "a"), new("y", "a")], "tasks[1].ref 'a' is also the ref of tasks[0]"),
    ([new("x", "a", ["a"])], "tasks[0] (“x”) depends on itself"),
])
def test_unknown_cyclic_or_ambiguous_dependencies_are_refused_and_nothing_is_created(store, items, words):
    before = store.snapshot().revision
    with pytest.raises(DependencyError) as caught:
        store.create_many(items)
    assert words in str(caught.value)
    assert store.snapshot().revision == before and not store.snapshot().tasks


def test_a_ref_wins_over_an_existing_id_of_the_same_name(store):
    # Refs are local names: a request can rely on them whatever ids the store holds.
    existing = store.create(new("existing"))
    made = store.create_many([new("x", existing.id), new("y", depends_on=[existing.id])])
    assert made[1].depends_on == [made[0].id]


# ----- blocked ----------------------------------------------------------------------------------


def test_a_task_depending_on_a_failed_one_is_created_blocked_with_the_reason(store):
    broken = store.create(new("Broken thing"))
    fail(store, broken.id, "agent gave up")
    task = store.create(new("needs it", depends_on=[broken.id]))
    assert task.status is TaskStatus.blocked
    assert task.blocked_reason == f"“Broken thing” ({broken.id}) failed: agent gave up"
    assert store.claim(OWNER, 60) is None
    mirror = store.path.parent.parent / "tasks" / "blocked" / f"{task.id}.md"
    assert f"Blocked: {task.blocked_reason}." in mirror.read_text()


def test_a_failure_blocks_transitive_dependents_and_a_rerun_unblocks_them_in_one_write(store):
    ids = diamond(store)
    fail(store, ids["a"])
    after_failure = store.snapshot()
    for ref in "bc":
        task = after_failure.tasks[ids[ref]]
        assert task.status is TaskStatus.blocked
        assert task.blocked_reason == f"“A” ({ids['a']}) failed: the tests failed: 2 errors"
    d = after_failure.tasks[ids["d"]]
    assert d.status is TaskStatus.blocked
    assert d.blocked_reason == f"“B” ({ids['b']}) is blocked; “C” ({ids['c']}) is blocked"
    # Blocked in the same write as the failure: no revision saw A failed with B pending.
    assert after_failure.revision == store.snapshot().revision

    revision = store.snapshot().revision
    store.rerun(ids["a"])
    snap = store.snapshot()
    assert snap.revision == revision + 1
    assert all(snap.tasks[ids[r]].status is TaskStatus.pending for r in "abcd")
    assert all(snap.tasks[ids[r]].blocked_reason is None for r in "bcd")
    assert store.claim(OWNER, 60).id == ids["a"]


def test_a_blocked_task_can_be_cancelled_and_its_dependents_say_so(store):
    ids = diamond(store)
    fail(store, ids["a"])
    cancelled = store.cancel(ids["b"])
    assert cancelled.status is TaskStatus.cancelled and cancelled.finished_at is not None
    d = store.get(ids["d"])
    assert d.status is TaskStatus.blocked
    assert d.blocked_reason == f"“B” ({ids['b']}) was cancelled; “C” ({ids['c']}) is blocked"
    # A rerun of A unblocks C, but D still waits on the cancelled B.
    store.rerun(ids["a"])
    assert store.get(ids["c"]).status is TaskStatus.pending
    assert store.get(ids["d"]).blocked_reason == f"“B” ({ids['b']}) was cancelled"
    # Blocked is left only by the rules or a cancel; claim and transition cannot start it.
    with pytest.raises(InvalidTransitionError):
        store.transition(ids["d"], TaskStatus.in_progress)


def test_a_failed_dependency_that_is_archived_keeps_its_dependents_blocked(store):
    first = store.create(new("first"))
    waiting = store.create(new("waiting", depends_on=[first.id]))
    fail(store, first.id)
    assert [t.id for t in archive_all(store)] == [first.id]
    assert store.get(waiting.id).status is TaskStatus.blocked
    store.rerun(first.id)  # back from the archive
    assert store.get(waiting.id).status is TaskStatus.pending


def test_an_idempotent_bulk_repeat_with_refs_returns_the_same_tasks(store):
    items = [new("A", "a"), new("B", "b", ["a"])]
    first = store.create_many(items, idempotency_key="plan-1")
    again = store.create_many([new("A", "a"), new("B", "b", ["a"])], idempotency_key="plan-1")
    assert [t.id for t in again] == [t.id for t in first]
    assert again[1].depends_on == [first[0].id]
    assert len(store.snapshot().tasks) == 2


# ----- what the board reads ---------------------------------------------------------------------


def test_the_summary_carries_dependencies_and_the_blocked_reason(store):
    ids = diamond(store)
    plain = changefeed.summary(store.get(ids["a"]))
    assert "depends_on" not in plain and "blocked_reason" not in plain  # empty lists are left out
    fail(store, ids["a"])
    d = changefeed.summary(store.get(ids["d"]))
    assert d["status"] == "blocked" and d["depends_on"] == [ids["b"], ids["c"]]
    assert d["blocked_reason"].startswith(f"“B” ({ids['b']}) is blocked")
    # The blocked column is ordered as the queue is: most urgent, then oldest.
    assert d["sort"].startswith("2|")
    planned = store.create_many([new("P")], plan_id="plan1")[0]
    assert changefeed.summary(planned)["plan_id"] == "plan1"


# ----- the APIs ---------------------------------------------------------------------------------


def test_the_agent_api_refuses_bad_dependencies_with_422_invalid_dependencies(agent):
    single = agent.client.post("/agent/tasks", json={"title": "x", "depends_on": ["nosuchtask"]})
    assert single.status_code == 422
    error = single.json()["error"]
    assert error["code"] == "invalid_dependencies" and "'nosuchtask' is neither" in error["message"]
    assert set(single.json()) == {"error"} and set(error) == {"status", "code", "message"}

    cycle = agent.client.post("/agent/tasks/bulk", json={"tasks": [
        {"title": "x", "ref": "a", "depends_on": ["b"]}, {"title": "y", "ref": "b", "depends_on": ["a"]}]})
    assert cycle.status_code == 422, cycle.text
    assert cycle.json()["error"] == {"status": 422, "code": "invalid_dependencies",
                                     "message": "depends_on makes a cycle: a -> b -> a"}
    dup = agent.client.post("/agent/tasks/bulk", json={"tasks": [{"title": "x", "ref": "a"}, {"title": "y", "ref": "a"}]})
    assert dup.status_code == 422 and dup.json()["error"]["code"] == "invalid_dependencies"
    assert not agent.store.snapshot().tasks

    # A ref that is not a local name is a validation error of the body.
    bad_ref = agent.client.post("/agent/tasks", json={"title": "x", "ref": "no spaces"})
    assert bad_ref.status_code == 422 and bad_ref.json()["error"]["code"] == "validation_error"


def test_the_agent_api_creates_a_diamond_by_refs_and_serves_dependencies_in_the_detail(agent):
    created = agent.client.post("/agent/tasks/bulk", json={"tasks": [
        {"title": "A", "ref": "a"}, {"title": "B", "ref": "b", "depends_on": ["a"]},
        {"title": "D", "ref": "d", "depends_on": ["b", "a"]}]})
    assert created.status_code == 201, created.text
    a, b, d = created.json()["tasks"]
    assert d["depends_on"] == [b["id"], a["id"]] and d["ref"] == "d"
    one = agent.client.post("/agent/tasks", json={"title": "E", "depends_on": [d["id"]]})
    assert one.status_code == 201 and one.json()["depends_on"] == [d["id"]]

    detail = agent.client.get(f"/agent/tasks/pending/{d['id']}.md").json()
    assert detail["dependencies"] == [{"id": b["id"], "title": "B", "status": "pending"},
                                      {"id": a["id"], "title": "A", "status": "pending"}]
    assert detail["dependents"] == [{"id": one.json()["id"], "title": "E", "status": "pending"}]
    assert f"- depends on: {b['id']}, {a['id']}" in detail["markdown"]

    fail(agent.store, a["id"])
    blocked = agent.client.get("/agent/tasks/blocked").json()
    assert {t["id"] for t in blocked} == {b["id"], d["id"], one.json()["id"]}
    assert agent.client.get("/agent/tasks").json()["blocked"] == blocked
    cancelled = agent.client.post(f"/agent/tasks/{b['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    rerun = agent.client.post(f"/agent/tasks/{a['id']}/rerun")
    assert rerun.status_code == 200
    assert agent.client.get(f"/agent/tasks/blocked/{d['id']}.md").json()["blocked_reason"] == \
        f"“B” ({b['id']}) was cancelled"
    counts = agent.client.get("/agent/dispatcher").json()["counts"]
    assert counts["blocked"] == 2 and counts["pending"] == 1


def test_the_dashboards_local_connector_answers_as_the_agent(dashboard_factory, tmp_path):
    repo = make_local_repo(tmp_path, "local")
    client = dashboard_factory([{"id": "local", "path": str(repo)}])
    refused = client.post("/api/projects/local/tasks/bulk", json={"tasks": [
        {"title": "x", "ref": "a", "depends_on": ["b"]}, {"title": "y", "ref": "b", "depends_on": ["a"]}]})
    assert refused.status_code == 422
    assert refused.json()["error"] == {"status": 422, "code": "invalid_dependencies",
                                       "message": "depends_on makes a cycle: a -> b -> a"}
    single = client.post("/api/projects/local/tasks", json={"title": "x", "depends_on": ["nosuchtask"]})
    assert single.status_code == 422 and single.json()["error"]["code"] == "invalid_dependencies"

    made = client.post("/api/projects/local/tasks/bulk", json={"tasks": [
        {"title": "A", "ref": "a"}, {"title": "B", "depends_on": ["a"]}]})
    assert made.status_code == 201, made.text
    a, b = made.json()["tasks"]
    store = TaskStore(repo / "data" / "dev-tasks.json")
    fail(store, a["id"])
    detail = client.get(f"/api/projects/local/tasks/blocked/{b['id']}.md")
    assert detail.status_code == 200, detail.text
    assert detail.json()["dependencies"] == [{"id": a["id"], "title": "A", "status": "failed"}]
    page = client.get("/api/board/page", params={"status": "blocked"}).json()
    assert [t["id"] for t in page["tasks"]] == [b["id"]] and page["tasks"][0]["blocked_reason"].startswith(f"“A” ({a['id']}) failed")
    assert client.post(f"/api/projects/local/tasks/{b['id']}/cancel").json()["status"] == "cancelled"


def test_a_message_to_a_blocked_task_waits_in_its_inbox_for_its_run(store):
    from backend.models import NewMessage
    from backend.review import post_message

    a, b = store.create_many([new("A", "a"), new("B", "b", ["a"])])
    fail(store, a.id)
    assert store.get(b.id).status is TaskStatus.blocked
    posted = post_message(store, b.id, NewMessage(text="use the new schema"), running=lambda _id: False)
    assert posted.delivery == "queued"
    held = store.get(b.id)
    assert held.status is TaskStatus.blocked and [m.text for m in held.inbox] == ["use the new schema"]
    store.rerun(a.id)  # unblocked: the message is still there for B's run
    assert [m.text for m in store.get(b.id).inbox] == ["use the new schema"]


def test_a_repeat_whose_dependencies_differ_is_not_the_same_request(store):
    from backend.store import IdempotencyKeyReusedError

    (x,) = store.create_many([new("X")])
    first = store.create_many([new("A", "a"), new("B", "b", ["a"])], idempotency_key="k1")
    # The same items, B naming A by ref twice: the same request.
    again = store.create_many([new("A", "a"), new("B", "b", ["a", "a"])], idempotency_key="k1")
    assert [t.id for t in again] == [t.id for t in first]
    # B depending on X instead: another request under the same key.
    with pytest.raises(IdempotencyKeyReusedError):
        store.create_many([new("A", "a"), new("B", "b", [x.id])], idempotency_key="k1")


def test_only_the_dependency_rules_move_a_task_in_or_out_of_blocked(store):
    a, b, c = store.create_many([new("A", "a"), new("B", "b", ["a"]), new("C")])
    with pytest.raises(InvalidTransitionError, match="only its dependencies"):
        store.transition(c.id, TaskStatus.blocked)
    fail(store, a.id)
    with pytest.raises(InvalidTransitionError, match="only its dependencies"):
        store.transition(b.id, TaskStatus.pending)
    assert store.get(b.id).status is TaskStatus.blocked and store.get(c.id).status is TaskStatus.pending


def test_a_store_opened_with_a_stale_blocked_state_is_settled_at_start(store, tmp_path):
    import json

    a, b = store.create_many([new("A", "a"), new("B", "b", ["a"])])
    fail(store, a.id)
    assert store.get(b.id).status is TaskStatus.blocked
    # Written by hand (or restored from an older copy): A pending again, B still blocked.
    path = tmp_path / "data" / "dev-tasks.json"
    doc = json.loads(path.read_text())  # the store is one JSON document (canonical: a task per line)
    for data in doc["tasks"]:
        if data["id"] == a.id:
            data.update(status="pending", finished_at=None, error_reason=None, error_message=None)
    path.write_text(json.dumps(doc))
    reopened = TaskStore(path)
    reopened.initialize()
    assert reopened.get(b.id).status is TaskStatus.pending and reopened.get(b.id).blocked_reason is None


def test_a_task_is_read_by_any_status_wherever_it_moved(agent, dashboard_factory):
    created = agent.client.post("/agent/tasks/bulk", json={"tasks": [
        {"title": "A", "ref": "a"}, {"title": "B", "ref": "b", "depends_on": ["a"]}]})
    a, b = created.json()["tasks"]
    assert agent.client.get(f"/agent/tasks/pending/{b['id']}.md").json()["status"] == "pending"
    agent.client.post(f"/agent/tasks/{a['id']}/cancel")
    # B moved to blocked: by its old status it is gone, by `any` it is found where it is now.
    assert agent.client.get(f"/agent/tasks/pending/{b['id']}.md").status_code == 404
    found = agent.client.get(f"/agent/tasks/any/{b['id']}.md")
    assert found.status_code == 200 and found.json()["status"] == "blocked"
    missing = agent.client.get("/agent/tasks/any/nosuchtask.md")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "no task with id 'nosuchtask'"
    # The dashboard passes `any` on, whether it reaches the project through its agent or its folder.
    dash = dashboard_factory([{"id": "p", "agent_url": agent.url, "agent_project_id": agent.client.get("/agent/health").json()["project_id"]},
                              {"id": "local", "path": str(agent.settings.project_dir)}], timeout=5.0)
    for project in ("p", "local"):
        answer = dash.get(f"/api/projects/{project}/tasks/any/{b['id']}.md")
        assert answer.status_code == 200 and answer.json()["status"] == "blocked", (project, answer.text)
