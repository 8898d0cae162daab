"""PullRequests (landing: pr) with a real store, a real git repository and the stand-in GitHub
process: opening, following merged / closed pull requests and their checks, the watcher, rate
limits, and a token that never leaves the Authorization header."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from backend.config import AgentConfig, GitHubConfig
from backend.dispatcher.pullrequests import PullRequests
from backend.github import GitHubError
from backend.models import NewTask, Owner, TaskStatus
from backend.store import InvalidTransitionError, TaskStore
from fakes.github_standin import GitHubStandIn
from support import free_port, git, make_repo, wait_for

TOKEN = "ghp_pull_requests_secret_987654321"
ENV = "BATON_TEST_GH_TOKEN"
OWNER = Owner(pid=os.getpid(), host="test", instance="pull-requests")


class World:
    def __init__(self, tmp_path: Path, gh: GitHubStandIn, **github) -> None:
        self.project = tmp_path / "project"
        self.gh = gh
        settings = {"repo": "acme/widgets", "api_url": gh.url, "token_env": ENV, "poll_seconds": 0.05, **github}
        self.config = AgentConfig(landing="pr", github=GitHubConfig(**settings))
        self.store = TaskStore(self.project / "data" / "dev-tasks.json")
        self.store.initialize()
        self.prs = PullRequests(self.store, self.config, self.project, "main")

    def task_in_review(self, title: str = "Add a feature"):
        """A task whose pushed branch has one commit and an open pull request, in review."""
        task = self.store.create(NewTask(title=title, content="Please add it.\n<b>untrusted</b>"))
        branch = f"task/{task.id}"
        base = git(self.project, "rev-parse", "main").strip()
        git(self.project, "checkout", "-q", "-b", branch)
        (self.project / f"{task.id}.txt").write_text("work\n")
        git(self.project, "add", f"{task.id}.txt")
        git(self.project, "commit", "-q", "-m", title)
        git(self.project, "push", "-q", "origin", branch)
        git(self.project, "checkout", "-q", "main")
        sha = git(self.project, "rev-parse", branch).strip()
        self.store.claim(OWNER, 60, task.id)
        info = self.prs.open_for(self.store.get(task.id), branch, "main")
        assert info.head_sha == sha
        return self.store.transition(task.id, TaskStatus.review, expect={TaskStatus.in_progress},
                                     pr=info, review_sha=sha, review_base=base)

    def branch_exists(self, task_id: str) -> bool:
        return bool(git(self.project, "branch", "--list", f"task/{task_id}").strip())

    def events(self, task_id: str) -> list[dict]:
        path = self.project / "logs" / f"{task_id}.events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, TOKEN)
    make_repo(tmp_path)
    with GitHubStandIn(TOKEN, origin=tmp_path / "project-origin.git") as gh:
        w = World(tmp_path, gh)
        yield w
        w.prs.stop()


def test_open_for_titles_the_pull_request_and_a_second_open_finds_it(world):
    task = world.task_in_review("Add widgets")
    assert task.pr.number == 1 and task.pr.state == "open"
    again = world.prs.open_for(task, f"task/{task.id}", "main")
    assert again.number == 1
    created = [r for r in world.gh.requests() if r["method"] == "POST"]
    assert len(created) == 2  # the second was refused as a duplicate, then found by head


def test_a_merged_pull_request_completes_the_task_and_deletes_its_branch(world):
    task = world.task_in_review()
    world.prs.start()
    world.gh.merge(task.pr.number, sha="9" * 40)
    done = wait_for(lambda: (t := world.store.get(task.id)).status is TaskStatus.completed and t,
                    what="the merged pull request to complete the task")
    assert done.commit_sha == "9" * 40 and done.pr.state == "merged" and done.pr.merge_commit_sha == "9" * 40
    assert done.base_sha == task.review_base
    wait_for(lambda: not world.branch_exists(task.id), what="the landed branch to be deleted")
    world.prs.stop()
    assert any(e["kind"] == "baton" and "#1 was merged" in e["text"] for e in world.events(task.id))


def test_a_pull_request_closed_unmerged_fails_the_task_and_keeps_its_branch(world):
    task = world.task_in_review()
    world.gh.close(task.pr.number)
    failed = world.prs.refresh(task.id)
    assert failed.status is TaskStatus.failed and failed.error_reason == "pr_closed"
    assert failed.error_message == "pull request #1 was closed without being merged"
    assert failed.pr.state == "closed" and failed.commit_sha is None
    assert world.branch_exists(task.id)
    assert any("closed without being merged" in e["text"] for e in world.events(task.id))


def test_checks_on_the_head_are_reflected_on_the_task(world):
    task = world.task_in_review()
    assert world.prs.refresh(task.id).pr.checks.state == "none"
    world.gh.set_checks(task.pr.head_sha, [{"name": "ci", "status": "in_progress", "conclusion": None}])
    pending = world.prs.refresh(task.id)
    assert pending.status is TaskStatus.review and pending.pr.checks.state == "pending"
    world.gh.set_checks(task.pr.head_sha, [{"name": "ci", "status": "completed", "conclusion": "failure"}],
                        [{"context": "lint", "state": "success"}])
    failing = world.prs.refresh(task.id)
    assert (failing.pr.checks.state, failing.pr.checks.failed, failing.pr.checks.passed) == ("failure", 1, 1)
    assert world.store.get(task.id).pr.checks.state == "failure"
    texts = [e["text"] for e in world.events(task.id)]
    assert "checks on pull request #1: pending" in texts and "checks on pull request #1: failure" in texts


def test_close_closes_the_pull_request_for_a_rejected_task(world, monkeypatch):
    task = world.task_in_review()
    monkeypatch.delenv(ENV)
    assert f"${ENV}" in world.prs.close(task)  # best effort: says why, raises nothing
    monkeypatch.setenv(ENV, TOKEN)
    assert world.prs.close(task) is None
    assert world.prs.client().pull_request(task.pr.number).state == "closed"


def test_no_token_or_no_repository_is_a_clear_health_problem(tmp_path, world, monkeypatch):
    monkeypatch.delenv(ENV)
    problem = world.prs.problem()
    assert problem["code"] == "github_unavailable" and f"${ENV}" in problem["message"]
    with pytest.raises(GitHubError) as err:
        world.prs.client()
    assert err.value.kind == "no_token"
    monkeypatch.setenv(ENV, TOKEN)
    assert world.prs.problem() is None

    # The remote is a local path: no repository unless agent.yaml names one.
    unnamed = AgentConfig(landing="pr", github=GitHubConfig(api_url=world.gh.url, token_env=ENV))
    problem = PullRequests(world.store, unnamed, world.project, "main").problem()
    assert problem["code"] == "github_unavailable" and "github.repo" in problem["message"]


def test_no_problem_unless_some_task_needs_pull_requests(world, monkeypatch):
    monkeypatch.delenv(ENV)
    auto = AgentConfig(github=world.config.github)
    prs = PullRequests(world.store, auto, world.project, "main")
    assert prs.problem() is None
    world.store.create(NewTask(title="By pull request", landing="pr"))
    assert prs.problem()["code"] == "github_unavailable"


def test_a_rate_limit_pauses_the_watcher_until_the_reset_and_nothing_is_lost(world):
    task = world.task_in_review()
    world.gh.rate_limit(remaining=0, reset_in=1)
    world.gh.merge(task.pr.number)
    world.prs.start()
    done = wait_for(lambda: (t := world.store.get(task.id)).status is TaskStatus.completed and t, timeout=20,
                    what="the task to complete once the rate limit is over")
    assert done.commit_sha == task.review_sha
    refused = [r for r in world.gh.requests() if r["status"] == 403]
    assert len(refused) == 1  # one refusal, then no call at all until GitHub's reset


def test_a_rate_limit_pauses_direct_calls_too(world):
    task = world.task_in_review()
    world.gh.rate_limit(remaining=0, reset_in=60)
    for _ in range(2):
        with pytest.raises(GitHubError) as err:
            world.prs.refresh(task.id)
        assert err.value.kind == "rate_limited" and err.value.retry_after > 0
    assert len([r for r in world.gh.requests() if r["status"] == 403]) == 1  # the second never went out
    assert world.store.get(task.id).status is TaskStatus.review


def test_the_watcher_survives_github_being_down(tmp_path, world, caplog):
    down = World(tmp_path, world.gh)
    task = down.task_in_review()
    down.config = down.config.model_copy(update={"github": down.config.github.model_copy(
        update={"api_url": f"http://127.0.0.1:{free_port()}"})})
    down.prs = PullRequests(down.store, down.config, down.project, "main")
    with caplog.at_level(logging.WARNING):
        down.prs.poll_once()
    assert down.store.get(task.id).status is TaskStatus.review
    assert "cannot reach GitHub" in caplog.text


def test_the_token_never_reaches_the_store_logs_or_events(tmp_path, world, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    merged, closed, checked = world.task_in_review("a"), world.task_in_review("b"), world.task_in_review("c")
    world.gh.merge(merged.pr.number)
    world.gh.close(closed.pr.number)
    world.gh.set_checks(checked.pr.head_sha, [{"name": "ci", "status": "completed", "conclusion": "success"}])
    world.prs.poll_once()
    assert [world.store.get(t.id).status for t in (merged, closed, checked)] == [
        TaskStatus.completed, TaskStatus.failed, TaskStatus.review]
    monkeypatch.setenv(ENV, "ghp_refused_token_555")
    world.prs.poll_once()  # refused: a warning naming the variable
    assert f"GitHub refused the token in ${ENV} (401)" in caplog.text
    for secret in (TOKEN, "ghp_refused_token_555"):
        assert secret not in caplog.text
        for path in world.project.rglob("*"):
            if path.is_file() and ".git" not in path.parts:
                assert secret.encode() not in path.read_bytes(), path
    for request in world.gh.requests():
        rest = {k: v for k, v in request["headers"].items() if k.lower() != "authorization"}
        assert TOKEN not in json.dumps([rest, request["path"], request["query"]])


def test_refresh_of_a_task_no_longer_in_review_asks_github_nothing(world):
    task = world.task_in_review()
    world.store.transition(task.id, TaskStatus.cancelled, expect={TaskStatus.review})
    before = len(world.gh.requests())
    with pytest.raises(InvalidTransitionError):
        world.prs.refresh(task.id)
    world.prs.poll_once()
    assert len(world.gh.requests()) == before
