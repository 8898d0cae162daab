"""`baton-dashboard --demo`: the demo folder (backend/dashboard/demo.py) is created with a sample
repository whose own tests pass, reused, reset, never taken from a person; and the whole demo,
as a real process, lands every seeded task on the sample's origin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from backend.config import load_agent_config
from backend.dashboard import demo
from backend.dashboard.config import load_dashboard_config
from backend.models import NewTask
from backend.store import TaskStore
from support import ROOT, free_port, git, wait_for, wait_for_http

DASHBOARD = [sys.executable, "-m", "backend.dashboard.cli"]


def store_of(d: demo.Demo) -> TaskStore:
    return TaskStore(d.sample / "data" / "dev-tasks.json")


def test_the_demo_folder_holds_a_sample_repo_with_an_origin_passing_tests_and_seeded_tasks(tmp_path):
    d = demo.prepare(tmp_path / "demo")
    assert d.created
    # The sample's own tests pass with nothing but the standard library.
    proc = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=d.sample, capture_output=True, text=True)
    assert proc.returncode == 0 and "Ran 2 tests" in proc.stderr, proc.stderr
    assert git(d.origin, "rev-parse", "main") == git(d.sample, "rev-parse", "main")
    assert git(d.sample, "status", "--porcelain") == ""  # agent.yaml and the store are not the user's changes
    config = load_agent_config(d.sample / "agent.yaml")
    assert config.runtime == "demo" and config.configured_runtimes == ["demo"]
    assert config.test_command.startswith(sys.executable) and config.base_branch == "main"
    assert config.push_to_remote and config.max_parallel_workers == 2
    tasks = store_of(d).list_tasks()
    assert len(tasks) == 5 and all("\nDEMO: {" in t.content for t in tasks)
    assert sum('"fix"' in t.content for t in tasks) == 1  # the one that lands after a feedback turn
    projects = load_dashboard_config(d.projects_file).projects
    assert [(p.id, p.path, p.agent_url, p.start) for p in projects] == [("demo", str(d.sample), d.agent_url, True)]
    assert config.project_id == projects[0].expected_project_id


def test_a_rerun_reuses_the_folder_and_keeps_its_tasks(tmp_path):
    first = demo.prepare(tmp_path / "demo")
    store_of(first).create(NewTask(title="Mine"))
    (first.sample / "keep.txt").write_text("kept\n")
    again = demo.prepare(tmp_path / "demo")
    assert not again.created and "reusing" in again.note
    assert (again.sample / "keep.txt").read_text() == "kept\n"
    assert sorted(t.title for t in store_of(again).list_tasks()).count("Mine") == 1
    assert len(store_of(again).list_tasks()) == 6  # nothing seeded twice


def test_reset_recreates_the_folder(tmp_path):
    first = demo.prepare(tmp_path / "demo")
    store_of(first).create(NewTask(title="Mine"))
    (first.sample / "keep.txt").write_text("x\n")
    again = demo.prepare(tmp_path / "demo", reset=True)
    assert again.created and "reset" in again.note
    assert not (again.sample / "keep.txt").exists()
    assert "Mine" not in [t.title for t in store_of(again).list_tasks()] and len(store_of(again).list_tasks()) == 5


def test_a_reset_under_a_running_demo_agent_is_refused_and_changes_nothing(tmp_path, started):
    first = demo.prepare(tmp_path / "demo")
    agent, _ = started(first.sample)
    with pytest.raises(demo.DemoError, match="another baton-agent is already running"):
        demo.prepare(tmp_path / "demo", reset=True)
    assert (first.sample / "agent.yaml").exists() and (first.origin / "HEAD").exists()
    agent.stop()


def test_a_broken_demo_folder_is_rebuilt_saying_why(tmp_path):
    first = demo.prepare(tmp_path / "demo")
    (first.sample / "agent.yaml").write_text("runtime: [\n")
    again = demo.prepare(tmp_path / "demo")
    assert again.created and "rebuilt" in again.note and "agent.yaml" in again.note
    assert load_agent_config(again.sample / "agent.yaml").runtime == "demo"


def test_a_folder_that_is_not_a_demo_is_refused_and_left_untouched(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work\n")
    with pytest.raises(demo.DemoError, match="not a Baton demo folder"):
        demo.prepare(mine, reset=True)
    proc = subprocess.run([*DASHBOARD, "--demo-reset", "--demo-dir", str(mine), "--port", str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "not a Baton demo folder" in proc.stderr and "Nothing was changed" in proc.stderr
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"] and (mine / "thesis.txt").read_text() == "years of work\n"


@pytest.mark.skipif(not (ROOT / "backend" / "dashboard" / "supervisor.py").exists(),
                    reason="the dashboard cannot start agents yet (backend/dashboard/supervisor.py)")
def test_the_demo_command_lands_every_seeded_task_on_the_sample_origin(tmp_path):
    port, folder = free_port(), tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "dashboard.out", "w") as out:
        proc = subprocess.Popen([*DASHBOARD, "--demo", "--demo-dir", str(folder), "--port", str(port)], cwd=tmp_path,
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", proc, timeout=60)
        projects = load_dashboard_config(folder / "projects.yaml").projects
        agent_url = projects[0].agent_url
        seeded = {t.id for t in TaskStore(folder / "sample" / "data" / "dev-tasks.json").list_tasks()}

        def completed() -> set[str]:
            try:
                board = httpx.get(f"{agent_url}/agent/tasks", timeout=5).json()
            except (httpx.TransportError, ValueError):
                return set()
            return {t["id"] for t in board.get("completed", [])}

        wait_for(lambda: completed() >= seeded, timeout=120, interval=0.5, what="every seeded demo task to land")
        landed = git(folder / "origin.git", "log", "--format=%s", "main")
        assert all(f"({task_id})" in landed for task_id in seeded), landed
        assert "fix: a run of . ! or ? ends a sentence" in landed  # the feedback turn's fix landed too
        assert "Baton demo: open http://127.0.0.1:" in (tmp_path / "dashboard.out").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    # The dashboard stopped the agent it started.
    wait_for(lambda: _refused(agent_url), timeout=20, what="the demo's agent to stop with the dashboard")


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/agent/health", timeout=2)
    except httpx.TransportError:
        return True
    return False
