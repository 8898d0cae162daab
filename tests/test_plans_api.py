"""The plans API end to end: a real agent (uvicorn on a free port) running a plan's tasks with the
fake Claude CLI, plans following them to done / failed / executing again, the agent catching up at
start, and the dashboard's mirror (through the agent, and on the folder of an agent-less project)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from backend.models import NewTask, Owner, TaskStatus
from backend.plans.model import PlanDraft
from backend.plans.run import idempotency_key, new_tasks
from backend.plans.store import PlanStore
from backend.store import TaskStore
from conftest import fake_task
from support import git, make_repo, origin_of, wait_for
from test_agent_startup import read_only
from test_api import assert_error

OWNER = Owner(pid=os.getpid(), host="test", instance="plans-api")


def plan_task(ref: str, *deps: str, scenario: dict | None = None) -> dict:
    """A plan task the fake CLI carries out: by default it commits `<ref>.txt`."""
    scenario = scenario or {"steps": [{"write": f"{ref}.txt", "text": f"{ref}\n"}, {"commit": f"add {ref}"}]}
    return {"ref": ref, "depends_on": list(deps), **fake_task(f"Task {ref}", scenario)}


def plan_state(client, path: str, state: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (p := client.get(path).json())["state"] == state and p, timeout=timeout,
                    what=f"{path} to be {state}")


def test_a_plan_is_edited_approved_and_run_in_dependency_order(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(max_parallel_workers=2), dispatch=True)
    client = agent.client
    body = {"plan": {"title": "Diamond", "summary": "a first, then b and c", "tasks": [
        plan_task("a"), plan_task("b", "a"), plan_task("c", "a")]}, "chat_id": "chat1"}
    created = client.post("/agent/plans", json=body)
    assert created.status_code == 201, created.text
    plan = created.json()
    assert (plan["state"], plan["revision"], plan["chat_id"], plan["task_status"]) == ("draft", 1, "chat1", {})
    path = f"/agent/plans/{plan['id']}"

    cycle = {"plan": {"title": "Loop", "tasks": [plan_task("a", "b"), plan_task("b", "a")]}}
    error = assert_error(client.post("/agent/plans", json=cycle), 422, "validation_error")
    assert "depends_on makes a cycle: a -> b -> a" in error["message"]

    # Edit: add the diamond's bottom; an edit on an older revision is refused.
    edited = {"title": "Diamond", "tasks": [*body["plan"]["tasks"], plan_task("d", "b", "c")]}
    answer = client.put(path, json={"revision": 1, "plan": edited})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["revision"], len(answer.json()["tasks"])) == (2, 4)
    assert_error(client.put(path, json={"revision": 1, "plan": body["plan"]}), 409, "stale_plan")
    assert_error(client.post(f"{path}/run"), 409, "invalid_plan_state")
    (listed,) = client.get("/agent/plans").json()["plans"]
    assert (listed["id"], listed["tasks"], listed["progress"], listed["state"]) == (plan["id"], 4, None, "draft")

    assert_error(client.post(f"{path}/approve", json={"revision": 1}), 409, "stale_plan")
    assert client.post(f"{path}/approve", json={"revision": 2}).json()["state"] == "ready"
    assert_error(client.put(path, json={"revision": 3, "plan": edited}), 409, "plan_not_editable")
    # Run names the revision the person saw: another one creates nothing.
    assert_error(client.post(f"{path}/run", json={"revision": 2}), 409, "stale_plan")
    assert_error(client.post(f"{path}/run", json={"revision": 0}), 422, "validation_error")
    assert agent.store.list_tasks() == []

    running = client.post(f"{path}/run", json={"revision": 3})
    assert running.status_code == 200, running.text
    ids = running.json()["task_ids"]
    assert running.json()["state"] == "executing" and set(running.json()["task_status"]) == {"a", "b", "c", "d"}
    assert agent.store.get(ids["d"]).depends_on == [ids["b"], ids["c"]]
    assert {agent.store.get(i).plan_id for i in ids.values()} == {plan["id"]}

    done = plan_state(client, path, "done")
    assert done["task_status"] == {"a": "completed", "b": "completed", "c": "completed", "d": "completed"}
    tasks = {ref: agent.store.get(task_id) for ref, task_id in ids.items()}
    for ref, deps in {"b": "a", "c": "a", "d": "bc"}.items():
        for dep in deps:
            assert tasks[ref].started_at >= tasks[dep].finished_at, (ref, dep)
    assert git(origin_of(agent.settings.project_dir), "show", "main:d.txt") == "d\n"
    (listed,) = client.get("/agent/plans").json()["plans"]
    assert (listed["state"], listed["progress"]) == ("done", {"completed": 4})
    # Plan files are the board's, never the repository's.
    assert "plans" not in git(agent.settings.project_dir, "status", "--porcelain", "--untracked-files=all")

    assert client.delete(path).status_code == 204
    assert_error(client.get(path), 404, "not_found")
    assert_error(client.get("/agent/plans/NOT-AN-ID"), 400, "invalid_id")


def test_a_failed_task_fails_the_plan_until_its_rerun_lands(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    client = agent.client
    flaky = {"fail_once": str(tmp_path / "failed-once"), "error": "the model gave up",
             "steps": [{"write": "a.txt", "text": "a\n"}, {"commit": "add a"}]}
    plan = client.post("/agent/plans", json={"plan": {"title": "Flaky", "tasks": [
        plan_task("a", scenario=flaky), plan_task("b", "a")]}}).json()
    path = f"/agent/plans/{plan['id']}"
    client.post(f"{path}/approve", json={"revision": 1})
    ids = client.post(f"{path}/run").json()["task_ids"]

    failed = plan_state(client, path, "failed")
    assert failed["reason"].startswith(f"a ({ids['a']}, “Task a”) failed")
    assert failed["task_status"] == {"a": "failed", "b": "blocked"}
    assert_error(client.delete(f"/agent/plans/{plan['id']}x"), 404, "not_found")

    # The rerun waits for a stopped dispatcher: the plan is seen executing again before it lands.
    client.post("/agent/dispatcher/stop")
    assert client.post(f"/agent/tasks/{ids['a']}/rerun").json()["status"] == "pending"
    again = plan_state(client, path, "executing", timeout=20)
    # b is unblocked too: pending, waiting for a.
    assert again["reason"] is None and again["task_status"] == {"a": "pending", "b": "pending"}
    client.post("/agent/dispatcher/start")
    done = plan_state(client, path, "done")
    assert done["task_status"] == {"a": "completed", "b": "completed"}


def test_the_agent_catches_up_with_plans_at_start(agent_factory, tmp_path):
    project = make_repo(tmp_path, "resumed")
    store = TaskStore(project / "data" / "dev-tasks.json")
    store.initialize()
    plans = PlanStore(project)
    one_task = PlanDraft(title="Interrupted", tasks=[{"ref": "only", "title": "Only"}])
    # A run interrupted after creating its tasks...
    interrupted = plans.approve(plans.create(one_task).id, 1)
    (created,) = store.create_many(new_tasks(interrupted), idempotency_key=idempotency_key(interrupted),
                                   plan_id=interrupted.id)
    # ... and a plan whose task failed while no agent ran.
    unnoticed = plans.approve(plans.create(one_task).id, 1)
    (task,) = store.create_many(new_tasks(unnoticed), plan_id=unnoticed.id)
    plans.update(unnoticed.id, lambda p: {"state": "executing", "task_ids": {"only": task.id}})
    store.claim(OWNER, 60, task_id=task.id)
    store.transition(task.id, TaskStatus.failed, error_reason="agent_error", error_message="crashed")

    agent = agent_factory(project=project)
    first = agent.client.get(f"/agent/plans/{interrupted.id}").json()
    assert (first["state"], first["task_ids"]) == ("executing", {"only": created.id})
    second = agent.client.get(f"/agent/plans/{unnoticed.id}").json()
    assert second["state"] == "failed" and second["reason"].endswith("failed: crashed")
    assert len(agent.store.list_tasks()) == 2  # nothing created twice


def test_the_dashboard_mirrors_the_plans_api(agent_factory, dashboard_factory, tmp_path):
    agent = agent_factory()
    project_id = agent.client.get("/agent/health").json()["project_id"]
    solo = make_repo(tmp_path, "solo")
    TaskStore(solo / "data" / "dev-tasks.json").initialize()
    board = dashboard_factory([
        {"id": "alpha", "agent_url": agent.url, "agent_project_id": project_id},
        {"id": "solo", "path": str(solo)}], timeout=10)

    for project, store in (("alpha", agent.store), ("solo", TaskStore(solo / "data" / "dev-tasks.json"))):
        base = f"/api/projects/{project}/plans"
        body = {"plan": {"title": "Two steps", "tasks": [{"ref": "one", "title": "One"},
                                                          {"ref": "two", "title": "Two", "depends_on": ["one"]}]},
                "chat_id": "c9"}
        created = board.post(base, json=body)
        assert created.status_code == 201, created.text
        plan = created.json()
        assert (plan["state"], plan["revision"], plan["chat_id"]) == ("draft", 1, "c9")
        path = f"{base}/{plan['id']}"
        assert board.get(path).json() == plan
        edit = {"revision": 1, "plan": {**body["plan"], "title": "Two steps, renamed"}}
        assert board.put(path, json=edit).json()["title"] == "Two steps, renamed"
        # The agent's errors come through unchanged, in the one shape.
        assert_error(board.put(path, json=edit), 409, "stale_plan")
        assert_error(board.post(f"{path}/run"), 409, "invalid_plan_state")
        assert_error(board.post(base, json={"plan": {"title": "x", "tasks": []}}), 422, "validation_error")
        assert_error(board.get(f"{base}/nosuchplan"), 404, "not_found")
        assert_error(board.get(f"{base}/NOPE"), 400, "invalid_id")

        assert board.post(f"{path}/approve", json={"revision": 2}).json()["state"] == "ready"
        assert board.post(f"{path}/reopen").json()["state"] == "draft"
        board.post(f"{path}/approve", json={"revision": 4})
        assert_error(board.post(f"{path}/run", json={"revision": 4}), 409, "stale_plan")
        assert store.list_tasks() == []
        # With the revision shown (as the board sends it) or without a body.
        running = board.post(f"{path}/run", **({"json": {"revision": 5}} if project == "alpha" else {})).json()
        assert running["state"] == "executing" and running["task_status"] == {"one": "pending", "two": "pending"}
        ids = running["task_ids"]
        assert store.get(ids["two"]).depends_on == [ids["one"]]
        assert_error(board.delete(path), 409, "invalid_plan_state")

        # Cancelling a task (no agent runs them here) fails the plan, on either side.
        assert board.post(f"/api/projects/{project}/tasks/{ids['one']}/cancel").status_code == 200
        failed = wait_for(lambda: (p := board.get(path).json())["state"] == "failed" and p, timeout=20,
                          what=f"{project}'s plan to fail")
        assert failed["reason"].endswith("was cancelled")
        listing = board.get(base).json()
        assert [(p["id"], p["state"], p["progress"]) for p in listing["plans"]] == [
            (plan["id"], "failed", {"cancelled": 1, "blocked": 1})]
        assert listing["invalid"] == []
        assert board.delete(path).status_code == 204
        assert board.get(base).json()["plans"] == []

    # Files that are not plans are listed, through either connector.
    (solo / "plans" / "draft").mkdir(parents=True, exist_ok=True)
    (solo / "plans" / "draft" / "junk.json").write_text("[]")
    assert board.get("/api/projects/solo/plans").json()["invalid"] == [
        {"file": "plans/draft/junk.json", "problem": "not a JSON object"}]


def test_nothing_is_written_before_there_is_a_plan(agent_factory):
    """Tasks that belong to no plan are untouched by the follower."""
    agent = agent_factory()
    task = agent.store.create(NewTask(title="Alone"))
    assert agent.client.get("/agent/plans").json() == {"plans": [], "invalid": []}
    assert agent.store.get(task.id).plan_id is None
    assert not (agent.settings.project_dir / "plans").exists()  # nothing made before a plan is


ONE_TASK = {"plan": {"title": "One", "tasks": [{"ref": "only", "title": "Only"}]}}


def test_a_ready_plan_whose_tasks_exist_is_not_deleted_on_either_side(agent_factory, dashboard_factory, tmp_path):
    agent = agent_factory()
    project_id = agent.client.get("/agent/health").json()["project_id"]
    solo = make_repo(tmp_path, "solo")
    TaskStore(solo / "data" / "dev-tasks.json").initialize()
    board = dashboard_factory([
        {"id": "alpha", "agent_url": agent.url, "agent_project_id": project_id},
        {"id": "solo", "path": str(solo)}], timeout=10)
    for project, folder, store in (("alpha", agent.settings.project_dir, agent.store),
                                   ("solo", solo, TaskStore(solo / "data" / "dev-tasks.json"))):
        plan_id = board.post(f"/api/projects/{project}/plans", json=ONE_TASK).json()["id"]
        path = f"/api/projects/{project}/plans/{plan_id}"
        ready = PlanStore(folder).approve(plan_id, 1)
        # A run that crashed after creating the tasks, before recording them.
        (task,) = store.create_many(new_tasks(ready), idempotency_key=idempotency_key(ready), plan_id=ready.id)
        error = assert_error(board.delete(path), 409, "invalid_plan_state")
        assert "is executing" in error["message"]
        answer = board.get(path).json()
        assert (answer["state"], answer["task_ids"]) == ("executing", {"only": task.id})


@contextlib.contextmanager
def tiny_disk(folder: Path):
    """`folder` a 256 KiB tmpfs: a really full disk, not a simulated one."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"!!! SKIPPED LOUDLY: cannot mount a tmpfs for the disk-full test: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write `folder/filler` until the disk is full."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def test_a_plans_folder_that_cannot_be_used_answers_503_or_507_not_500(agent_factory, dashboard_factory):
    agent = agent_factory()
    client = agent.client
    folder = agent.settings.project_dir / "plans"

    # A file where the folder should be: listed as the problem, writes refused.
    folder.write_text("not a folder")
    assert client.get("/agent/plans").json() == {"plans": [], "invalid": [
        {"file": "plans", "problem": "not a folder: remove or rename it"}]}
    error = assert_error(client.post("/agent/plans", json=ONE_TASK), 503, "plans_unavailable")
    assert f"{folder}: not a folder" in error["message"]
    folder.unlink()

    # Read-only.
    plan = client.post("/agent/plans", json=ONE_TASK).json()
    with read_only(folder):
        for answer in (client.post("/agent/plans", json=ONE_TASK),
                       client.post(f"/agent/plans/{plan['id']}/approve", json={"revision": 1}),
                       client.delete(f"/agent/plans/{plan['id']}")):
            error = assert_error(answer, 503, "plans_unavailable")
            assert str(folder) in error["message"] and "Read-only file system" in error["message"]
    assert client.get(f"/agent/plans/{plan['id']}").json()["revision"] == 1

    # Full: 507, and nothing half-written.
    shutil.rmtree(folder)
    with tiny_disk(folder):
        plan = client.post("/agent/plans", json=ONE_TASK).json()
        fill(folder)
        edit = {"revision": 1, "plan": {**ONE_TASK["plan"], "summary": "x" * 8000}}
        error = assert_error(client.put(f"/agent/plans/{plan['id']}", json=edit), 507, "insufficient_storage")
        assert str(folder / "draft") in error["message"] and "No space left" in error["message"]
        assert not [p for p in (folder / "draft").iterdir() if p.name.endswith(".tmp")]
        assert client.get(f"/agent/plans/{plan['id']}").json()["revision"] == 1
        (folder / "filler").unlink()
        assert client.put(f"/agent/plans/{plan['id']}", json=edit).json()["revision"] == 2
