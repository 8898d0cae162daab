"""executor: dask when things go wrong: a worker SIGKILLed or SIGSTOPped mid-run, a frozen worker
that comes back after its task landed elsewhere, dask.max_attempts, a scheduler that would re-run
a task by itself, and a project host that goes away mid-run.

Real processes throughout: a `dask scheduler` and two `dask worker`s on loopback (cluster.py),
the agent app (or baton-agent as a process), the fake Claude CLI, git with a bare origin.

The fake holds a run mid-turn with a `wait_for` step on "../../go": relative to its worktree
(<worker folder>/runs/<attempt>), that is a file in the folder of the worker running it. So the
test releases (or keeps holding) each attempt by the box it landed on, and a re-run on the other
box goes through while the first one stays held.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from backend.models import TaskStatus
from conftest import fake_task
from support import git, make_repo, origin_of, pid_alive, submit_task, task_events, wait_for, wait_task_done

BOXES = ("box-a", "box-b")
TTL = 5.0  # the clusters' worker-ttl (cluster.py's default "5s")
HOLD = {"wait_for": "../../go", "seconds": 120}  # until the running worker's folder has `go`


def scenario(name: str, *, hold: bool = True) -> dict:
    """Write <name>.txt and commit it, then (hold) wait for `go` in the running worker's folder."""
    return {"steps": [{"write": f"{name}.txt", "text": f"{name}\n"}, {"commit": f"feature: {name}"},
                      *([HOLD] if hold else [])]}


# ----- the processes of a task, wherever they run ---------------------------------------------


def _environ(pid: str) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return None
    return dict(entry.decode(errors="replace").split("=", 1) for entry in raw.split(b"\0") if b"=" in entry)


def marked(project: Path, task_id: str, attempt: str | None = None) -> dict[int, str]:
    """The live processes carrying the task's marker (of one attempt if given): {pid: attempt}."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        env = _environ(entry)
        if (env is None or env.get("TASK_ID") != task_id or env.get("BATON_PROJECT") != str(project)
                or (attempt is not None and env.get("BATON_ATTEMPT") != attempt)):
            continue
        if pid_alive(int(entry)):
            found[int(entry)] = env.get("BATON_ATTEMPT", "")
    return found


@pytest.fixture
def reaper():
    """Tasks whose processes must not outlive the test: whatever is left is SIGKILLed at
    teardown (a test that asserts they are gone has failed by then anyway)."""
    tasks: list[tuple[Path, str]] = []
    yield tasks
    for project, task_id in tasks:
        for pid in marked(project, task_id):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ----- helpers ---------------------------------------------------------------------------------


def head_subject(worktree: Path) -> str | None:
    try:
        return git(worktree, "log", "-1", "--format=%s").strip()
    except Exception:  # noqa: BLE001 - not made yet (or already removed)
        return None


def held(project: Path, task_id: str, box_dir: Path, subject: str, what: str) -> str:
    """Wait until the task's CLI runs and its worktree on the worker (box_dir/runs/<attempt>)
    has the commit `subject`: the agent is mid-turn, at its hold. Returns the attempt."""
    procs = wait_for(lambda: marked(project, task_id), timeout=30, interval=0.05, what=f"the CLI of {what}")
    (attempt,) = set(procs.values())
    wait_for(lambda: head_subject(box_dir / "runs" / attempt) == subject, timeout=30, interval=0.05,
             what=f"{what} to commit {subject!r}")
    return attempt


def start_held(agent, cluster, reaper, name: str) -> tuple[str, str, str]:
    """Submit a task that commits <name>.txt and then holds; returns (task id, the box it runs
    on, its attempt) once it holds there."""
    project = agent.settings.project_dir
    task_id = submit_task(agent, fake_task(f"Add {name}", scenario(name)))
    reaper.append((project, task_id))
    box = wait_for(lambda: agent.store.get(task_id).worker, timeout=60, interval=0.05,
                   what=f"task {task_id} to start on a worker")
    return task_id, box, held(project, task_id, cluster.worker_dir(box), f"feature: {name}", f"task {task_id}")


def other(box: str) -> str:
    (name,) = set(BOXES) - {box}
    return name


def says(agent, task_id: str) -> list[str]:
    return [e.get("text", "") for e in task_events(agent, task_id) if e["kind"] == "baton"]


def main_log(project: Path) -> list[str]:
    """Subjects of origin main's commits, newest first."""
    return git(origin_of(project), "log", "--format=%s", "main").splitlines()


def attempt_branches(project: Path, task_id: str) -> list[str]:
    out = git(origin_of(project), "for-each-ref", "--format=%(refname)", f"refs/heads/baton/attempts/{task_id}/")
    return out.splitlines()


def assert_landed_once(agent, task_id: str, name: str, subjects_before: list[str]) -> None:
    project = agent.settings.project_dir
    origin = origin_of(project)
    assert git(origin, "show", f"main:{name}.txt") == f"{name}\n"
    # Main moved by exactly this task's one commit, on top of what it held (a fast-forward).
    after = main_log(project)
    assert after == [f"feature: {name}", *subjects_before], after
    assert len(git(origin, "log", "--format=%H", "main", "--", f"{name}.txt").splitlines()) == 1
    assert attempt_branches(project, task_id) == []  # no attempt's branch is left on the origin


