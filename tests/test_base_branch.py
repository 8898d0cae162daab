"""The base branch: detected when not configured (remote HEAD, else the checkout's branch),
refused at start when configured but missing, resolved once for every consumer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from backend.agent.basebranch import check_base_branch, detect_base_branch
from backend.config import AgentConfig, ConfigError
from backend.models import TaskStatus
from conftest import fake_task
from support import free_port, git, make_repo, run_agent, wait_for


def init_repo(path: Path, branch: str, commit: bool = True) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", branch)
    if commit:
        (path / "README.md").write_text("# demo\n")
        git(path, "add", "README.md")
        git(path, "commit", "-q", "-m", "initial commit")
    return path


def cloned(tmp_path: Path, branch: str) -> tuple[Path, Path]:
    """A bare origin whose one branch (and HEAD) is `branch`, and a clone of it."""
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    subprocess.run(["git", "init", "-q", "--bare", "-b", branch, str(origin)], check=True)
    git(init_repo(tmp_path / "seed", branch), "push", "-q", str(origin), branch)
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    return origin, clone


def test_a_master_repository_lands_its_first_task_on_master(agent_factory, fake_cli, tmp_path):
    """`git init` makes master on Debian: the newcomer's first task must land, not fail internal."""
    repo = init_repo(tmp_path / "fresh", "master")
    agent = agent_factory(project=repo, config=fake_cli.config(push_to_remote=False), dispatch=True)
    assert agent.app.state.settings.config.base_branch == "master"
    task_id = agent.client.post("/agent/tasks", json=fake_task("First task", {"steps": [
        {"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}]})).json()["id"]
    task = wait_for(lambda: (t := agent.store.get(task_id)).status in (TaskStatus.completed, TaskStatus.failed) and t,
                    timeout=60, what="the task to finish")
    assert task.status is TaskStatus.completed, task.error_message
    assert git(repo, "rev-parse", "master").strip() == task.commit_sha
    assert git(repo, "show", "master:hello.txt") == "hi\n"
    assert agent.client.get("/agent/commits", params={"count": 1}).json()[0]["sha"] == task.commit_sha
    assert "main" not in git(repo, "branch", "--list", "main")  # no `main` was invented


def test_detect_prefers_the_remote_head(tmp_path):
    _, clone = cloned(tmp_path, "trunk")
    git(clone, "checkout", "-q", "-b", "feature")  # the checkout is elsewhere: the remote decides
    assert git(clone, "symbolic-ref", "refs/remotes/origin/HEAD").strip() == "refs/remotes/origin/trunk"
    assert detect_base_branch(clone, "origin") == "trunk"


def test_detect_falls_back_to_the_checkout_branch_even_without_commits(tmp_path):
    assert detect_base_branch(init_repo(tmp_path / "a", "master"), "origin") == "master"
    assert detect_base_branch(init_repo(tmp_path / "b", "develop", commit=False), "origin") == "develop"
    detached = init_repo(tmp_path / "c", "work")
    git(detached, "checkout", "-q", "--detach")
    git(detached, "branch", "-q", "master")
    assert detect_base_branch(detached, "origin") == "master"  # detached: the usual name, if it exists


def test_configured_base_branch_that_does_not_exist_refuses_to_start(repo):
    (repo / "agent.yaml").write_text("base_branch: develop\n")
    result = run_agent(["--port", str(free_port()), "--project-dir", str(repo)], repo)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"baton-agent: {repo / 'agent.yaml'}: base_branch: branch 'develop' does not exist in {repo} "
                     "(branches: main, origin/main)"]
    assert not (repo / "data").exists()


def test_configured_base_branch_may_exist_only_on_the_remote(tmp_path):
    repo = make_repo(tmp_path)
    git(repo, "push", "-q", "origin", "main:release")
    git(repo, "fetch", "-q", "origin")
    assert git(repo, "branch", "--list", "release").strip() == ""
    config = AgentConfig(base_branch="release")
    check_base_branch(repo, config, repo / "agent.yaml")  # origin/release is enough
    with pytest.raises(ConfigError, match="branch 'nope' does not exist"):
        check_base_branch(repo, AgentConfig(base_branch="nope"), repo / "agent.yaml")


def test_one_resolution_for_every_consumer(agent_factory, tmp_path):
    repo = init_repo(tmp_path / "m", "master")
    agent = agent_factory(project=repo)
    dispatcher = agent.app.state.dispatcher
    assert agent.app.state.settings.config.base_branch == "master"
    assert dispatcher.config.base_branch == "master" and dispatcher.ctx.git.base == "master"
    commits = agent.client.get("/agent/commits").json()
    assert [c["message"] for c in commits] == ["initial commit"]


def test_a_dangling_remote_head_is_not_the_base(tmp_path):
    """`origin/HEAD` still names `master` after the remote renamed it and a prune removed
    `origin/master`: detection must not pick a branch that does not exist."""
    origin, clone = cloned(tmp_path, "master")
    git(origin, "branch", "-m", "master", "main")  # renamed upstream
    git(clone, "fetch", "-q", "--prune", "origin")
    assert git(clone, "symbolic-ref", "refs/remotes/origin/HEAD").strip() == "refs/remotes/origin/master"
    assert detect_base_branch(clone, "origin") == "master"  # the checkout's branch, which exists locally
    git(clone, "branch", "-q", "-m", "master", "work")
    assert detect_base_branch(clone, "origin") == "work"


def test_detached_head_uses_the_only_branch_or_refuses_to_start(tmp_path):
    repo = init_repo(tmp_path / "d", "work")
    git(repo, "checkout", "-q", "--detach")
    assert detect_base_branch(repo, "origin") == "work"  # the only branch there is
    git(repo, "branch", "-q", "other")
    result = run_agent(["--port", str(free_port()), "--project-dir", str(repo)], repo)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"baton-agent: {repo / 'agent.yaml'}: base_branch: not set, and it cannot be detected (HEAD is detached; "
        f"'main' does not exist in {repo}): set it (branches: other, work)"]
    assert not (repo / "data").exists()


def test_a_base_branch_missing_on_the_configured_remote_refuses_to_start(tmp_path):
    """`git init` + `git remote add origin <new empty repository>`: every task would fetch
    `origin/master` and fail `internal`; the start says what to do instead."""
    origin = tmp_path / "empty.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "master", str(origin)], check=True)
    repo = init_repo(tmp_path / "fresh", "master")
    git(repo, "remote", "add", "origin", str(origin))
    result = run_agent(["--port", str(free_port()), "--project-dir", str(repo)], repo)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"baton-agent: {repo / 'agent.yaml'}: base_branch: branch 'master' is not on remote 'origin' "
        "(no refs/remotes/origin/master): push it first (`git push origin master`), or run "
        "`git fetch origin` if it is there already"]
    assert not (repo / "data").exists()
    git(repo, "push", "-q", "origin", "master")
    check_base_branch(repo, AgentConfig(base_branch="master"), repo / "agent.yaml")  # now it is fine


def test_commits_of_a_base_branch_that_exists_only_on_the_remote(agent_factory, tmp_path):
    """/agent/commits shows the base branch's history, not whatever the checkout is on."""
    repo = make_repo(tmp_path)
    git(repo, "checkout", "-q", "-b", "tmp")
    (repo / "release.txt").write_text("r\n")
    git(repo, "add", "release.txt")
    git(repo, "commit", "-q", "-m", "release only")
    git(repo, "push", "-q", "origin", "tmp:release")
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "-D", "tmp")
    git(repo, "fetch", "-q", "origin")
    agent = agent_factory(project=repo, config=AgentConfig(base_branch="release"))
    assert [c["message"] for c in agent.client.get("/agent/commits").json()] == ["release only", "initial commit"]
