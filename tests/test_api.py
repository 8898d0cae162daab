"""The agent HTTP API, served by uvicorn on a free port, against real git repositories."""

from __future__ import annotations

import json
import os
import re
import shutil

import httpx
import pytest
from filelock import FileLock

from backend.config import AgentConfig
from backend.models import CONTENT_MAX_BYTES, STATUSES, Owner, TaskStatus
from backend.store import TaskStore
from support import git

OWNER = Owner(pid=os.getpid(), host="test", instance="api")


def assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    """Every error has exactly this shape."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    assert {"status", "code", "message"} <= set(body["error"]) <= {"status", "code", "message", "details"}
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def create(agent, **fields) -> dict:
    resp = agent.client.post("/agent/tasks", json={"title": "A task", **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()


# ----- health and docs ------------------------------------------------------------------------


def test_health(agent):
    body = agent.client.get("/agent/health").json()
    # No `claude` on PATH here: the dispatcher's runtime problem makes it degraded (test_health.py).
    assert body["status"] in ("ok", "degraded") and isinstance(body["problems"], list)
    assert body["project"] == agent.settings.project_dir.name
    assert body["project_id"] == agent.settings.project_id
    assert body["version"]
    assert body["uptime_seconds"] >= 0


def test_openapi_docs_are_served(agent):
    assert agent.client.get("/docs").status_code == 200
    spec = agent.client.get("/openapi.json").json()
    assert "/agent/tasks/bulk" in spec["paths"]
    assert "ErrorBody" in spec["components"]["schemas"]


# ----- creating and listing -------------------------------------------------------------------


def test_create_returns_201_with_pending_task(agent):
    task = create(agent, content="Do it well", task_type="bugfix", needs_plan_review=True, priority="urgent")
    assert task["status"] == "pending"
    assert re.fullmatch(r"[a-z0-9]{1,32}", task["id"])
    assert (task["task_type"], task["priority"], task["needs_plan_review"]) == ("bugfix", "urgent", True)
    assert agent.store.get(task["id"]).content == "Do it well"


def test_list_groups_by_status_with_every_key(agent):
    a, b = create(agent, title="one"), create(agent, title="two")
    agent.store.cancel(b["id"])
    body = agent.client.get("/agent/tasks").json()
    assert list(body) == list(STATUSES)
    assert [t["id"] for t in body["pending"]] == [a["id"]]
    assert [t["id"] for t in body["cancelled"]] == [b["id"]]
    assert body["completed"] == []


def test_list_one_status(agent):
    a = create(agent)
    assert [t["id"] for t in agent.client.get("/agent/tasks/pending").json()] == [a["id"]]
    assert agent.client.get("/agent/tasks/failed").json() == []


def test_unknown_status_is_404(agent):
    assert_error(agent.client.get("/agent/tasks/sleeping"), 404, "not_found")


def test_detail_by_mirror_name_or_id(agent):
    task = create(agent, title="Detail me", content="the body")
    for name in (f"{task['id']}.md", task["id"]):
        body = agent.client.get(f"/agent/tasks/pending/{name}").json()
        assert body["id"] == task["id"]
        assert body["filename"] == f"{task['id']}.md"
        assert body["markdown"].startswith("# Detail me\n") and "the body" in body["markdown"]


def test_detail_in_wrong_status_is_404(agent):
    task = create(agent)
    assert_error(agent.client.get(f"/agent/tasks/completed/{task['id']}.md"), 404, "not_found")


@pytest.mark.parametrize("name", ["...", "....md", "ABC.md", "abc.txt", "abc.md.md", "a" * 33, "a%00b", "abc;rm"])
def test_detail_rejects_odd_names(agent, name):
    assert_error(agent.client.get(f"/agent/tasks/pending/{name}"), 400, "invalid_filename")


def test_detail_path_traversal_never_reads_outside(agent):
    (agent.settings.project_dir / "secret.md").write_text("# secret\n")
    for path in (
        "/agent/tasks/pending/..%2F..%2Fsecret.md",
        "/agent/tasks/pending/%2e%2e%2fsecret.md",
        "/agent/tasks/pending/../../secret.md",
    ):
        resp = agent.client.get(path)
        assert resp.status_code in (400, 404), path
        assert set(resp.json()) == {"error"}
        assert "# secret" not in resp.text


# ----- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"title": ""}, "body.title"),
        ({"title": "   "}, "body.title"),
        ({"title": "x" * 201}, "body.title"),
        ({"title": "two\nlines"}, "body.title"),
        ({"title": "ok", "content": "x" * (CONTENT_MAX_BYTES + 1)}, "body.content"),
        ({"title": "lone \ud800 surrogate"}, "body.title"),  # valid JSON, not valid Unicode text
        ({"title": "ok", "content": "\udfff"}, "body.content"),
        ({"title": "ok", "task_type": "epic"}, "body.task_type"),
        ({"title": "ok", "priority": 5}, "body.priority"),
        ({"title": "ok", "colour": "red"}, "body.colour"),
        ({}, "body.title"),
    ],
)
def test_create_validation_errors(agent, body, loc):
    # Encoded here: httpx's own JSON encoding cannot carry a lone surrogate (as "\ud800").
    resp = agent.client.post("/agent/tasks", content=json.dumps(body), headers={"content-type": "application/json"})
    error = assert_error(resp, 422, "validation_error")
    assert error["details"][0]["loc"] == loc
    assert agent.store.list_tasks() == []


def test_title_of_exactly_200_characters_is_fine(agent):
    assert create(agent, title="x" * 200)["title"] == "x" * 200


def test_invalid_json_body(agent):
    resp = agent.client.post("/agent/tasks", content=b"{not json", headers={"content-type": "application/json"})
    error = assert_error(resp, 422, "validation_error")
    assert "invalid JSON" in error["message"]


def test_body_over_limit_is_413_by_length_and_when_streamed(agent_factory):
    agent = agent_factory(config=AgentConfig(max_body_bytes=1000))
    big = json.dumps({"title": "x", "content": "y" * 2000}).encode()
    assert_error(agent.client.post("/agent/tasks", content=big, headers={"content-type": "application/json"}),
                 413, "payload_too_large")

    def chunks():  # no Content-Length: the limit must hold while reading
        for i in range(0, len(big), 100):
            yield big[i : i + 100]

    resp = agent.client.post("/agent/tasks", content=chunks(), headers={"content-type": "application/json"})
    assert_error(resp, 413, "payload_too_large")
    assert agent.store.list_tasks() == []


# ----- bulk -----------------------------------------------------------------------------------


def test_bulk_creates_all(agent):
    resp = agent.client.post("/agent/tasks/bulk", json={"tasks": [{"title": f"t{i}"} for i in range(100)]})
    assert resp.status_code == 201
    assert len(resp.json()["tasks"]) == 100
    assert len(agent.store.list_tasks()) == 100


def test_bulk_is_all_or_nothing(agent):
    resp = agent.client.post("/agent/tasks/bulk", json={"tasks": [{"title": "good"}, {"title": ""}]})
    error = assert_error(resp, 422, "validation_error")
    assert error["details"][0]["loc"] == "body.tasks.1.title"
    assert agent.store.list_tasks() == []


@pytest.mark.parametrize("count", [0, 101])
def test_bulk_size_limits(agent, count):
    resp = agent.client.post("/agent/tasks/bulk", json={"tasks": [{"title": "t"}] * count})
    assert_error(resp, 422, "validation_error")
    assert agent.store.list_tasks() == []


# ----- rerun and cancel -----------------------------------------------------------------------


def test_rerun_failed_task(agent):
    task = create(agent)
    agent.store.claim(OWNER, 60)
    agent.store.transition(task["id"], TaskStatus.failed, error_reason="agent_error", error_message="boom")
    body = agent.client.post(f"/agent/tasks/{task['id']}/rerun").json()
    assert body["status"] == "pending" and body["error_reason"] is None


def test_rerun_pending_task_is_409(agent):
    task = create(agent)
    assert_error(agent.client.post(f"/agent/tasks/{task['id']}/rerun"), 409, "invalid_transition")


def test_cancel_pending_task(agent):
    task = create(agent)
    assert agent.client.post(f"/agent/tasks/{task['id']}/cancel").json()["status"] == "cancelled"
    assert agent.store.get(task["id"]).status is TaskStatus.cancelled


def test_cancel_completed_task_is_409(agent):
    task = create(agent)
    agent.store.claim(OWNER, 60)
    agent.store.transition(task["id"], TaskStatus.completed)
    assert_error(agent.client.post(f"/agent/tasks/{task['id']}/cancel"), 409, "invalid_transition")


def test_unknown_and_invalid_ids(agent):
    assert_error(agent.client.post("/agent/tasks/zzzzzz/cancel"), 404, "not_found")
    assert_error(agent.client.post("/agent/tasks/BAD-ID/rerun"), 400, "invalid_id")


def test_unknown_route_and_wrong_method_use_the_error_shape(agent):
    assert_error(agent.client.get("/agent/nothing-here"), 404, "not_found")
    assert_error(agent.client.delete("/agent/tasks"), 405, "method_not_allowed")


# ----- git views ------------------------------------------------------------------------------


def test_worktrees_lists_the_checkout_and_added_worktrees(agent):
    project = agent.settings.project_dir
    extra = project.parent / "wt-extra"
    git(project, "worktree", "add", "-b", "task/abc", str(extra))
    body = agent.client.get("/agent/worktrees").json()["worktrees"]
    by_path = {w["path"]: w for w in body}
    assert by_path[str(project)]["branch"] == "main"
    assert by_path[str(extra)]["branch"] == "task/abc"
    assert len(by_path[str(extra)]["head"]) == 40


def test_commits_newest_first_with_count(agent):
    project = agent.settings.project_dir
    for i in range(3):
        git(project, "commit", "--allow-empty", "-m", f"change {i}\n\nbody")
    commits = agent.client.get("/agent/commits", params={"count": 2}).json()  # a JSON list
    assert [c["message"] for c in commits] == ["change 2", "change 1"]
    assert commits[0]["author"] == "Baton Test"
    assert len(commits[0]["sha"]) == 40 and commits[0]["date"]
    assert len(agent.client.get("/agent/commits").json()) == 4  # default 10, 4 exist


@pytest.mark.parametrize("count", ["0", "501", "ten"])
def test_commits_count_bounds(agent, count):
    assert_error(agent.client.get("/agent/commits", params={"count": count}), 422, "validation_error")


def test_commits_of_an_empty_repository(agent_factory, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-b", "main")
    agent = agent_factory(project=empty)
    assert agent.client.get("/agent/commits").json() == []


# ----- security -------------------------------------------------------------------------------


def test_token_required_everywhere_but_health(agent_factory):
    agent = agent_factory(token="s3cret-token")
    assert agent.client.get("/agent/health").status_code == 200
    for method, path in (("GET", "/agent/tasks"), ("POST", "/agent/tasks"), ("GET", "/agent/commits"),
                         ("GET", "/docs"), ("GET", "/agent/worktrees")):
        resp = agent.client.request(method, path, json={"title": "x"})
        assert_error(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"] == "Bearer"
    wrong = agent.client.get("/agent/tasks", headers={"Authorization": "Bearer s3cret-tokeN"})
    assert_error(wrong, 401, "unauthorized")
    ok = agent.client.post("/agent/tasks", json={"title": "x"}, headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 201


def test_foreign_host_header_is_refused(agent):
    resp = agent.client.get("/agent/tasks", headers={"Host": "attacker.example:9100"})
    assert_error(resp, 403, "forbidden_host")
    for host in ("localhost:9100", "127.0.0.1", "[::1]:9100"):
        assert agent.client.get("/agent/tasks", headers={"Host": host}).status_code == 200


def test_configured_host_is_allowed(agent_factory):
    agent = agent_factory(config=AgentConfig(allowed_hosts=["baton.internal"]))
    assert agent.client.get("/agent/tasks", headers={"Host": "baton.internal:9100"}).status_code == 200


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost:8888", "http://127.0.0.1:1", "https://127.0.0.1", "null"]
)
def test_state_change_from_another_origin_is_refused(agent, origin):
    resp = agent.client.post("/agent/tasks", json={"title": "x"}, headers={"Origin": origin})
    assert_error(resp, 403, "forbidden_origin")
    assert agent.store.list_tasks() == []


def test_state_change_from_the_same_origin_is_allowed(agent):
    resp = agent.client.post("/agent/tasks", json={"title": "x"}, headers={"Origin": agent.url})
    assert resp.status_code == 201


def test_no_cors_headers(agent):
    resp = agent.client.options(
        "/agent/tasks", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in resp.headers
    get = agent.client.get("/agent/tasks", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in get.headers


def test_corrupt_store_without_a_good_copy_answers_503_and_keeps_the_file(agent):
    create(agent)
    garbage = b'{"schema_version": 1, "tasks": [oops'
    agent.store.path.write_bytes(garbage)
    # A store object that never read a good version has nothing to restore from (a running
    # agent that has one repairs the file: tests/test_store_safety.py).
    agent.app.state.store = TaskStore(agent.store.path)
    assert_error(agent.client.get("/agent/tasks"), 503, "store_corrupt")
    assert_error(agent.client.post("/agent/tasks", json={"title": "x"}), 503, "store_corrupt")
    assert agent.store.path.read_bytes() == garbage


def test_store_lock_held_too_long_answers_503_busy(agent_factory):
    agent = agent_factory(lock_timeout=0.2)
    other = FileLock(str(agent.store.lock_path), thread_local=False)
    with other:
        assert_error(agent.client.post("/agent/tasks", json={"title": "x"}), 503, "store_busy")
    assert agent.client.post("/agent/tasks", json={"title": "x"}).status_code == 201


def test_unreadable_store_answers_503(agent):
    agent.store.path.unlink()
    agent.store.path.mkdir()
    assert_error(agent.client.get("/agent/tasks"), 503, "store_unreadable")


def test_git_failure_answers_500_git_error(agent):
    shutil.rmtree(agent.settings.project_dir / ".git")
    error = assert_error(agent.client.get("/agent/worktrees"), 500, "git_error")
    assert "git worktree list" in error["message"]


def test_unexpected_exception_answers_500_internal_error(agent):
    def explode():
        raise RuntimeError("secret internals")

    agent.app.add_api_route("/agent/test-explode", explode)
    error = assert_error(agent.client.get("/agent/test-explode"), 500, "internal_error")
    assert "secret internals" not in error["message"]


def test_error_shape_is_exactly_pinned(agent):
    resp = agent.client.post("/agent/tasks", json={"title": ""})
    assert resp.json() == {
        "error": {
            "status": 422,
            "code": "validation_error",
            "message": "body.title: must not be blank",
            "details": [{"loc": "body.title", "message": "must not be blank"}],
        }
    }
    assert agent.client.get("/agent/tasks/sleeping").json() == {
        "error": {
            "status": 404,
            "code": "not_found",
            "message": "unknown status 'sleeping'; expected one of pending, blocked, plan_review, in_progress, review, "
            "completed, failed, cancelled",
        }
    }
