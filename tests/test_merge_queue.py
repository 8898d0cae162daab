"""The merge queue (issue #15): test in parallel, land in order, main green at every commit."""

from __future__ import annotations

import sys
from pathlib import Path

from backend.models import TaskStatus
from conftest import fake_task
from support import commit_and_push, git, origin_of, wait_for
from support import wait_task_done as wait_done
from test_dispatcher import baton_says

# Passes while items/ holds at most two files: each task alone adds one, two together break it.
COUNT_CHECK = "import os, sys\nn = len(os.listdir('items'))\nprint('items:', n)\nsys.exit(0 if n <= 2 else 1)\n"


def bulk(agent, tasks: list[dict]) -> list[str]:
    resp = agent.client.post("/agent/tasks/bulk", json={"tasks": tasks})
    assert resp.status_code == 201, resp.text
    return [t["id"] for t in resp.json()["tasks"]]


def main_subjects(repo: Path) -> list[str]:
    return git(origin_of(repo), "log", "--reverse", "--format=%s", "main").splitlines()


def test_a_semantic_conflict_never_reaches_main_and_one_of_the_two_lands(agent_factory, fake_cli, repo, tmp_path):
    (repo / "items").mkdir()
    commit_and_push(repo, {"check.py": COUNT_CHECK, "items/base.txt": "base\n"}, "count check")
    config = fake_cli.config(test_command=f"{sys.executable} check.py", max_parallel_workers=2, max_merge_retries=1)
    agent = agent_factory(config=config, project=repo, dispatch=False)
    a, b = tmp_path / "a", tmp_path / "b"
    ids = bulk(agent, [
        fake_task("Add item a", {"steps": [{"marker": str(a)}, {"wait_for": str(b)},
                                           {"write": "items/a.txt", "text": "a\n"}, {"commit": "item a"}]}),
        fake_task("Add item b", {"steps": [{"marker": str(b)}, {"wait_for": str(a)},
                                           {"write": "items/b.txt", "text": "b\n"}, {"commit": "item b"}]}),
    ])
    agent.client.post("/agent/dispatcher/start")
    tasks = [wait_done(agent, i) for i in ids]
    statuses = sorted(t.status.value for t in tasks)
    assert statuses == ["completed", "failed"], [t.error_message for t in tasks]
    loser = next(t for t in tasks if t.status is TaskStatus.failed)
    assert loser.error_reason == "tests_failed"
    assert "feedback turn" in baton_says(agent, loser.id)
    assert any("--resume" in c["argv"] and c["env"]["TASK_ID"] == loser.id for c in fake_cli.calls())
    origin = origin_of(repo)
    for sha in git(origin, "rev-list", "main").split():  # the check holds on every commit of main
        listed = git(origin, "ls-tree", "--name-only", f"{sha}:items").split() if "items" in git(
            origin, "ls-tree", "--name-only", sha).split() else []
        assert len(listed) <= 2, (sha, listed)


def test_a_queue_of_five_with_the_third_failing_lands_the_others_in_order(agent_factory, fake_cli, repo):
    commit_and_push(repo, {"check.py": "import os, sys\nsys.exit(1 if os.path.exists('f3.txt') else 0)\n"}, "check")
    config = fake_cli.config(test_command=f"{sys.executable} check.py", max_parallel_workers=1,
                             max_parallel_tests=3, max_merge_retries=1)
    agent = agent_factory(config=config, project=repo, dispatch=False)
    ids = bulk(agent, [fake_task(f"Task {n}", {"steps": [{"write": f"f{n}.txt", "text": f"{n}\n"},
                                                          {"commit": f"file {n}"}]}) for n in range(1, 6)])
    agent.client.post("/agent/dispatcher/start")
    tasks = [wait_done(agent, i) for i in ids]
    assert [t.status.value for t in tasks] == ["completed", "completed", "failed", "completed", "completed"]
    assert tasks[2].error_reason == "tests_failed" and "feedback turn" in baton_says(agent, ids[2])
    assert [s for s in main_subjects(repo) if s.startswith("file ")] == ["file 1", "file 2", "file 4", "file 5"]


def test_workers_are_for_agents_a_queued_task_frees_its_worker(agent_factory, fake_cli, repo, tmp_path):
    gate = tmp_path / "tests-may-finish"
    commit_and_push(repo, {"gated.py": f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n"
                                       "    time.sleep(0.05)\n"}, "gated tests")
    config = fake_cli.config(test_command=f"{sys.executable} gated.py", max_parallel_workers=1)
    agent = agent_factory(config=config, project=repo, dispatch=True)
    first = agent.client.post("/agent/tasks", json=fake_task("Waits in the queue", {"steps": [
        {"write": "one.txt", "text": "1\n"}]})).json()["id"]
    wait_for(lambda: any(e["task_id"] == first and e["state"] == "testing"
                         for e in agent.client.get("/agent/dispatcher").json()["merge_queue"]),
             what="the first task's candidate to be tested")
    second = agent.client.post("/agent/tasks", json=fake_task("Starts at once", {"steps": [
        {"write": "two.txt", "text": "2\n"}]})).json()["id"]
    wait_for(lambda: any(c["env"]["TASK_ID"] == second for c in fake_cli.calls()),
             what="the second agent to start while the first task waits to land")
    assert agent.store.get(first).status is TaskStatus.in_progress
    gate.touch()
    assert [wait_done(agent, i).status for i in (first, second)] == [TaskStatus.completed] * 2


