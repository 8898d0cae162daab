"""The dashboard's review routes (issue #11): approve, request changes, reject, follow-up messages,
the diff and a pull request's refresh, for a project read from its store (the same store
operations as the agent's) and relayed to a real agent (same bodies, answers and errors)."""

from __future__ import annotations

import os

import pytest

from backend.models import NewTask, Owner, TaskStatus
from backend.store import TaskStore
from conftest import fake_task
from support import git, in_review, make_repo, wait_for
from test_api import assert_error

OWNER = Owner(pid=os.getpid(), host="test", instance="dashboard-review")


@pytest.fixture
def local(dashboard_factory, tmp_path):
    repo = make_repo(tmp_path, "solo")
    store = TaskStore(repo / "data" / "dev-tasks.json")
    store.initialize()
    client = dashboard_factory([{"id": "solo", "path": str(repo)}])
    return client, store, repo


def test_the_diff_of_a_task_in_review_comes_from_its_store(local):
    client, store, repo = local
    task_id, sha, base = in_review(store, repo, "Greets", {"hello.py": "print('hello')\n", "README.md": "# demo\nmore\n"})
    diff = client.get(f"/api/projects/solo/tasks/{task_id}/diff").json()
    assert (diff["range"], diff["base"], diff["head"]) == ("review", base, sha)
    files = {f["path"]: f for f in diff["files"]}
    assert files["hello.py"]["status"] == "added" and files["README.md"]["status"] == "modified"
    added = [line for hunk in files["README.md"]["hunks"] for line in hunk["lines"] if line["kind"] == "add"]
    assert added == [{"kind": "add", "old": None, "new": 2, "text": "more"}]
    assert diff["stats"] == {"files": 2, "additions": 2, "deletions": 0}
    # No branch at all: a clear 404, not an error page.
    plain = store.create(NewTask(title="Never ran"))
    assert_error(client.get(f"/api/projects/solo/tasks/{plain.id}/diff"), 404, "no_diff")
    assert_error(client.get("/api/projects/solo/tasks/NOPE/diff"), 400, "invalid_id")
    assert_error(client.get(f"/api/projects/solo/tasks/{task_id}/diff?context=99"), 422, "validation_error")


def test_approve_lands_only_the_commit_that_was_looked_at(local):
    client, store, repo = local
    task_id, sha, _ = in_review(store, repo, "Approved", {"a.txt": "a\n"})
    assert_error(client.post(f"/api/projects/solo/tasks/{task_id}/approve", json={"sha": "0" * 40}), 409, "stale_review")
    assert store.get(task_id).status is TaskStatus.review
    answer = client.post(f"/api/projects/solo/tasks/{task_id}/approve", json={"sha": sha})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "pending" and answer.json()["approved_sha"] == sha
    assert store.get(task_id).approved_sha == sha
    # Approving twice is a transition the task no longer takes.
    assert_error(client.post(f"/api/projects/solo/tasks/{task_id}/approve", json={}), 409, "invalid_transition")


def test_request_changes_carries_the_comments_and_reject_keeps_the_branch(local):
    client, store, repo = local
    sent_back, _, _ = in_review(store, repo, "Sent back", {"b.txt": "b\n"})
    body = {"text": "Please rename it", "comments": [{"path": "b.txt", "line": 1, "side": "new", "text": "why b?"}]}
    answer = client.post(f"/api/projects/solo/tasks/{sent_back}/request-changes", json=body)
    assert answer.status_code == 200, answer.text
    task = store.get(sent_back)
    assert task.status is TaskStatus.pending
    assert [(m.kind, m.text, [c.text for c in m.comments]) for m in task.inbox] == [("changes", "Please rename it", ["why b?"])]
    assert_error(client.post(f"/api/projects/solo/tasks/{sent_back}/request-changes", json={"text": " "}),
                 422, "validation_error")

    rejected, _, _ = in_review(store, repo, "Rejected", {"c.txt": "c\n"})
    answer = client.post(f"/api/projects/solo/tasks/{rejected}/reject", json={"reason": "not needed"})
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert git(repo, "branch", "--list", f"task/{rejected}").strip()  # the work is kept
    # No body at all is fine too (the reason is optional), on a task that takes it.
    again, _, _ = in_review(store, repo, "Rejected bare", {"d.txt": "d\n"})
    assert client.post(f"/api/projects/solo/tasks/{again}/reject").json()["status"] == "cancelled"


