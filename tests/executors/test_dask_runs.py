"""Agent runs on Dask workers (executor: dask), end to end: a real agent app and dispatcher, a
real `dask scheduler` and two `dask worker` processes on loopback (each worker in its own folder,
never the project's), the fake Claude CLI, real git with a bare origin per test.

The issue's guarantees held here: a batch lands across both workers, each task exactly once; a
worker whose clone is stale still builds on the right base; a cancel ends the remote run's
processes within 5 s; a long turn streams its events live and is not cut short; a pinned task
runs on its box; a project without a remote, or a scheduler nobody runs, gets a clear problem
and nothing is claimed until it is fixed.

The tests that leave the cluster as they found it share one (`boxes`, module scope); the fake
CLI on its workers logs to the module's folder (FAKE_CLAUDE_LOG is fixed when a worker starts).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from backend.models import TaskStatus
from conftest import fake_task
from support import commit_and_push, git, make_local_repo, origin_of, submit_task, task_events, wait_for, wait_task_done

from .cluster import DaskCluster, done, processes_of

BOXES = ("box-a", "box-b")


class Boxes:
    """The module's cluster: box-a and box-b, and the fake CLI's call log on them."""

    def __init__(self, root: Path) -> None:
        self.calls_log = root / "fake-calls.jsonl"
        self.cluster = DaskCluster(root / "cluster").start()
        env = {"FAKE_CLAUDE_LOG": str(self.calls_log), "FAKE_CLAUDE_STATE": str(root / "fake-state")}
        for box in BOXES:
            self.cluster.add_worker(box, env=env, wait=False)
        self.cluster.wait_listed(*BOXES)
        self.cluster.close_client()

    def calls(self, task_ids) -> list[dict]:
        lines = self.calls_log.read_text().splitlines() if self.calls_log.exists() else []
        return [call for call in map(json.loads, lines) if call["env"].get("TASK_ID") in set(task_ids)]

    def clone_of(self, box: str, origin: Path) -> Path | None:
        """The box's cached clone of `origin`, if it has one."""
        for cache in (self.cluster.worker_dir(box) / "repos").glob("*.git"):
            if Path(git(cache, "config", "remote.origin.url").strip()).resolve() == origin.resolve():
                return cache
        return None

    def runs_left(self, box: str) -> list[Path]:
        runs = self.cluster.worker_dir(box) / "runs"
        return list(runs.iterdir()) if runs.exists() else []


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    made = []
    try:
        made.append(Boxes(tmp_path_factory.mktemp("boxes")))
        yield made[0]
    finally:
        for shared in made:
            shared.cluster.close()


# ----- helpers ------------------------------------------------------------------------------------


def attempt_branches(origin: Path) -> list[str]:
    return git(origin, "for-each-ref", "--format=%(refname)", "refs/heads/baton/attempts").split()


def subjects(origin: Path) -> list[str]:
    return git(origin, "log", "--format=%s", "main").splitlines()


def problem_codes(agent) -> list[str]:
    return [p["code"] for p in agent.client.get("/agent/health").json()["problems"]]


def has_commit(repo: Path, sha: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=repo, capture_output=True).returncode == 0


def write_and_commit(name: str, wait: Path | None = None) -> dict:
    steps = [{"wait_for": str(wait), "seconds": 60}] if wait else []
    return {"steps": [*steps, {"write": f"{name}.txt", "text": f"{name}\n"}, {"commit": f"feature: {name}"}]}


# ----- a batch over two workers -----------------------------------------------------------------