def test_a_tree_that_passed_is_not_tested_again(agent_factory, fake_cli, repo, tmp_path):
    # The first test run pushes an empty commit to origin: the push is rejected, the candidate
    # is rebuilt on the new base with the very same tree, which is known to pass.
    other, flag = tmp_path / "someone-else", tmp_path / "raced"
    commit_and_push(repo, {"race.py": (
        "import os, subprocess\n"
        f"flag, other = {str(flag)!r}, {str(other)!r}\n"
        "if not os.path.exists(flag):\n"
        "    open(flag, 'w').close()\n"
        "    subprocess.run(['git', '-C', other, 'commit', '-q', '--allow-empty', '-m', 'someone else'], check=True)\n"
        "    subprocess.run(['git', '-C', other, 'push', '-q', 'origin', 'HEAD:main'], check=True)\n")}, "race")
    git(tmp_path, "clone", "-q", str(origin_of(repo)), str(other))
    agent = agent_factory(config=fake_cli.config(test_command=f"{sys.executable} race.py"), project=repo,
                          dispatch=True)
    task = wait_done(agent, agent.client.post("/agent/tasks", json=fake_task("Proven", {"steps": [
        {"write": "p.txt", "text": "p\n"}]})).json()["id"])
    assert task.status is TaskStatus.completed, task.error_message
    says = baton_says(agent, task.id)
    assert "push rejected" in says and "already passed the tests; not running them again" in says
    assert (agent.settings.logs_dir / f"{task.id}.test.log").read_text().count("=== ") == 1
    assert git(origin_of(repo), "rev-parse", "main").strip() == task.commit_sha


def test_test_retries_rerun_a_flaky_command_without_a_feedback_turn(agent_factory, fake_cli, repo, tmp_path):
    flag = tmp_path / "failed-once"
    commit_and_push(repo, {"flaky.py": (
        "import os, sys\n"
        f"flag = {str(flag)!r}\n"
        "if not os.path.exists('flaky.txt') or os.path.exists(flag):\n    sys.exit(0)\n"
        "open(flag, 'w').close()\nsys.exit(1)\n")}, "flaky tests")
    config = fake_cli.config(test_command=f"{sys.executable} flaky.py", test_retries=1)
    agent = agent_factory(config=config, project=repo, dispatch=True)
    task = wait_done(agent, agent.client.post("/agent/tasks", json=fake_task("Flaky", {"steps": [
        {"write": "flaky.txt", "text": "f\n"}]})).json()["id"])
    assert task.status is TaskStatus.completed, task.error_message
    assert len(fake_cli.calls()) == 1  # no feedback turn
    says = baton_says(agent, task.id)
    assert "retrying" in says and "(retry 1 of 1)" in says and "tests passed after 1 retry" in says


def test_five_tasks_on_the_same_line_all_land_with_an_agent_that_resolves(agent_factory, fake_cli, tmp_path):
    config = fake_cli.config(max_parallel_workers=5, max_merge_retries=1)
    agent = agent_factory(config=config, dispatch=False)
    names = "ABCDE"
    markers = {n: tmp_path / f"{n}-started" for n in names}

    def scenario(name: str) -> dict:
        waits = [{"wait_for": str(markers[o]), "seconds": 60} for o in names if o != name]
        resolve = {"steps": [{"rebase_resolve": {"README.md": f"# demo, resolved by {name}\n"}}]}
        return {"steps": [{"marker": str(markers[name])}, *waits,
                          {"write": "README.md", "text": f"# demo by {name}\n"}, {"commit": f"readme by {name}"}],
                "on_resume": [resolve] * 5}

    ids = bulk(agent, [fake_task(f"{n} edits line 1", scenario(n)) for n in names])
    agent.client.post("/agent/dispatcher/start")
    tasks = [wait_done(agent, i, timeout=120) for i in ids]
    assert [t.status for t in tasks] == [TaskStatus.completed] * 5, [t.error_message for t in tasks]
    history = main_subjects(agent.settings.project_dir)
    assert all(any(f"by {n}" in s for s in history) for n in names)
    assert git(origin_of(agent.settings.project_dir), "rev-list", "--merges", "main").strip() == ""
