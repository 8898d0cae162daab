"""Issue #13, the agent's side of tracker sources: a task's `source`, its reports (the sync
engine's claims on side effects), cancel reasons, tool grants kept apart from the task, and
idempotent creates that still answer once their task was archived."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from backend.archive import archive_finished
from backend.models import REPORTS_MAX, SourceReport, TaskStatus, ToolGrant, utcnow
from backend.store import TaskStore
from backend.toolgrants import ToolGrants
from conftest import fake_task
from support import make_repo, submit_task, wait_for
from test_api import assert_error

ISSUE = {"kind": "linear", "id": "9f1c2a7e-0b1d-4c55-8d2e-3a1b2c3d4e5f", "identifier": "ENG-12",
         "url": "https://linear.app/acme/issue/ENG-12/fix-login"}
TOKEN = "v1.c2VjcmV0LXRva2VuLWZvci1lbmctMTI.abcdefghijklmnop"
GRANT = {"url": "http://127.0.0.1:8888/api/tracker-tools/call", "token": TOKEN}


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


def sourced(agent, **extra) -> dict:
    resp = agent.client.post("/agent/tasks", json={"title": "Fix login", "source": ISSUE, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def report(agent, task_id: str, key_: str, action: str, by: str = "dash-a", **extra) -> httpx.Response:
    return agent.client.post(f"/agent/tasks/{task_id}/source/reports",
                             json={"key": key_, "action": action, "by": by, **extra})


def archive_now(store: TaskStore, task_id: str) -> None:
    """Finished long ago, then archived (as the hourly archiver would)."""
    store.update(task_id, finished_at=utcnow() - timedelta(days=30))
    assert [t.id for t in archive_finished(store, 7)] == [task_id]


# ----- source at create ------------------------------------------------------------------------

def test_a_source_round_trips_through_create_detail_list_and_changes(agent):
    task = sourced(agent)
    assert task["source"] == {**ISSUE, "reports": {}}
    detail = agent.client.get(f"/agent/tasks/any/{task['id']}").json()
    assert detail["source"] == {**ISSUE, "reports": {}} and detail["cancel_reason"] is None
    listed = agent.client.get("/agent/tasks").json()["pending"]
    assert [t["source"]["identifier"] for t in listed] == ["ENG-12"]
    assert agent.store.get(task["id"]).source.identifier == "ENG-12"  # stored, not only answered
    plain = agent.client.post("/agent/tasks", json={"title": "No tracker"}).json()
    assert plain["source"] is None


def test_a_source_with_reports_or_a_grant_without_source_is_refused(agent):
    with_reports = {**ISSUE, "reports": {"done:1": {"state": "done", "at": utcnow().isoformat(), "by": "x"}}}
    error = assert_error(agent.client.post("/agent/tasks", json={"title": "t", "source": with_reports}),
                         422, "validation_error")
    assert "source.reports" in error["message"]
    error = assert_error(agent.client.post("/agent/tasks", json={"title": "t", "tool_grant": GRANT}),
                         422, "validation_error")
    assert "tool_grant" in error["message"] and TOKEN not in json.dumps(error)
    error = assert_error(agent.client.post("/agent/tasks/bulk", json={"tasks": [
        {"title": "fine"}, {"title": "t", "tool_grant": GRANT}]}), 422, "validation_error")
    assert "tasks.1.tool_grant" in error["message"]
    assert agent.store.list_tasks() == []
    assert not (agent.store.path.parent / "tool-grants").exists() or not any(
        (agent.store.path.parent / "tool-grants").iterdir())


# ----- tool grants: a side file, never in an answer ---------------------------------------------

def test_the_grant_is_kept_0600_apart_and_never_answered(agent):
    task = sourced(agent, tool_grant=GRANT)
    folder = agent.store.path.parent / "tool-grants"
    path = folder / f"{task['id']}.json"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert agent.store.grants.get(task["id"]) == ToolGrant(**GRANT)
    assert "tool_grant" not in task and TOKEN not in json.dumps(task)
    assert TOKEN not in agent.store.path.read_text()  # not in the task record either
    answers = [agent.client.get(path_) for path_ in (
        "/agent/tasks", "/agent/tasks/pending", f"/agent/tasks/any/{task['id']}",
        f"/agent/tasks/pending/{task['id']}.md",
        "/agent/changes", "/agent/summaries?status=pending", f"/agent/tasks/{task['id']}/events")]
    for resp in answers:
        assert resp.status_code == 200, resp.text
        assert TOKEN not in resp.text, resp.request.url
    mirror = agent.settings.tasks_dir / "pending" / f"{task['id']}.md"
    assert mirror.exists() and TOKEN not in mirror.read_text()
    # The grant outlives nothing: archiving the task removes it.
    agent.client.post(f"/agent/tasks/{task['id']}/cancel").raise_for_status()
    archive_now(agent.store, task["id"])
    assert not path.exists() and agent.store.grants.get(task["id"]) is None


def test_a_repeat_with_a_rotated_token_answers_the_task_and_keeps_the_new_grant(agent):
    first = agent.client.post("/agent/tasks", json={"title": "Fix", "source": ISSUE, "tool_grant": GRANT},
                              headers=key("source:linear:1"))
    rotated = {**GRANT, "token": "v1.another-token-0123456789"}
    again = agent.client.post("/agent/tasks", json={"title": "Fix", "source": ISSUE, "tool_grant": rotated},
                              headers=key("source:linear:1"))
    assert first.status_code == again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert agent.store.grants.get(first.json()["id"]).token == rotated["token"]
    # Reports recorded since do not make a repeat "another request"; another issue does.
    report(agent, first.json()["id"], "started:1", "done").raise_for_status()
    assert agent.client.post("/agent/tasks", json={"title": "Fix", "source": ISSUE},
                             headers=key("source:linear:1")).json()["id"] == first.json()["id"]
    assert_error(agent.client.post("/agent/tasks", json={"title": "Fix", "source": {**ISSUE, "identifier": "ENG-13"}},
                                   headers=key("source:linear:1")), 409, "idempotency_key_reused")
    assert len(agent.store.list_tasks()) == 1


def test_a_missing_corrupt_or_linked_grant_reads_as_none_without_logging_the_token(tmp_path, caplog):
    grants = ToolGrants(tmp_path / "tool-grants")
    assert grants.get("abc") is None  # no folder yet, nothing created by reading
    assert not (tmp_path / "tool-grants").exists()
    grants.put("abc", ToolGrant(**GRANT))
    (tmp_path / "tool-grants" / "bad.json").write_text('{"url": "http://127.0.0.1/x", "token": "' + TOKEN + '"')
    assert grants.get("bad") is None
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps(GRANT))
    os.symlink(secret, tmp_path / "tool-grants" / "link.json")
    assert grants.get("link") is None  # O_NOFOLLOW: a planted link is not followed
    assert grants.get("abc").token == TOKEN
    assert "bad" in caplog.text and TOKEN not in caplog.text
    grants.remove("abc")
    grants.remove("abc")  # twice: nothing to remove is fine
    assert grants.get("abc") is None


# ----- reports: the sync engine's claims -------------------------------------------------------

def test_of_racing_claims_exactly_one_is_granted(agent):
    task_id = sourced(agent)["id"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: report(agent, task_id, "started:1", "claim", by=f"engine-{n}"), range(8)))
    assert all(a.status_code == 200 for a in answers)
    winners = [a.json() for a in answers if a.json()["granted"]]
    assert len(winners) == 1
    entry = agent.store.get(task_id).source.reports["started:1"]
    assert entry.state == "claimed" and winners[0]["task"]["source"]["reports"]["started:1"]["by"] == entry.by


def test_a_stale_claim_is_granted_again_a_fresh_one_is_not(agent):
    task_id = sourced(agent)["id"]
    assert report(agent, task_id, "review:1", "claim", by="dash-a").json()["granted"] is True
    assert report(agent, task_id, "review:1", "claim", by="dash-b").json()["granted"] is False
    # dash-a died ten minutes ago, holding its claim:
    task = agent.store.get(task_id)
    old = SourceReport(state="claimed", at=utcnow() - timedelta(minutes=10), by="dash-a")
    agent.store.update(task_id, source=task.source.model_copy(update={"reports": {"review:1": old}}))
    assert report(agent, task_id, "review:1", "claim", by="dash-b", stale_seconds=900).json()["granted"] is False
    answer = report(agent, task_id, "review:1", "claim", by="dash-b", stale_seconds=120).json()
    assert answer["granted"] is True and answer["task"]["source"]["reports"]["review:1"]["by"] == "dash-b"


def test_done_is_never_granted_again_and_release_drops_only_claims(agent):
    task_id = sourced(agent)["id"]
    assert report(agent, task_id, "done:1", "claim").json()["granted"] is True
    done = report(agent, task_id, "done:1", "done").json()
    assert done["granted"] is True and done["task"]["source"]["reports"]["done:1"]["state"] == "done"
    assert report(agent, task_id, "done:1", "done").json()["granted"] is True  # idempotent
    task = agent.store.get(task_id)  # even when long done:
    aged = SourceReport(state="done", at=utcnow() - timedelta(days=1), by="dash-a")
    agent.store.update(task_id, source=task.source.model_copy(update={"reports": {"done:1": aged}}))
    assert report(agent, task_id, "done:1", "claim", stale_seconds=1).json()["granted"] is False
    assert report(agent, task_id, "done:1", "release").json()["granted"] is False  # done stays done
    assert agent.store.get(task_id).source.reports["done:1"].state == "done"

    assert report(agent, task_id, "failed:2", "claim").json()["granted"] is True
    released = report(agent, task_id, "failed:2", "release").json()
    assert released["granted"] is True and "failed:2" not in released["task"]["source"]["reports"]
    assert report(agent, task_id, "failed:2", "release").json()["granted"] is False
    assert report(agent, task_id, "failed:2", "claim").json()["granted"] is True  # free again


def test_reports_stay_bounded_dropping_the_oldest_done_first(agent):
    task_id = sourced(agent)["id"]
    now = utcnow()
    full = {f"done:{n}": SourceReport(state="done", at=now - timedelta(seconds=REPORTS_MAX - n), by="e")
            for n in range(REPORTS_MAX - 1)}
    full["started:1"] = SourceReport(state="claimed", at=now - timedelta(days=9), by="e")  # oldest of all
    agent.store.update(task_id, source=agent.store.get(task_id).source.model_copy(update={"reports": full}))
    answer = report(agent, task_id, "review:1", "claim").json()
    reports = answer["task"]["source"]["reports"]
    assert answer["granted"] is True and len(reports) == REPORTS_MAX
    assert "done:0" not in reports and {"done:1", "started:1", "review:1"} <= set(reports)


def test_reports_refuse_unknown_archived_sourceless_tasks_and_bad_bodies(agent):
    assert_error(report(agent, "zzzzzz", "done:1", "claim"), 404, "not_found")
    plain = agent.client.post("/agent/tasks", json={"title": "No tracker"}).json()["id"]
    assert_error(report(agent, plain, "done:1", "claim"), 422, "no_source")
    task_id = sourced(agent)["id"]
    for bad in ({"key": "Done:1"}, {"key": "done"}, {"key": "done:1234567"}, {"action": "steal"}, {"by": ""},
                {"stale_seconds": 0}, {"stale_seconds": 86401}, {"extra": 1}):
        body = {"key": "done:1", "action": "claim", "by": "e", **bad}
        assert_error(agent.client.post(f"/agent/tasks/{task_id}/source/reports", json=body), 422, "validation_error")
    assert agent.store.get(task_id).source.reports == {}
    agent.client.post(f"/agent/tasks/{task_id}/cancel").raise_for_status()
    archive_now(agent.store, task_id)
    assert_error(report(agent, task_id, "done:1", "claim"), 404, "not_found")


# ----- cancel with a reason ----------------------------------------------------------------------

def test_cancel_with_a_reason_keeps_it_and_a_rerun_clears_it(agent):
    task_id = sourced(agent)["id"]
    resp = agent.client.post(f"/agent/tasks/{task_id}/cancel", json={"reason": "ENG-12 was closed in Linear"})
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert resp.json()["cancel_reason"] == "ENG-12 was closed in Linear"
    assert agent.store.get(task_id).cancel_reason == "ENG-12 was closed in Linear"
    rerun = agent.client.post(f"/agent/tasks/{task_id}/rerun").json()
    assert rerun["status"] == "pending" and rerun["cancel_reason"] is None
    # No body: as before, no reason.
    plain = agent.client.post(f"/agent/tasks/{task_id}/cancel")
    assert plain.status_code == 200 and plain.json()["cancel_reason"] is None
    other = agent.client.post("/agent/tasks", json={"title": "x"}).json()["id"]
    for bad in ({"reason": ""}, {"reason": "x" * 2001}, {"why": "no"}):
        assert_error(agent.client.post(f"/agent/tasks/{other}/cancel", json=bad), 422, "validation_error")
    assert agent.store.get(other).status is TaskStatus.pending


def test_cancel_a_running_task_with_a_reason(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    marker = tmp_path / "running"
    task_id = submit_task(agent, fake_task("Long", {"steps": [{"marker": str(marker)}, {"sleep": 120}]},
                                           source=ISSUE))
    wait_for(marker.exists, timeout=30, what="the agent to start")
    resp = agent.client.post(f"/agent/tasks/{task_id}/cancel", json={"reason": "ENG-12 left the active states"})
    assert resp.status_code in (200, 202), resp.text
    task = wait_for(lambda: (t := agent.store.get(task_id)).status is TaskStatus.cancelled and t, timeout=30,
                    what="the task to be cancelled")
    assert task.cancel_reason == "ENG-12 left the active states"
    assert agent.client.get(f"/agent/tasks/any/{task_id}").json()["cancel_reason"] == "ENG-12 left the active states"


def test_a_reason_noted_on_a_run_that_ends_otherwise_is_dropped(agent):
    """A run that completes although a cancel with a reason came: the reason does not stay."""
    from backend.models import Owner
    task_id = sourced(agent)["id"]
    agent.store.claim(Owner(pid=1, host="t", instance="t"), 60, task_id)
    agent.store.update(task_id, cancel_reason="closed")
    assert agent.store.transition(task_id, TaskStatus.completed).cancel_reason is None


# ----- idempotency across the archive ------------------------------------------------------------

def test_a_repeat_answers_its_task_after_it_was_archived(agent):
    body = {"title": "Fix login", "source": ISSUE}
    first = agent.client.post("/agent/tasks", json=body, headers=key("source:linear:9f1c"))
    task_id = first.json()["id"]
    agent.client.post(f"/agent/tasks/{task_id}/cancel", json={"reason": "closed"}).raise_for_status()
    archive_now(agent.store, task_id)
    assert agent.store.list_tasks() == []
    again = agent.client.post("/agent/tasks", json=body, headers=key("source:linear:9f1c"))
    assert again.status_code == 201 and again.json()["id"] == task_id and again.json()["status"] == "cancelled"
    assert agent.store.list_tasks() == []  # nothing new
    assert_error(agent.client.post("/agent/tasks", json={"title": "Other"}, headers=key("source:linear:9f1c")),
                 409, "idempotency_key_reused")
    # Another process (a fresh index) finds it as well.
    assert [t.id for t in TaskStore(agent.store.path).created_with("source:linear:9f1c")] == [task_id]


def test_a_repeated_bulk_with_some_tasks_archived_answers_all_in_order(agent):
    body = {"tasks": [{"title": "one"}, {"title": "two"}, {"title": "three"}]}
    first = [t["id"] for t in agent.client.post("/agent/tasks/bulk", json=body, headers=key("b")).json()["tasks"]]
    agent.client.post(f"/agent/tasks/{first[1]}/cancel").raise_for_status()
    archive_now(agent.store, first[1])
    again = agent.client.post("/agent/tasks/bulk", json=body, headers=key("b"))
    assert again.status_code == 201 and [t["id"] for t in again.json()["tasks"]] == first
    assert len(agent.store.list_tasks()) == 2


# ----- connectors ----------------------------------------------------------------------------------

def test_the_http_connector_cancels_with_a_reason_and_reports(agent):
    from backend.dashboard.config import ProjectConfig
    from backend.dashboard.connectors.http import HTTPConnector
    with_reason, without = sourced(agent)["id"], sourced(agent)["id"]

    async def drive() -> tuple[dict, dict, dict]:
        async with httpx.AsyncClient() as client:
            connector = HTTPConnector(ProjectConfig(id=agent.settings.project_id, agent_url=agent.url), client, 10)
            claimed = await connector.source_report(with_reason, {"key": "started:1", "action": "claim", "by": "d"})
            return claimed, await connector.cancel(with_reason, "closed"), await connector.cancel(without)
    claimed, cancelled, plain = asyncio.run(drive())
    assert claimed["granted"] is True and claimed["task"]["source"]["reports"]["started:1"]["state"] == "claimed"
    assert cancelled["cancel_reason"] == "closed" and plain["status"] == "cancelled" and plain["cancel_reason"] is None


def test_the_local_connector_cancels_with_a_reason_and_reports(tmp_path):
    from backend.dashboard.config import ProjectConfig
    from backend.dashboard.connectors.base import AgentError
    from backend.dashboard.connectors.local import LocalConnector
    repo = make_repo(tmp_path)
    connector = LocalConnector(ProjectConfig(id="local", path=str(repo)))

    async def drive() -> tuple[dict, dict, dict]:
        made = await connector.create({"title": "Fix", "source": ISSUE, "tool_grant": GRANT})
        claimed = await connector.source_report(made["id"], {"key": "done:1", "action": "claim", "by": "d"})
        with pytest.raises(AgentError) as refused:
            plain = await connector.create({"title": "plain"})
            await connector.source_report(plain["id"], {"key": "done:1", "action": "claim", "by": "d"})
        assert refused.value.status == 422 and refused.value.body["error"]["code"] == "no_source"
        return made, claimed, await connector.cancel(made["id"], "closed")
    made, claimed, cancelled = asyncio.run(drive())
    assert "tool_grant" not in made and TOKEN not in json.dumps(made)
    assert connector.store.grants.get(made["id"]).token == TOKEN
    assert claimed["granted"] is True and cancelled["cancel_reason"] == "closed"
