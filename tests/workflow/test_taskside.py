"""StoreTaskSide (backend/workflow/taskside.py): the sync engine's TaskSide over the agent's own
store answers as the agent's HTTP API does, with the same refusals, against a real agent (its
store, its dispatcher, the fake CLI for a running task)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from filelock import FileLock

from backend.archive import archive_finished
from backend.models import NewTask, TaskStatus, utcnow
from backend.sources.taskside import TaskRefused, TasksUnavailable
from backend.workflow.taskside import StoreTaskSide
from conftest import fake_task
from support import wait_for

ISSUE = {"kind": "linear", "id": "9f1c2a7e-0b1d-4c55-8d2e-3a1b2c3d4e5f", "identifier": "ENG-12",
         "url": "https://linear.app/acme/issue/ENG-12/fix-login"}
KEY = f"source:linear:{ISSUE['id']}"
GRANT = {"url": "http://127.0.0.1:8888/api/tracker-tools/call",
         "token": "bt1.c2VjcmV0LXRva2VuLWZvci1lbmctMTI.abcdefghijklmnop"}


def side_of(agent) -> StoreTaskSide:
    return StoreTaskSide(agent.store, agent.app.state.dispatcher)


def run(coro):
    return asyncio.run(coro)


def refused(coro) -> TaskRefused:
    with pytest.raises(TaskRefused) as caught:
        run(coro)
    return caught.value


def test_create_is_idempotent_by_key_even_once_archived(agent):
    side = side_of(agent)
    body = {"title": "Fix login", "source": ISSUE, "tool_grant": GRANT, "runtime": "claude_code"}
    first = run(side.create(body, KEY))
    assert first["status"] == "pending" and first["source"]["identifier"] == "ENG-12"
    assert first["runtime"] == "claude_code" and "tool_grant" not in first
    assert agent.store.grants.get(first["id"]).token == GRANT["token"]  # kept beside the store
    assert run(side.create(body, KEY))["id"] == first["id"]
    assert len(agent.store.list_tasks()) == 1

    run(side.cancel(first["id"], "ENG-12 moved to Done in Linear"))
    agent.store.update(first["id"], finished_at=utcnow() - timedelta(days=30))
    assert [t.id for t in archive_finished(agent.store, 7)] == [first["id"]]
    again = run(side.create(body, KEY))
    assert (again["id"], again["status"]) == (first["id"], "cancelled")
    assert agent.store.list_tasks() == []  # nothing new was made
    assert run(side.list_tasks()) == []


def test_create_refuses_what_the_route_refuses(agent):
    side = side_of(agent)
    run(side.create({"title": "Fix login", "source": ISSUE}, KEY))
    reused = refused(side.create({"title": "Another title", "source": ISSUE}, KEY))
    assert (reused.status, reused.code) == (409, "idempotency_key_reused")

    invalid = refused(side.create({"title": "", "source": ISSUE}, "k2"))
    assert (invalid.status, invalid.code) == (422, "validation_error") and invalid.message.startswith("body.title")

    with_reports = {**ISSUE, "reports": {"started:1": {"state": "done", "at": "2025-01-01T00:00:00Z", "by": "x"}}}
    reports = refused(side.create({"title": "x", "source": with_reports}, "k3"))
    assert (reports.status, reports.code) == (422, "validation_error") and "source.reports" in reports.message

    no_source = refused(side.create({"title": "x", "tool_grant": GRANT}, "k4"))
    assert (no_source.status, no_source.code) == (422, "validation_error") and "tool_grant" in no_source.message

    runtime = refused(side.create({"title": "x", "source": {**ISSUE, "id": "other"}, "runtime": "codex"}, "k5"))
    assert (runtime.status, runtime.code) == (422, "runtime_not_configured")
    assert len(agent.store.list_tasks()) == 1


def test_cancel_a_pending_task_keeps_the_reason_and_refuses_a_finished_one(agent):
    side = side_of(agent)
    task = run(side.create({"title": "Fix login", "source": ISSUE}, KEY))
    cancelled = run(side.cancel(task["id"], "ENG-12 left the active states"))
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "ENG-12 left the active states")
    again = refused(side.cancel(task["id"], "again"))
    assert (again.status, again.code) == (409, "invalid_transition")
    missing = refused(side.cancel("nosuchtask", "x"))
    assert (missing.status, missing.code) == (404, "not_found")
    assert refused(side.cancel("Bad-Id", "x")).code == "invalid_id"

    rerun = run(side.rerun(task["id"]))
    assert (rerun["status"], rerun["cancel_reason"]) == ("pending", None)


def test_cancel_a_running_task_stops_its_run_with_the_reason(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    side = side_of(agent)
    marker = tmp_path / "running"
    body = fake_task("Long", {"steps": [{"marker": str(marker)}, {"sleep": 120}]}, source=ISSUE)
    task = run(side.create(body, KEY))
    wait_for(marker.exists, timeout=30, what="the agent to start")
    assert agent.store.get(task["id"]).status is TaskStatus.in_progress
    run(side.cancel(task["id"], "ENG-12 moved to Canceled in Linear"))
    done = wait_for(lambda: (t := agent.store.get(task["id"])).status is TaskStatus.cancelled and t, timeout=30,
                    what="the run to be stopped")
    assert done.cancel_reason == "ENG-12 moved to Canceled in Linear"
    assert done.branch == f"task/{task['id']}"


def test_a_running_task_no_dispatcher_here_holds_is_refused(agent):
    from backend.models import Owner

    side = side_of(agent)
    task = run(side.create({"title": "Fix login", "source": ISSUE}, KEY))
    agent.store.claim(Owner(pid=1, host="elsewhere", instance="other"), 60, task["id"])
    refusal = refused(side.cancel(task["id"], "closed"))
    assert (refusal.status, refusal.code) == (409, "invalid_transition")
    assert agent.store.get(task["id"]).cancel_reason is None  # the noted reason was taken back


def test_reports_claim_once_then_done(agent):
    side = side_of(agent)
    task = run(side.create({"title": "Fix login", "source": ISSUE}, KEY))
    claim = {"key": "started:1", "action": "claim", "by": "engine-a", "stale_seconds": 120}
    first = run(side.report(task["id"], claim))
    assert first["granted"] and first["task"]["source"]["reports"]["started:1"]["state"] == "claimed"
    assert not run(side.report(task["id"], {**claim, "by": "engine-b"}))["granted"]
    done = run(side.report(task["id"], {"key": "started:1", "action": "done", "by": "engine-a"}))
    assert done["task"]["source"]["reports"]["started:1"]["state"] == "done"
    assert not run(side.report(task["id"], claim))["granted"]  # never again once done

    plain = agent.store.create(NewTask(title="no source"))
    no_source = refused(side.report(plain.id, claim))
    assert (no_source.status, no_source.code) == (422, "no_source")
    bad = refused(side.report(task["id"], {"key": "started:1", "action": "steal", "by": "x"}))
    assert (bad.status, bad.code) == (422, "validation_error")


def test_list_answers_every_live_task_as_the_api_does(agent):
    side = side_of(agent)
    made = run(side.create({"title": "Fix login", "source": ISSUE}, KEY))
    other = agent.store.create(NewTask(title="by hand"))
    listed = {t["id"]: t for t in run(side.list_tasks())}
    assert set(listed) == {made["id"], other.id}
    api = {t["id"]: t for group in agent.client.get("/agent/tasks").json().values() for t in group}
    assert listed == api


def test_a_busy_store_is_unavailable_not_a_refusal(agent_factory):
    agent = agent_factory(lock_timeout=0.2)
    side = side_of(agent)
    with FileLock(str(agent.store.lock_path), thread_local=False):
        with pytest.raises(TasksUnavailable):
            run(side.create({"title": "Fix login", "source": ISSUE}, KEY))
    assert run(side.create({"title": "Fix login", "source": ISSUE}, KEY))["status"] == "pending"