# ----- a worker killed mid-run ------------------------------------------------------------------


def test_killed_worker_requeues_the_task_which_lands_once_on_the_other(dask_cluster, dask_config, agent_factory,
                                                                       reaper):
    cluster = dask_cluster(workers=BOXES)
    agent = agent_factory(config=dask_config(cluster), dispatch=True)
    project = agent.settings.project_dir
    before = main_log(project)

    task_id, first, attempt = start_held(agent, cluster, reaper, "killed")
    second = other(first)
    (cluster.worker_dir(second) / "go").touch()  # the re-run on the other box goes through
    cluster.kill(first)

    # The killed worker's CLI dies with it (PR_SET_PDEATHSIG), though it is in a session of its own.
    wait_for(lambda: not marked(project, task_id, attempt), timeout=10, what="the killed worker's CLI to be gone")

    task = wait_task_done(agent, task_id, timeout=90)
    said = says(agent, task_id)
    assert task.status is TaskStatus.completed, (task.error_message, said)
    assert task.runs == 2 and task.worker == second
    lost = [line for line in said if line.startswith("worker lost:")]
    assert len(lost) == 1 and "goes back to the queue as a new attempt" in lost[0], said
    assert first in lost[0]
    assert_landed_once(agent, task_id, "killed", before)
    # Nothing of the task runs anywhere any more, the first attempt's CLI included.
    assert marked(project, task_id) == {}


def test_a_lost_worker_fails_the_task_after_max_attempts(dask_cluster, dask_config, agent_factory, fake_cli,
                                                        reaper):
    cluster = dask_cluster(workers=BOXES)
    agent = agent_factory(config=dask_config(cluster, dask={"max_attempts": 1}), dispatch=True)
    project = agent.settings.project_dir
    before = git(origin_of(project), "rev-parse", "main")

    task_id, first, attempt = start_held(agent, cluster, reaper, "once")
    (cluster.worker_dir(other(first)) / "go").touch()  # a re-run would go through: there must be none
    cluster.kill(first)

    task = wait_task_done(agent, task_id, timeout=60)
    assert task.status is TaskStatus.failed, says(agent, task_id)
    assert task.error_reason == "worker_lost"
    assert "worker" in task.error_message and "died or stopped answering" in task.error_message, task.error_message
    assert task.runs == 1
    assert len(fake_cli.calls()) == 1  # the CLI was started once, on the box that was killed
    assert git(origin_of(project), "rev-parse", "main") == before
    wait_for(lambda: not marked(project, task_id, attempt), timeout=10, what="the killed worker's CLI to be gone")


# ----- a worker frozen mid-run ------------------------------------------------------------------


def test_frozen_worker_is_noticed_within_the_ttl_and_the_task_lands_once_elsewhere(dask_cluster, dask_config,
                                                                                  agent_factory, reaper):
    cluster = dask_cluster(workers=BOXES, ttl=f"{TTL:g}s")
    agent = agent_factory(config=dask_config(cluster), dispatch=True)
    project = agent.settings.project_dir
    before = main_log(project)

    task_id, first, _ = start_held(agent, cluster, reaper, "frozen")
    second = other(first)
    (cluster.worker_dir(second) / "go").touch()
    frozen_at = time.monotonic()
    cluster.freeze(first)

    # The scheduler checks the TTL periodically: the loss shows within a few TTLs, not minutes.
    wait_for(lambda: any(line.startswith("worker lost:") for line in says(agent, task_id)),
             timeout=TTL * 4 + 10, interval=0.1, what="the frozen worker to be declared lost")
    noticed = time.monotonic() - frozen_at
    task = wait_task_done(agent, task_id, timeout=90)
    said = says(agent, task_id)
    assert task.status is TaskStatus.completed, (task.error_message, said)
    assert task.runs == 2 and task.worker == second, said
    assert_landed_once(agent, task_id, "frozen", before)
    print(f"frozen worker noticed after {noticed:.1f}s (worker-ttl {TTL:g}s)")


# ----- a frozen worker comes back ---------------------------------------------------------------