def test_messages_queue_or_start_and_a_pull_request_needs_its_agent(local):
    client, store, _ = local
    waiting = store.create(NewTask(title="Waits"))
    answer = client.post(f"/api/projects/solo/tasks/{waiting.id}/messages", json={"text": "also do X"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["delivery"] == "queued" and answer.json()["message"]["text"] == "also do X"
    done = store.create(NewTask(title="Done"))
    store.claim(OWNER, 60, task_id=done.id)
    store.transition(done.id, TaskStatus.completed)
    answer = client.post(f"/api/projects/solo/tasks/{done.id}/messages", json={"text": "one more thing"})
    assert answer.status_code == 202 and answer.json()["delivery"] == "started"
    assert answer.json()["task"]["status"] == "pending"
    assert_error(client.post(f"/api/projects/solo/tasks/{done.id}/messages", json={"text": ""}), 422, "validation_error")
    assert_error(client.post(f"/api/projects/solo/tasks/{done.id}/pr/refresh"), 409, "needs_agent")
    assert_error(client.post("/api/projects/solo/tasks/zzz/approve", json={}), 404, "not_found")


def test_the_review_loop_relayed_to_an_agent(agent_factory, dashboard_factory, fake_cli):
    """Through an agent (landing: review): the diff, changes requested with a comment (a turn in
    the same session), approve; its errors come back unchanged."""
    agent = agent_factory(config=fake_cli.config(landing="review"), dispatch=True)
    agent.client.get("/agent/health").raise_for_status()
    client = dashboard_factory([{"id": "alpha", "agent_url": agent.url,
                                 "agent_project_id": agent.settings.project_id}], timeout=5)
    scenario = {"steps": [{"write": "hello.txt", "text": "hello\n"}, {"commit": "hello"}],
                "on_resume": [{"steps": [{"write": "hello.txt", "text": "hello, world\n"}, {"commit": "world"}]}]}
    task_id = client.post("/api/projects/alpha/tasks", json=fake_task("Relayed", scenario)).json()["id"]
    wait_for(lambda: agent.store.get(task_id).status is TaskStatus.review, timeout=60, what="review")
    first = agent.store.get(task_id).review_sha
    diff = client.get(f"/api/projects/alpha/tasks/{task_id}/diff?context=1").json()
    assert diff["range"] == "review" and diff["head"] == first
    assert [f["path"] for f in diff["files"]] == ["hello.txt"]
    assert_error(client.post(f"/api/projects/alpha/tasks/{task_id}/approve", json={"sha": "f" * 40}),
                 409, "stale_review")
    body = {"text": "say world too", "comments": [{"path": "hello.txt", "line": 1, "text": "more"}]}
    answer = client.post(f"/api/projects/alpha/tasks/{task_id}/request-changes", json=body)
    assert answer.status_code == 200 and answer.json()["status"] == "pending", answer.text
    wait_for(lambda: (t := agent.store.get(task_id)).status is TaskStatus.review and t.review_sha != first,
             timeout=60, what="back in review with the new commit")
    second = agent.store.get(task_id).review_sha
    assert client.post(f"/api/projects/alpha/tasks/{task_id}/approve", json={"sha": second}).status_code == 200
    wait_for(lambda: agent.store.get(task_id).status is TaskStatus.completed, timeout=60, what="landed")
    assert git(agent.settings.project_dir, "show", "origin/main:hello.txt") == "hello, world\n"
    assert_error(client.post(f"/api/projects/alpha/tasks/{task_id}/pr/refresh"), 409, "no_pull_request")
    answer = client.post(f"/api/projects/alpha/tasks/{task_id}/messages", json={"text": "thanks"})
    assert answer.status_code == 202 and answer.json()["delivery"] in ("queued", "started")
