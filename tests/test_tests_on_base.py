"""Tests that fail on the base commit itself fail the task at once, with no feedback turn
(issue #7: the default `test_command: pytest` in a project without tests cost four paid
sessions per task). The base's verdict is cached per base sha."""

from __future__ import annotations

import sys
from pathlib import Path

from backend.dispatcher.recovery import reconcile
from backend.models import TaskStatus
from conftest import fake_task
from support import commit_and_push, git
from support import submit_task as submit, wait_task_done as wait_done
from test_dispatcher import baton_says


def no_tests_command(runs: Path) -> str:
    """Like pytest in a project without tests: prints a line and exits 5, wherever it runs."""
    return (f"{sys.executable} -c \"import os, sys; open({str(runs)!r}, 'a').write(os.getcwd() + '\\n'); "
            f"print('no tests ran'); sys.exit(5)\"")


def test_tests_broken_on_base_fail_the_task_without_feedback_turns(agent_factory, fake_cli, tmp_path):
    runs = tmp_path / "test-runs.txt"
    agent = agent_factory(config=fake_cli.config(test_command=no_tests_command(runs)), dispatch=True)
    project = agent.settings.project_dir
    base = git(project, "rev-parse", "main").strip()

    first = wait_done(agent, submit(agent, fake_task("One", {"steps": [{"write": "a.txt", "text": "a\n"}]})))
    assert first.status is TaskStatus.failed and first.error_reason == "tests_broken_on_base", first.error_message
    assert len(fake_cli.calls()) == 1  # no resumed session
    assert base[:12] in first.error_message and "no tests ran" in first.error_message
    assert "exit status 5" in first.error_message and "sys.exit(5)" in first.error_message
    assert git(project, "show", f"task/{first.id}:a.txt") == "a\n"  # the work is kept

    second = wait_done(agent, submit(agent, fake_task("Two", {"steps": [{"write": "b.txt", "text": "b\n"}]})))
    assert second.status is TaskStatus.failed and second.error_reason == "tests_broken_on_base"
    assert len(fake_cli.calls()) == 2

    # Three runs in all: each task's branch, and the base once (the second task used the cache).
    places = [Path(line) for line in runs.read_text().splitlines()]
    on_base = [p for p in places if p.name.startswith(".base-")]
    assert len(places) == 3 and len(on_base) == 1
    assert "on the base" not in (agent.settings.logs_dir / f"{second.id}.test.log").read_text()
    assert "known from an earlier run" in baton_says(agent, second.id)
    # The base's worktree is gone again.
    assert not on_base[0].exists()
    assert ".base-" not in git(project, "worktree", "list")


def test_tests_failing_only_on_the_branch_still_get_a_feedback_turn(agent_factory, fake_cli, repo):
    commit_and_push(repo, {"check.py": "import os, sys\nsys.exit(1 if os.path.exists('bad.txt') else 0)\n"},
                    "a check")
    agent = agent_factory(config=fake_cli.config(test_command=f"{sys.executable} check.py", max_merge_retries=1),
                          project=repo, dispatch=True)
    base = git(repo, "rev-parse", "main").strip()
    task = wait_done(agent, submit(agent, fake_task("Breaks it", {"steps": [{"write": "bad.txt", "text": "x\n"}]})))
    assert task.status is TaskStatus.failed and task.error_reason == "tests_failed"
    assert len(fake_cli.calls()) == 2  # the first run and one feedback turn
    assert f"tests on {base[:12]} pass" in baton_says(agent, task.id)


def test_recovery_removes_a_leftover_base_worktree(repo, fake_cli):
    from backend.agent.settings import AgentSettings
    from backend.dispatcher.dispatcher import Dispatcher
    from backend.mirrors import MirrorWriter
    from backend.store import TaskStore

    settings = AgentSettings(project_dir=repo, config=fake_cli.config())
    store = TaskStore(settings.store_path, mirrors=MirrorWriter(settings.tasks_dir))
    store.initialize()
    dispatcher = Dispatcher(settings, store)
    try:
        leftover = repo / "worktrees" / ".base-0123456789ab"
        git(repo, "worktree", "add", "-q", "--detach", str(leftover), "HEAD")
        (leftover / "report.txt").write_text("left by a crashed test run\n")
        done = reconcile(store, dispatcher.ctx.git, settings.config, dispatcher.owner)
        assert not leftover.exists()
        assert ".base-" not in git(repo, "worktree", "list")
        assert any(".base-0123456789ab" in line for line in done)
    finally:
        dispatcher.shutdown()


def test_a_failing_base_verdict_is_checked_again_after_a_while(repo):
    # A pass is final for its sha; a failure only for a while, so one flaky run on the base
    # cannot block every later task until a restart (nothing lands meanwhile, the base never moves).
    from backend.config import AgentConfig
    from backend.dispatcher.basetests import BaseTests
    from backend.dispatcher.process import ProcessOutcome
    from backend.dispatcher.workspace import ProjectGit

    project_git = ProjectGit(repo, AgentConfig(base_branch="main"))
    sha = git(repo, "rev-parse", "HEAD").strip()
    now = [1000.0]
    runs: list[Path] = []

    def run(argv, cwd):  # the base worktree really is made and removed around this call
        runs.append(cwd)
        assert (cwd / "README.md").exists()
        return ProcessOutcome(exit_code=1 if len(runs) == 1 else 0, stopped=None, duration=0.0, pid=0), "flaky"

    cache = BaseTests(failure_ttl=60, clock=lambda: now[0])
    first, cached = cache.verdict(project_git, "t", ["t"], sha, 10, run)
    assert not first.passed and not cached
    assert cache.verdict(project_git, "t", ["t"], sha, 10, run) == (first, True)  # within the while
    now[0] += 61
    second, cached = cache.verdict(project_git, "t", ["t"], sha, 10, run)
    assert second.passed and not cached and len(runs) == 2
    now[0] += 10_000
    assert cache.verdict(project_git, "t", ["t"], sha, 10, run) == (second, True)  # a pass stays
    assert not any(p.exists() for p in runs)
