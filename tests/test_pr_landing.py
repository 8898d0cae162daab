"""landing: pr end to end: a real agent with the fake CLI, the GitHub stand-in as its own process.
The task waits in review with its pull request, completes when it is merged, fails when it is
closed unmerged; changes requested update the same pull request; reject closes it."""

from __future__ import annotations

import json

import httpx
import pytest

from backend.config import GitHubConfig
from backend.models import TaskStatus
from conftest import fake_task
from fakes.github_standin import GitHubStandIn
from support import git, origin_of, submit_task, task_events, wait_for

TOKEN = "ghp_standin_token_0123456789"
HELLO = {"steps": [{"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}],
         "on_resume": [{"steps": [{"append": "hello.txt", "text": "and welcome\n"}, {"commit": "review: welcome"}]}]}


@pytest.fixture
def github(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    # The stand-in reads branch heads from the agent's origin (made by agent_factory as project0).
    with GitHubStandIn(TOKEN, origin=tmp_path / "project0-origin.git") as gh:
        yield gh


def pr_agent(agent_factory, fake_cli, github):
    config = fake_cli.config(landing="pr", test_command="test -f hello.txt",
                             github=GitHubConfig(repo="acme/widgets", api_url=github.url, poll_seconds=0.2))
    return agent_factory(config=config, dispatch=True)


def wait_status(agent, task_id, *statuses, timeout=60):
    return wait_for(lambda: (t := agent.store.get(task_id)).status in statuses and t, timeout=timeout,
                    what=f"task {task_id} to be {' or '.join(s.value for s in statuses)}")


def test_a_pr_task_completes_when_its_pull_request_is_merged(agent_factory, fake_cli, github):
    agent = pr_agent(agent_factory, fake_cli, github)
    origin = origin_of(agent.settings.project_dir)
    before = git(origin, "rev-parse", "main").strip()
    task_id = submit_task(agent, fake_task("Say hello", HELLO))
    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed)
    assert task.status is TaskStatus.review, task.error_message
    assert task.pr is not None and task.pr.number == 1 and task.pr.state == "open"
    assert git(origin, "rev-parse", f"task/{task_id}").strip() == task.review_sha  # pushed for the PR
    assert git(origin, "rev-parse", "main").strip() == before  # Baton lands nothing itself
    pull = httpx.get(f"{github.url}/repos/acme/widgets/pulls/1", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert pull["head"]["ref"] == f"task/{task_id}" and pull["base"]["ref"] == "main"
    assert pull["title"] == "Say hello" and f"Opened by Baton for task {task_id}" in pull["body"]

    github.set_checks(task.review_sha, check_runs=[{"name": "ci", "status": "completed", "conclusion": "success"}])
    wait_for(lambda: (pr := agent.store.get(task_id).pr) and pr.checks and pr.checks.state == "success",
             what="the checks to show")
    summary = agent.client.get("/agent/summaries", params={"status": "review"}).json()["tasks"][0]
    assert summary["pr"] == {"number": 1, "state": "open", "checks": "success"}

    # Someone merges it on GitHub (here: main fast-forwards to the reviewed commit).
    git(agent.settings.project_dir, "push", "-q", "origin", f"{task.review_sha}:refs/heads/main")
    github.merge(1, task.review_sha)
    task = wait_status(agent, task_id, TaskStatus.completed, TaskStatus.failed)
    assert task.status is TaskStatus.completed and task.commit_sha == task.review_sha
    assert task.pr.state == "merged"
    wait_for(lambda: git(agent.settings.project_dir, "branch", "--list", f"task/{task_id}").strip() == "",
             what="the merged branch to go")
    # The token went to GitHub in the Authorization header only, and nowhere else.
    for request in github.requests():
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["authorization"] == f"Bearer {TOKEN}" and TOKEN not in request["path"] + json.dumps(request["query"])
    for path in [agent.store.path, *agent.settings.logs_dir.glob("*")]:
        if path.is_file():
            assert TOKEN not in path.read_text(errors="replace"), path


def test_a_closed_pull_request_fails_the_task_and_keeps_the_branch(agent_factory, fake_cli, github):
    agent = pr_agent(agent_factory, fake_cli, github)
    task_id = submit_task(agent, fake_task("Say hello", HELLO))
    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed)
    github.close(task.pr.number)
    task = wait_status(agent, task_id, TaskStatus.failed, TaskStatus.completed)
    assert task.status is TaskStatus.failed and task.error_reason == "pr_closed"
    assert "closed without being merged" in task.error_message
    assert git(agent.settings.project_dir, "rev-parse", f"task/{task_id}").strip() == task.review_sha


def test_changes_requested_on_a_pull_request_update_the_same_one_and_reject_closes_it(agent_factory, fake_cli, github):
    agent = pr_agent(agent_factory, fake_cli, github)
    origin = origin_of(agent.settings.project_dir)
    task_id = submit_task(agent, fake_task("Say hello", HELLO))
    first = wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed)
    sent = agent.client.post(f"/agent/tasks/{task_id}/request-changes", json={"text": "welcome them"})
    assert sent.status_code == 200, sent.text
    wait_for(lambda: agent.store.get(task_id).status is TaskStatus.review
             and agent.store.get(task_id).review_sha != first.review_sha, what="the updated pull request")
    task = agent.store.get(task_id)
    assert task.pr.number == first.pr.number  # the same pull request, its branch moved on
    assert git(origin, "show", f"task/{task_id}:hello.txt") == "hi\nand welcome\n"
    # Approving is GitHub's business for a pull request.
    refused = agent.client.post(f"/agent/tasks/{task_id}/approve", json={})
    assert refused.status_code == 409

    rejected = agent.client.post(f"/agent/tasks/{task_id}/reject", json={"reason": "wrong approach"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "cancelled"
    assert [r["method"] for r in github.requests()].count("PATCH") == 1
    pull = httpx.get(f"{github.url}/repos/acme/widgets/pulls/1", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert pull["state"] == "closed" and not pull["merged"]
    assert any("pull request #1 closed" in (e.get("text") or "") for e in task_events(agent, task_id))


def test_a_pr_task_without_a_token_fails_clearly_and_keeps_its_work(agent_factory, fake_cli, github, monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN")
    agent = pr_agent(agent_factory, fake_cli, github)
    health = agent.client.get("/agent/health").json()
    assert any(p["code"] == "github_unavailable" and "GITHUB_TOKEN" in p["message"] for p in health["problems"])
    task_id = submit_task(agent, fake_task("Say hello", HELLO))
    task = wait_status(agent, task_id, TaskStatus.failed, TaskStatus.review)
    assert task.status is TaskStatus.failed and task.error_reason == "pr_failed"
    assert "GITHUB_TOKEN" in task.error_message
    assert git(agent.settings.project_dir, "show", f"task/{task_id}:hello.txt") == "hi\n"
