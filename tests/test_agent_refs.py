"""The coding agent (and the test command, its code too) may not move refs outside its task
branch, and cannot land anything on main behind Baton's back (issue #7, "It can land on main
behind Baton's back").

Every test runs the real dispatcher against a real repository and the fake CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path

from backend.models import TaskStatus
from conftest import fake_task
from support import commit_and_push, git, origin_of, wait_for
from support import submit_task as submit, wait_task_done as wait_done
from test_dispatcher import baton_says

COMMIT_ON_MAIN = [
    {"git": ["checkout", "-q", "--ignore-other-worktrees", "main"]},
    {"write": "sneaky.txt", "text": "on main\n"},
    {"commit": "straight onto main"},
]


def rev(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref).strip()


def assert_main_untouched(project: Path, before: str) -> None:
    assert rev(origin_of(project), "main") == before
    assert rev(project, "main") == before
    assert git(project, "status", "--porcelain").strip() == ""  # no phantom changes in the user's checkout


def test_a_commit_on_main_in_the_worktree_never_lands_and_main_keeps_following(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(test_command=""), dispatch=True)
    project = agent.settings.project_dir
    before = rev(project, "main")
    task = wait_done(agent, submit(agent, fake_task("Commits on main", {"steps": COMMIT_ON_MAIN})))

    assert task.status is TaskStatus.failed and task.error_reason == "agent_moved_refs", task.error_message
    assert "refs/heads/main" in task.error_message and "restored" in task.error_message
    assert_main_untouched(project, before)
    # The agent's commit is kept on its task branch (locally and on the remote).
    assert git(project, "log", "--format=%s", f"task/{task.id}").splitlines()[0] == "straight onto main"
    assert git(origin_of(project), "show", f"task/{task.id}:sneaky.txt") == "on main\n"

    # Local main still follows what lands.
    nice = wait_done(agent, submit(agent, fake_task("Behaves", {"steps": [{"write": "ok.txt", "text": "ok\n"}]})))
    assert nice.status is TaskStatus.completed, nice.error_message
    wait_for(lambda: rev(project, "main") == nice.commit_sha, what="local main to follow")
    assert git(project, "status", "--porcelain").strip() == ""


def test_a_commit_on_main_with_failing_tests_is_not_left_on_local_main(agent_factory, fake_cli, repo):
    commit_and_push(repo, {"check.py": "import os, sys\nsys.exit(1 if os.path.exists('sneaky.txt') else 0)\n"},
                    "tests that fail on the agent's change")
    agent = agent_factory(config=fake_cli.config(test_command=f"{sys.executable} check.py"), project=repo,
                          dispatch=True)
    before = rev(repo, "main")
    task = wait_done(agent, submit(agent, fake_task("Commits on main", {"steps": COMMIT_ON_MAIN})))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_moved_refs", task.error_message
    assert_main_untouched(repo, before)
    assert git(repo, "show", f"task/{task.id}:sneaky.txt") == "on main\n"


def test_tags_and_other_branches_the_agent_moves_are_put_back(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    project = agent.settings.project_dir
    git(project, "branch", "feature")
    feature = rev(project, "feature")
    task = wait_done(agent, submit(agent, fake_task("Tags and moves", {"steps": [
        {"write": "w.txt", "text": "w\n"}, {"commit": "work"},
        {"git": ["tag", "v9.9"]},
        {"git": ["branch", "-f", "feature", "HEAD"]},
        {"git": ["branch", "scratch"]},
    ]})))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_moved_refs", task.error_message
    for ref in ("refs/tags/v9.9", "refs/heads/feature", "refs/heads/scratch"):
        assert ref in task.error_message
    assert git(project, "tag", "--list").strip() == ""
    assert rev(project, "feature") == feature
    assert git(project, "branch", "--list", "scratch").strip() == ""
    assert git(project, "show", f"task/{task.id}:w.txt") == "w\n"


def test_refs_the_user_moves_while_a_task_runs_are_left_alone(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    project = agent.settings.project_dir
    git(project, "branch", "mine")
    started, go = tmp_path / "started", tmp_path / "go"
    task_id = submit(agent, fake_task("Meanwhile", {"steps": [
        {"marker": str(started)}, {"wait_for": str(go)}, {"write": "t.txt", "text": "t\n"}]}))
    wait_for(started.exists, timeout=30, what="the agent to start")
    # The user works in their own checkout while the agent runs.
    (project / "user.txt").write_text("mine\n")
    git(project, "add", "user.txt")
    git(project, "commit", "-q", "-m", "the user's own commit")
    git(project, "tag", "user-tag")
    git(project, "branch", "-f", "mine", "HEAD")
    user_head = rev(project, "HEAD")
    go.touch()

    task = wait_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    assert rev(project, "main") == user_head and rev(project, "mine") == user_head
    assert rev(project, "user-tag") == user_head
    assert "changed git refs" not in baton_says(agent, task_id)


def test_a_test_command_that_moves_refs_is_caught(agent_factory, fake_cli, repo):
    commit_and_push(repo, {"sneaky_tests.py": (
        "import subprocess\n"
        "subprocess.run(['git', 'tag', 'from-the-tests'], check=True)\n"
        "subprocess.run(['git', 'checkout', '-q', '--ignore-other-worktrees', 'main'], check=True)\n"
        "subprocess.run(['git', 'commit', '-q', '--allow-empty', '-m', 'tests commit on main'], check=True)\n")},
        "tests that misbehave")
    agent = agent_factory(config=fake_cli.config(test_command=f"{sys.executable} sneaky_tests.py"), project=repo,
                          dispatch=True)
    before = rev(repo, "main")
    task = wait_done(agent, submit(agent, fake_task("Innocent", {"steps": [{"write": "i.txt", "text": "i\n"}]})))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_moved_refs", task.error_message
    assert "the test command" in task.error_message and "refs/tags/from-the-tests" in task.error_message
    assert_main_untouched(repo, before)
    assert git(repo, "tag", "--list").strip() == ""
    assert git(repo, "show", f"task/{task.id}:i.txt") == "i\n"  # the agent's work is kept


def test_the_projects_own_hooks_still_run_for_the_agent(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    project = agent.settings.project_dir
    seen = tmp_path / "hook-ran"
    hook = project / ".git" / "hooks" / "post-commit"
    hook.write_text(f"#!/bin/sh\necho post-commit >> {seen}\n")
    hook.chmod(0o755)
    task = wait_done(agent, submit(agent, fake_task("Commits", {"steps": [
        {"write": "c.txt", "text": "c\n"}, {"commit": "a commit of the agent"}]})))
    assert task.status is TaskStatus.completed, task.error_message
    assert seen.read_text() == "post-commit\n"


def test_commits_the_agent_left_only_on_refs_that_are_put_back_are_kept(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    project = agent.settings.project_dir
    task = wait_done(agent, submit(agent, fake_task("Works on a side branch", {"steps": [
        {"git": ["checkout", "-q", "-b", "scratch"]},
        {"write": "side.txt", "text": "side\n"}, {"commit": "work on a side branch"},
        {"git": ["checkout", "-q", "-"]},  # back on task/<id>: the side commit is on scratch only
        {"write": "stashed.txt", "text": "stashed\n"}, {"git": ["stash", "push", "-q", "-u"]},
    ]})))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_moved_refs", task.error_message
    assert git(project, "branch", "--list", "scratch").strip() == ""  # the ref itself is put back
    assert git(project, "stash", "list").strip() == ""
    # ...but neither the side commit nor the stashed file is lost: each is on a branch of the task.
    kept = git(project, "for-each-ref", "--format=%(refname)", f"refs/heads/task/{task.id}-saved-*").split()
    assert any(git(project, "ls-tree", "-r", "--name-only", ref).split().count("side.txt") for ref in kept), kept
    assert any("stashed.txt" in git(project, "log", "--format=", "--name-only", ref) for ref in kept)
    for ref in kept:
        assert ref.removeprefix("refs/heads/") in task.error_message


def test_the_agent_cannot_push_to_the_base_branch_or_tags_itself(agent_factory, fake_cli, repo):
    commit_and_push(repo, {"check.py": "import os, sys\nsys.exit(1 if os.path.exists('pushed.txt') else 0)\n"},
                    "tests that fail on the agent's change")
    agent = agent_factory(config=fake_cli.config(test_command=f"{sys.executable} check.py", max_merge_retries=0),
                          project=repo, dispatch=True)
    before = rev(repo, "main")
    task = wait_done(agent, submit(agent, fake_task("Pushes", {"steps": [
        {"write": "pushed.txt", "text": "p\n"}, {"commit": "pushed by the agent"},
        {"git": ["push", "-q", "origin", "HEAD:main"]},
        {"git": ["tag", "-f", "v1"]}, {"git": ["push", "-q", "origin", "v1"]},
        {"git": ["push", "-q", "origin", f"HEAD:refs/heads/task/{'x' * 3}"]},
    ]})))
    assert rev(origin_of(repo), "main") == before  # failing tests: nothing reaches origin main
    assert git(origin_of(repo), "tag", "--list").strip() == ""
    assert git(origin_of(repo), "branch", "--list", "task/xxx").strip() == ""
    assert task.error_reason in ("agent_moved_refs", "tests_failed"), task.error_message
    refusals = (agent.settings.logs_dir / f"{task.id}.jsonl").read_text()
    assert refusals.count("may push only") == 3


def test_inside_a_task_of_another_baton_the_projects_hooks_still_run(tmp_path):
    """Baton's own test suite run as a task's test command starts Baton again: the inner
    guard's hooks must still reach the inner project's hooks, not stop at the outer guard."""
    import os
    import subprocess

    from backend.dispatcher.refguard import RefGuard
    from support import GIT_ENV, make_repo

    outer_project, inner_project = make_repo(tmp_path, "outer"), make_repo(tmp_path, "inner")
    outer = RefGuard(outer_project, tmp_path / "outer-logs", "o1", "task/o1").env(dict(os.environ))
    env = RefGuard(inner_project, tmp_path / "inner-logs", "i1", "task/i1").env(outer)
    seen = tmp_path / "hook-ran"
    hook = inner_project / ".git" / "hooks" / "post-commit"
    hook.write_text(f"#!/bin/sh\necho ran >> '{seen}'\n")
    hook.chmod(0o755)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "inner"], cwd=inner_project,
                   env={**env, **GIT_ENV}, check=True)
    subprocess.run(["git", "tag", "inner-tag"], cwd=inner_project, env={**env, **GIT_ENV}, check=True)
    assert seen.read_text() == "ran\n"
    assert "refs/tags/inner-tag" in (tmp_path / "inner-logs" / "i1.refs.log").read_text()


def test_an_agent_fetch_that_tells_the_truth_is_not_a_violation(agent_factory, fake_cli, tmp_path):
    # `git fetch` moves remote-tracking refs to what the remote really holds: harmless, common,
    # and not worth failing paid work for (landing never trusts those refs anyway).
    agent = agent_factory(config=fake_cli.config(test_command=""), dispatch=True)
    project = agent.settings.project_dir
    started, go = tmp_path / "started", tmp_path / "go"
    task_id = submit(agent, fake_task("Fetches", {"steps": [
        {"marker": str(started)}, {"wait_for": str(go)},
        {"git": ["fetch", "-q", "origin"]}, {"write": "f.txt", "text": "f\n"}]}))
    wait_for(started.exists, what="the agent to start")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin_of(project)), str(other))
    git(other, "commit", "-q", "--allow-empty", "-m", "someone else landed meanwhile")
    git(other, "push", "-q", "origin", "HEAD:main")
    go.touch()
    task = wait_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    assert git(origin_of(project), "log", "-2", "--format=%s", "main").splitlines()[1] == "someone else landed meanwhile"