def test_a_batch_lands_across_both_workers_each_task_once(boxes, dask_config, agent_factory, tmp_path):
    agent = agent_factory(config=dask_config(boxes.cluster, max_parallel_workers=4), dispatch=True)
    project = agent.settings.project_dir
    origin = origin_of(project)
    # The first four hold until four runs are under way at once: two per box (runner=2 each),
    # so both workers have work whatever order the scheduler picks.
    go = tmp_path / "go"
    names = [f"t{i}" for i in range(6)]
    ids = {name: submit_task(agent, fake_task(f"Add {name}", write_and_commit(name, wait=go))) for name in names}

    def running_on() -> list[str]:
        return [t.worker for t in (agent.store.get(i) for i in ids.values())
                if t.status is TaskStatus.in_progress and t.worker]

    assert sorted(set(wait_for(lambda: len(running_on()) >= 4 and running_on(), timeout=60,
                               what="four runs at once"))) == list(BOXES)
    go.write_text("")
    tasks = {name: done(agent, task_id) for name, task_id in ids.items()}

    assert {t.worker for t in tasks.values()} == set(BOXES)
    log = subjects(origin)
    for name in names:
        assert git(origin, "show", f"main:{name}.txt") == f"{name}\n"
        assert log.count(f"feature: {name}") == 1, log
    assert attempt_branches(origin) == []
    # Every turn ran in a worktree in its worker's own folder, never in the project's; each
    # worker cloned the origin into its own cache and left no worktree behind.
    calls = boxes.calls(ids.values())
    assert len(calls) == len(names)
    for call in calls:
        box = tasks[next(n for n, i in ids.items() if i == call["env"]["TASK_ID"])].worker
        cwd = Path(call["cwd"]).resolve()
        assert cwd.is_relative_to((boxes.cluster.worker_dir(box) / "runs").resolve()), (box, cwd)
        assert not cwd.is_relative_to(project.resolve())
    for box in BOXES:
        assert boxes.clone_of(box, origin) is not None
        assert boxes.runs_left(box) == []


# ----- a stale clone ------------------------------------------------------------------------------


def test_a_worker_with_a_stale_clone_builds_on_the_new_base(boxes, dask_config, agent_factory, tmp_path):
    agent = agent_factory(config=dask_config(boxes.cluster), dispatch=True)
    origin = origin_of(agent.settings.project_dir)
    done(agent, submit_task(agent, fake_task("Warm", write_and_commit("warm"), run_on="box-a")))
    cache = boxes.clone_of("box-a", origin)
    assert cache is not None
    # Someone else pushes to main: box-a's clone of the origin does not have it.
    other = tmp_path / "other"
    git(tmp_path, "clone", str(origin), str(other))
    commit_and_push(other, {"base.txt": "new base\n"}, "outside: new base")
    base = git(other, "rev-parse", "HEAD").strip()
    assert not has_commit(cache, base)

    task = done(agent, submit_task(agent, fake_task("On top", write_and_commit("ontop"), run_on="box-a")))

    assert task.worker == "box-a"
    landed = git(origin, "rev-parse", "main").strip()
    assert git(origin, "log", "-1", "--format=%s", landed).strip() == "feature: ontop"
    assert git(origin, "rev-parse", f"{landed}^").strip() == base  # built on it: landed as a fast-forward
    assert git(origin, "show", f"{landed}:base.txt") == "new base\n"
    assert subjects(origin).count("outside: new base") == 1


# ----- a long turn, its events live ---------------------------------------------------------------


def test_a_long_remote_turn_streams_its_events_live_and_runs_to_its_end(boxes, dask_config, agent_factory):
    """Longer than the worker's 5 s of unanswered stop polls: a healthy run is not cut short."""
    agent = agent_factory(config=dask_config(boxes.cluster), dispatch=True)
    task_id = submit_task(agent, fake_task("Long", {"steps": [{"tick": 12, "every": 0.5},
                                                              *write_and_commit("long")["steps"]]}))

    def said() -> list[str]:
        return [e.get("text", "") for e in task_events(agent, task_id) if e["kind"] == "assistant_text"]

    # On the board while the agent is still at it, not all at once at the end.
    wait_for(lambda: "still working (3)" in said(), timeout=60, what="the third tick in the task's log")
    assert agent.store.get(task_id).status is TaskStatus.in_progress
    assert "still working (12)" not in said()

    task = done(agent, task_id)
    assert task.worker in BOXES
    ticks = [text for text in said() if text.startswith("still working")]
    assert ticks == [f"still working ({i})" for i in range(1, 13)]  # each once, in order
    assert git(origin_of(agent.settings.project_dir), "show", "main:long.txt") == "long\n"