def test_a_worker_that_comes_back_cannot_overwrite_the_newer_attempt(dask_cluster, dask_config, agent_factory,
                                                                    reaper, tmp_path):
    cluster = dask_cluster(workers=BOXES)
    agent = agent_factory(config=dask_config(cluster), dispatch=True)
    project = agent.settings.project_dir
    origin = origin_of(project)
    # The first attempt commits zombie.txt and waits for `go` in its worker's folder; any later
    # attempt finds the flag, lets itself go at once and adds second.txt instead.
    flag = tmp_path / "zombie-flag"
    first_only = (f"if mkdir '{flag}' 2>/dev/null; then echo zombie > zombie.txt && git add zombie.txt "
                  "&& git commit -qm zombie; else touch ../../go; fi")
    steps = [{"run": ["sh", "-c", first_only]}, HOLD,
             {"write": "second.txt", "text": "second\n"}, {"commit": "feature: second"}]
    task_id = submit_task(agent, fake_task("Zombie", {"steps": steps}))
    reaper.append((project, task_id))
    first = wait_for(lambda: agent.store.get(task_id).worker, timeout=60, interval=0.05, what="the first attempt")
    attempt = held(project, task_id, cluster.worker_dir(first), "zombie", "the first attempt")
    worktree = cluster.worker_dir(first) / "runs" / attempt
    cluster.freeze(first)

    task = wait_task_done(agent, task_id, timeout=90)
    said = says(agent, task_id)
    assert task.status is TaskStatus.completed, (task.error_message, said)
    assert task.worker == other(first) and task.runs == 2, said
    landed = git(origin, "rev-parse", "main").strip()
    assert git(origin, "show", "main:second.txt") == "second\n"
    assert "zombie.txt" not in git(origin, "ls-tree", "--name-only", "main").split()

    # The frozen worker's agent is let go (the CLI runs in a session of its own: it was never
    # frozen) and finishes its turn; then the worker resumes. Its thread goes on to commit and
    # push the stale attempt, or the worker (declared dead) closes itself first. Either way
    # nothing may land, and the attempt's branch (deleted by the host) must not come back.
    worker = cluster.workers[first]
    (cluster.worker_dir(first) / "go").touch()
    wait_for(lambda: not marked(project, task_id, attempt), timeout=30, interval=0.1,
             what="the frozen worker's CLI to finish its turn")
    cluster.thaw(first)
    # ... and the worker is done with the attempt: exited, or its worktree cleaned up after the
    # push it may have tried.
    wait_for(lambda: worker.poll() is not None or not worktree.exists(), timeout=60, interval=0.1,
             what="the resumed worker to be done with its attempt")
    print(f"resumed worker: {'exited ' + str(worker.returncode) if worker.poll() is not None else 'still running'}")

    assert git(origin, "rev-parse", "main").strip() == landed
    assert "zombie.txt" not in git(origin, "ls-tree", "-r", "--name-only", "main").split()
    assert "zombie" not in git(origin, "log", "--format=%s", "main").splitlines()
    assert attempt_branches(project, task_id) == [], "a stale attempt's branch was recreated on the origin"
    assert agent.store.get(task_id).status is TaskStatus.completed


# ----- a scheduler that would re-run a task by itself -------------------------------------------


def test_a_scheduler_that_retries_tasks_is_refused(dask_cluster, dask_config, agent_factory, fake_cli):
    cluster = dask_cluster(workers=BOXES, env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "3"})
    agent = agent_factory(config=dask_config(cluster), dispatch=True)
    task_id = submit_task(agent, fake_task("Never claimed", scenario("never", hold=False)))

    def misconfigured():
        problems = agent.client.get("/agent/health").json()["problems"]
        return next((p for p in problems if p["code"] == "executor_misconfigured"), None)

    problem = wait_for(misconfigured, timeout=30, interval=0.1, what="health to show executor_misconfigured")
    assert "allowed-failures 3" in problem["message"] and "ALLOWED_FAILURES=0" in problem["message"]
    assert agent.app.state.dispatcher.tick() == 0
    task = agent.store.get(task_id)
    assert task.status is TaskStatus.pending and task.runs == 0 and task.worker is None
    assert fake_cli.calls() == []


# ----- the project host goes away mid-run -------------------------------------------------------


def test_the_remote_cli_ends_when_the_project_host_goes_away(dask_cluster, fake_cli, started, tmp_path, reaper):
    cluster = dask_cluster(workers=BOXES)
    project = make_repo(tmp_path, "hosted")
    config = {"claude_code": {"command": fake_cli.command, "timeout": 60, "stall_timeout": 30},
              "test_command": "", "poll_interval_seconds": 0.5, "max_parallel_workers": 2,
              "executor": "dask", "dask": cluster.dask_config()}
    (project / "agent.yaml").write_text(json.dumps(config))  # JSON is YAML
    host, url = started(project)
    with httpx.Client(base_url=url, timeout=10) as client:
        resp = client.post("/agent/tasks", json=fake_task("Orphaned", scenario("orphaned")))
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["id"]
        reaper.append((project, task_id))

        def worker():
            running = client.get("/agent/tasks/in_progress").json()
            return next((t.get("worker") for t in running if t["id"] == task_id), None)

        box = wait_for(worker, timeout=60, interval=0.05, what="the task to start on a worker")
    attempt = held(project, task_id, cluster.worker_dir(box), "feature: orphaned", f"task {task_id}")

    host.proc.kill()  # the project host crashes: no stop, no release, its connection just drops
    host.proc.wait()
    gone_at = time.monotonic()
    wait_for(lambda: not marked(project, task_id, attempt), timeout=15, interval=0.1,
             what="the remote CLI to end after its project host went away")
    print(f"remote CLI ended {time.monotonic() - gone_at:.1f}s after the host died")
    assert cluster.workers[box].poll() is None  # the worker itself lives on
