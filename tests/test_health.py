"""/agent/health: `ok` only when nothing stands in the way, else `degraded` with the problems;
it names the project by a stable id and needs no token."""

from __future__ import annotations

import pytest

from backend.config import AgentConfig, project_slug
from backend.models import TaskStatus
from conftest import fake_task
from support import git, make_repo, wait_for

TOKEN = "health-test-token-0123456789"


def test_healthy_agent_says_ok_with_its_project_id(agent_factory, fake_cli, tmp_path):
    repo = make_repo(tmp_path, "My Project_2")
    agent = agent_factory(project=repo, config=fake_cli.config(), token=TOKEN)
    body = agent.client.get("/agent/health").json()  # no token: health is public
    assert set(body) == {"status", "project", "project_id", "version", "uptime_seconds", "problems"}
    assert (body["status"], body["problems"]) == ("ok", [])
    assert (body["project"], body["project_id"]) == ("My Project_2", "my-project-2")


def test_configured_project_id_is_reported(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(project_id="baton-main"))
    assert agent.client.get("/agent/health").json()["project_id"] == "baton-main"


@pytest.mark.parametrize("name, slug", [
    ("baton", "baton"), ("My Project_2", "my-project-2"), ("--Foo..Bar__", "foo-bar"), ("日本", "project"),
    ("a" * 39 + "-b" + "c" * 10, "a" * 39), ("x" * 60, "x" * 40),
])
def test_project_id_default_is_a_slug_of_the_folder_name(name, slug):
    assert project_slug(name) == slug


@pytest.mark.parametrize("value", ["Baton", "-x", "a" * 41, "abc\n", "a b", ""])
def test_project_id_must_be_a_slug(value):
    with pytest.raises(ValueError):
        AgentConfig(project_id=value)


def test_unreadable_store_makes_health_degraded_with_the_reason(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), token=TOKEN)
    agent.settings.store_path.unlink()
    agent.settings.store_path.mkdir()  # something that is not a file sits where the store was
    resp = agent.client.get("/agent/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "degraded"
    [problem] = body["problems"]
    assert problem["code"] == "store_unreadable" and str(agent.settings.store_path) in problem["message"]
    agent.settings.store_path.rmdir()  # put a valid store back: healthy again
    agent.store.initialize()
    wait_for(lambda: agent.client.get("/agent/health").json()["status"] == "ok", what="health to recover")


def test_a_repository_without_commits_is_degraded_and_claims_nothing(agent_factory, fake_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    agent = agent_factory(project=empty, config=fake_cli.config(push_to_remote=False), dispatch=True)
    body = agent.client.get("/agent/health").json()
    assert body["status"] == "degraded"
    assert [p["code"] for p in body["problems"]] == ["no_commits"]
    assert "make a first commit" in body["problems"][0]["message"]

    task_id = agent.client.post("/agent/tasks", json=fake_task("Wait for a commit", {"steps": [
        {"write": "a.txt", "text": "a\n"}, {"commit": "feature: a"}]})).json()["id"]
    dispatcher = agent.app.state.dispatcher
    assert dispatcher.tick() == 0
    task = agent.store.get(task_id)
    assert (task.status, task.attempts) == (TaskStatus.pending, 0)
    assert fake_cli.calls() == []

    (empty / "README.md").write_text("# first\n")
    git(empty, "add", "README.md")
    git(empty, "commit", "-q", "-m", "first commit")
    assert agent.client.get("/agent/health").json()["status"] == "ok"
    dispatcher.wake()
    done = wait_for(lambda: (t := agent.store.get(task_id)).status is not TaskStatus.pending
                    and t.status is not TaskStatus.in_progress and t, timeout=60, what="the task to run")
    assert done.status is TaskStatus.completed, done.error_message