# ----- cancel --------------------------------------------------------------------------------------


def test_cancel_of_a_remote_run_ends_its_processes_within_5_seconds(boxes, dask_config, agent_factory, tmp_path):
    agent = agent_factory(config=dask_config(boxes.cluster), dispatch=True)
    task_id = submit_task(agent, fake_task("Hang", {"steps": [{"wait_for": str(tmp_path / "never"),
                                                                "seconds": 120}]}))
    wait_for(lambda: agent.store.get(task_id).worker, timeout=60, what="the run to start on a worker")
    running = wait_for(lambda: processes_of(task_id), timeout=30, what="the run's processes")

    asked = time.monotonic()
    resp = agent.client.post(f"/agent/tasks/{task_id}/cancel")
    assert resp.status_code in (200, 202), resp.text
    wait_for(lambda: not processes_of(task_id), timeout=max(0.0, 5 - (time.monotonic() - asked)),
             what=f"the processes {running} of the cancelled remote run to end")

    task = wait_task_done(agent, task_id, timeout=30)
    assert task.status is TaskStatus.cancelled, (task.status, task.error_message)
    assert attempt_branches(origin_of(agent.settings.project_dir)) == []
    for box in BOXES:
        wait_for(lambda: boxes.runs_left(box) == [], timeout=10, what=f"{box} to remove the run's worktree")


# ----- pinning -------------------------------------------------------------------------------------


def test_a_pinned_task_runs_on_its_box(boxes, dask_config, agent_factory):
    agent = agent_factory(config=dask_config(boxes.cluster), dispatch=True)
    origin = origin_of(agent.settings.project_dir)
    task = done(agent, submit_task(agent, fake_task("Pinned", write_and_commit("pinned"), run_on="box-b")))
    assert task.run_on == "box-b"
    assert task.worker == "box-b"
    assert boxes.clone_of("box-a", origin) is None  # box-a never saw the project


# ----- refusals ------------------------------------------------------------------------------------


def test_a_project_without_a_remote_is_refused_and_nothing_is_claimed(boxes, dask_config, agent_factory, tmp_path):
    project = make_local_repo(tmp_path, "lonely")
    agent = agent_factory(config=dask_config(boxes.cluster), project=project, dispatch=True)
    task_id = submit_task(agent, fake_task("Nowhere", write_and_commit("nowhere")))
    wait_for(lambda: "no_remote" in problem_codes(agent), timeout=10, what="the no_remote problem")
    problem = next(p for p in agent.client.get("/agent/health").json()["problems"] if p["code"] == "no_remote")
    assert "remote" in problem["message"]
    assert agent.app.state.dispatcher.tick() == 0  # a whole round with the task pending: nothing claimed
    assert agent.store.get(task_id).status is TaskStatus.pending
    assert agent.store.get(task_id).worker is None


def test_a_scheduler_nobody_runs_holds_tasks_until_it_starts(dask_cluster, dask_config, agent_factory):
    cluster = dask_cluster(start=False)  # its port is chosen, nothing listens there yet
    agent = agent_factory(config=dask_config(cluster, dask={"connect_timeout": 2}), dispatch=True)
    task_id = submit_task(agent, fake_task("Later", write_and_commit("later")))
    wait_for(lambda: "executor_unavailable" in problem_codes(agent), timeout=20,
             what="the executor_unavailable problem")
    assert agent.app.state.dispatcher.tick() == 0
    assert agent.store.get(task_id).status is TaskStatus.pending

    cluster.start()
    cluster.add_worker("box-a")
    task = done(agent, task_id)
    assert task.worker == "box-a"
    assert "executor_unavailable" not in problem_codes(agent)
    assert git(origin_of(agent.settings.project_dir), "show", "main:later.txt") == "later\n"
