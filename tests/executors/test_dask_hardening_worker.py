"""The Dask worker's side of the hardening (backend/executors/dask/remote.py), end to end: a real
agent app and dispatcher, a real `dask scheduler` and `dask worker`s on loopback, the fake Claude
CLI, real git with a bare origin.

- An agent that pushes its attempt branch itself (to its clone's `origin`, which is the box's
  cache, and to the real origin) does not break the push back: the lease is on the branch's tip.
- An agent that poisons its repository (a core.fsmonitor command, hooks, a replace ref) poisons
  nothing but its own clone: the worker's git never runs them, the box's cache stays clean, and
  the next task on that box checks out the real README.md.
- A worker retired gracefully mid-run: Dask starts the same key again on the other worker; that
  second start is refused, the task comes back as a new attempt and lands exactly once, its
  transcript unmixed.
- A worker SIGKILLed mid-run leaves its run's folders on the box; the next run on a worker using
  that folder sweeps them (never those of a run still alive).

The fake holds a run with a `wait_for` step on "../../go": relative to its worktree
(<worker folder>/runs/<attempt>), a file in the folder of the worker running it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.models import TaskStatus
from conftest import fake_task
from support import git, origin_of, submit_task, task_events, wait_for, wait_task_done

from .cluster import DaskCluster
from .cluster import processes_of as cluster_processes_of

BOXES = ("box-a", "box-b")
HOLD = {"wait_for": "../../go", "seconds": 120}  # until the running worker's folder has `go`


@pytest.fixture(scope="module")
def boxes(tmp_path_factory) -> Iterator[DaskCluster]:
    """box-a and box-b for the tests that leave the cluster as they found it."""
    root = tmp_path_factory.mktemp("boxes")
    cluster = DaskCluster(root / "cluster")
    try:
        cluster.start()
        env = {"FAKE_CLAUDE_LOG": str(root / "fake-calls.jsonl"), "FAKE_CLAUDE_STATE": str(root / "fake-state")}
        for box in BOXES:
            cluster.add_worker(box, env=env, wait=False)
        cluster.wait_listed(*BOXES)
        cluster.close_client()
        yield cluster
    finally:
        cluster.close()


# ----- helpers ---------------------------------------------------------------------------------


def says(agent, task_id: str) -> list[str]:
    return [e.get("text", "") for e in task_events(agent, task_id) if e["kind"] == "baton"]


def done(agent, task_id: str, timeout: float = 60):
    task = wait_task_done(agent, task_id, timeout=timeout)
    assert task.status is TaskStatus.completed, (task.status, task.error_reason, task.error_message,
                                                 says(agent, task_id))
    return task


def subjects(origin: Path) -> list[str]:
    """Subjects of origin main's commits, newest first."""
    return git(origin, "log", "--format=%s", "main").splitlines()


def attempt_branches(origin: Path) -> list[str]:
    return git(origin, "for-each-ref", "--format=%(refname)", "refs/heads/baton/attempts").split()


def tool_results(agent, task_id: str) -> list[str]:
    return [e.get("text", "") for e in task_events(agent, task_id) if e["kind"] == "tool_result"]


def cache_of(cluster: DaskCluster, box: str, origin: Path) -> Path:
    """The box's cache (bare repository) of `origin`."""
    for cache in (cluster.worker_dir(box) / "repos").glob("*.git"):
        if Path(git(cache, "config", "remote.origin.url").strip()).resolve() == origin.resolve():
            return cache
    raise AssertionError(f"{box} has no cache of {origin}")


def run_leftovers(folder: Path, attempt: str) -> list[Path]:
    """What a run leaves in its worker's folder while it lives (or after its worker died)."""
    paths = [folder / "runs" / attempt, folder / "runs" / f"{attempt}.lock", folder / "scratch" / attempt,
             folder / "logs" / f"{attempt}.jsonl", folder / "logs" / f"{attempt}.stderr.log"]
    return [path for path in paths if path.exists()]


def held_attempt(cluster: DaskCluster, box: str, task_id: str, subject: str) -> str:
    """Wait until the task's CLI runs on `box` and its worktree there has the commit `subject`
    (the agent is at its hold); returns the attempt."""
    wait_for(lambda: processes_of(task_id), timeout=30, interval=0.05, what=f"the CLI of task {task_id}")
    runs = cluster.worker_dir(box) / "runs"

    def attempt() -> str | None:
        for run in runs.glob(f"{task_id}-r*"):
            if run.is_dir() and (run / ".git").exists():
                try:
                    if git(run, "log", "-1", "--format=%s").strip() == subject:
                        return run.name
                except Exception:  # noqa: BLE001 - not made yet, or removed meanwhile
                    pass
        return None

    return wait_for(attempt, timeout=30, interval=0.05, what=f"task {task_id} to commit {subject!r} on {box}")


def processes_of(task_id: str, attempt: str | None = None) -> list[int]:
    """The live processes of the task (of one attempt if given), wherever on this machine."""
    pids = cluster_processes_of(task_id)
    if attempt is None:
        return pids
    wanted = f"BATON_ATTEMPT={attempt}".encode()
    found = []
    for pid in pids:
        try:
            if wanted in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:  # gone meanwhile
            pass
    return found


def by_attempt(events: list[dict]) -> list[list[dict]]:
    """The transcript cut at each run's start (`attempt_started`)."""
    parts: list[list[dict]] = []
    for event in events:
        if event.get("subtype") == "attempt_started" or not parts:
            parts.append([])
        parts[-1].append(event)
    return parts


# ----- 1. the agent pushes its attempt branch itself -----------------------------------------------


def test_an_agent_that_pushes_its_own_branch_still_lands_all_its_work(boxes, dask_config, agent_factory):
    agent = agent_factory(config=dask_config(boxes), dispatch=True)
    origin = origin_of(agent.settings.project_dir)
    before = subjects(origin)
    # The clone's `origin` is the box's cache; the real origin is pushed to by its URL, on the
    # branch the worker checked out (the attempt's). Then one more file, left uncommitted.
    to_origin = f"git push -q '{origin}' HEAD:refs/heads/$(git symbolic-ref --short HEAD) && echo PUSHED-ORIGIN"
    steps = [{"write": "first.txt", "text": "first\n"}, {"commit": "feature: first"},
             {"run": ["sh", "-c", "git push -q origin HEAD && echo PUSHED-CACHE"]},
             {"run": ["sh", "-c", to_origin]},
             {"write": "second.txt", "text": "second\n"}]
    task_id = submit_task(agent, fake_task("Pushes itself", {"steps": steps}))

    task = done(agent, task_id)
    # Both pushes really happened (else this would test nothing).
    assert {"PUSHED-CACHE", "PUSHED-ORIGIN"} <= set(tool_results(agent, task_id)), tool_results(agent, task_id)
    assert git(origin, "show", "main:first.txt") == "first\n"
    assert git(origin, "show", "main:second.txt") == "second\n"  # committed by the worker, pushed over the agent's
    after = subjects(origin)
    assert after[len(after) - len(before):] == before and after.count("feature: first") == 1, after
    assert attempt_branches(origin) == []
    # The box keeps no ref of the attempt: what the agent pushed to its cache is gone with the run.
    cache = cache_of(boxes, task.worker, origin)
    assert git(cache, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]
    assert list((boxes.worker_dir(task.worker) / "runs").iterdir()) == []


# ----- 2. an agent that poisons its repository ----------------------------------------------------


def test_what_an_agent_does_to_its_repository_never_reaches_the_worker_or_the_next_task(
        boxes, dask_config, agent_factory, tmp_path):
    agent = agent_factory(config=dask_config(boxes), dispatch=True)
    origin = origin_of(agent.settings.project_dir)
    # Every command the agent installs records who ran it: the task (TASK_ID) and whether it ran
    # in the agent's turn (BATON_REFS_OWN is in the CLI's environment only, never in the
    # worker's own git nor in the git it runs in the agent's clone after the turn).
    markers = tmp_path / "markers.log"
    record = tmp_path / "record.sh"
    record.write_text(f'#!/bin/sh\necho "$1 task=${{TASK_ID:-none}} turn=${{BATON_REFS_OWN:+yes}}" >> {markers}\n')
    record.chmod(0o755)
    for name in ("fsmonitor", "post-checkout", "pre-push"):
        script = tmp_path / f"{name}.sh"
        script.write_text(f"#!/bin/sh\n{record} {name}\nexit {1 if name == 'fsmonitor' else 0}\n")
        script.chmod(0o755)
    hooks = (f'h="$(git rev-parse --git-common-dir)/hooks" && mkdir -p "$h" && '
             f'cp {tmp_path}/post-checkout.sh "$h/post-checkout" && cp {tmp_path}/pre-push.sh "$h/pre-push" '
             '&& echo HOOKED')
    # A replace ref for README.md's blob, made out of the ref guard's sight (a hostile agent's way).
    poison = ('b=$(printf "POISON\\n" | git hash-object -w --stdin) && '
              'env -u GIT_CONFIG_COUNT git replace "$(git rev-parse HEAD:README.md)" "$b" && echo REPLACED')
    sink = tmp_path / "sink.git"  # a push anywhere runs pre-push; not to the origin, not to the cache
    git(tmp_path, "init", "-q", "--bare", str(sink))
    push = f"git push -q '{sink}' HEAD:refs/heads/$(git symbolic-ref --short HEAD) && echo PUSHED"
    steps = [{"run": ["git", "config", "core.fsmonitor", str(tmp_path / "fsmonitor.sh")]},
             {"run": ["sh", "-c", hooks]}, {"run": ["sh", "-c", poison]},
             {"write": "one.txt", "text": "one\n"}, {"commit": "feature: one"}, {"run": ["sh", "-c", push]},
             {"write": "leftover.txt", "text": "left\n"}]  # the worker commits it: its git in the agent's clone
    first = submit_task(agent, fake_task("Poison", {"steps": steps}, run_on="box-a"))
    done(agent, first)
    assert {"HOOKED", "REPLACED", "PUSHED"} <= set(tool_results(agent, first)), tool_results(agent, first)
    # In its own turn the agent's git ran what it installed: the commands work (else this tests nothing).
    in_turn = markers.read_text().splitlines()
    assert f"fsmonitor task={first} turn=yes" in in_turn and f"pre-push task={first} turn=yes" in in_turn, in_turn

    second = submit_task(agent, fake_task("Clean", {"steps": [{"append": "README.md", "text": "two\n"},
                                                              {"commit": "feature: two"}]}, run_on="box-a"))
    task = done(agent, second)

    assert task.worker == "box-a"
    assert git(origin, "show", "main:README.md") == "# demo\ntwo\n"  # the real blob, not the replacement
    assert git(origin, "show", "main:one.txt") == "one\n" and git(origin, "show", "main:leftover.txt") == "left\n"
    # Nothing the agent installed ran after its turn: not by the worker's git, not by its commit
    # of the leftovers, not in the next task.
    assert markers.read_text().splitlines() == in_turn
    assert set(in_turn) <= {f"{name} task={first} turn=yes" for name in ("fsmonitor", "post-checkout", "pre-push")}
    cache = cache_of(boxes, "box-a", origin)
    config = git(cache, "config", "--list", "--local")
    assert "fsmonitor" not in config and "hookspath" not in config.lower(), config
    assert sorted(p.name for p in (cache / "hooks").iterdir() if not p.name.endswith(".sample")) == []
    assert git(cache, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]  # no refs/replace
    assert list((boxes.worker_dir("box-a") / "runs").iterdir()) == []


# ----- 3. a worker retired gracefully mid-run -----------------------------------------------------


def test_a_retired_worker_gets_its_turn_started_again_and_the_task_lands_once(dask_cluster, dask_config,
                                                                             agent_factory):
    cluster = dask_cluster(workers=("box-a",))  # box-b comes once the run holds on box-a
    agent = agent_factory(config=dask_config(cluster), dispatch=True)
    origin = origin_of(agent.settings.project_dir)
    before = subjects(origin)
    steps = [{"write": "retired.txt", "text": "retired\n"}, {"commit": "feature: retired"}, HOLD]
    task_id = submit_task(agent, fake_task("Retired", {"steps": steps}))
    wait_for(lambda: agent.store.get(task_id).worker, timeout=60, interval=0.05, what="the run to start")
    first = held_attempt(cluster, "box-a", task_id, "feature: retired")
    cluster.worker_dir("box-b").mkdir(parents=True)
    (cluster.worker_dir("box-b") / "go").touch()  # box-b lets any run of the task through
    cluster.add_worker("box-b")

    # Graceful: the scheduler moves box-a's tasks elsewhere without counting a failure, so
    # allowed-failures 0 does not stop it from starting the key again on box-b.
    retired = cluster.client().retire_workers(names=["box-a"])
    assert [info["name"] for info in retired.values()] == ["box-a"], retired

    task = done(agent, task_id, timeout=90)
    said = says(agent, task_id)
    # What Dask 2026.8 does: the same key starts on box-b, which refuses the attempt's second
    # start; the host takes that as a lost worker and runs a new attempt (on box-b, the only one).
    lost = [line for line in said if line.startswith("worker lost:")]
    assert len(lost) == 1 and "second time" in lost[0] and "box-b" in lost[0], said
    assert task.runs == 2 and task.worker == "box-b", said
    # Landed exactly once: main moved by the one commit.
    assert subjects(origin) == ["feature: retired", *before]
    assert git(origin, "show", "main:retired.txt") == "retired\n"
    assert attempt_branches(origin) == []
    # The transcript: numbered without a gap, each run's events its own (one session, each tool
    # call and each step's result once), the first run's cut where box-a left.
    events = task_events(agent, task_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    runs = by_attempt(events)
    assert [run[0].get("attempt") for run in runs] == [1, 2]
    for run in runs:
        assert len({e["session_id"] for e in run if "session_id" in e}) == 1, run
        calls = [e["tool_use_id"] for e in run if e["kind"] == "tool_use"]
        assert len(calls) == len(set(calls)), run
        steps_seen = [(e["kind"], e.get("tool_input") or e.get("text")) for e in run
                      if e["kind"] in ("tool_use", "tool_result")]
        assert len(steps_seen) == len(set(steps_seen)), run
    assert sum(e["kind"] == "result" for e in runs[0]) == 0 and sum(e["kind"] == "result" for e in runs[1]) == 1
    # The retired worker's CLI does not run on: box-a, closed by the scheduler, no longer reaches
    # it, and its run stops itself (seen here about 5 s after the retirement: UNREACHABLE_STOP).
    # Its push back finds the attempt's branch gone and recreates nothing.
    wait_for(lambda: not processes_of(task_id), timeout=30, interval=0.1, what="box-a's CLI to end")
    wait_for(lambda: run_leftovers(cluster.worker_dir("box-a"), first) == [], timeout=30, interval=0.1,
             what="box-a to remove its run")
    assert attempt_branches(origin) == []
    assert subjects(origin) == ["feature: retired", *before]


# ----- 4. a dead worker's runs are swept ----------------------------------------------------------


def test_the_runs_of_a_killed_worker_are_swept_by_the_next_worker_on_its_folder(dask_cluster, dask_config,
                                                                               agent_factory):
    cluster = dask_cluster(workers=BOXES)
    agent = agent_factory(config=dask_config(cluster), dispatch=True)
    origin = origin_of(agent.settings.project_dir)
    steps = [{"write": "killed.txt", "text": "killed\n"}, {"commit": "feature: killed"}, HOLD]
    task_id = submit_task(agent, fake_task("Killed", {"steps": steps}))
    box = wait_for(lambda: agent.store.get(task_id).worker, timeout=60, interval=0.05, what="the run to start")
    dead = held_attempt(cluster, box, task_id, "feature: killed")
    (other,) = set(BOXES) - {box}
    (cluster.worker_dir(other) / "go").touch()
    cluster.kill(box)
    wait_for(lambda: not processes_of(task_id, dead), timeout=10, what="the killed worker's CLI to end")
    task = done(agent, task_id, timeout=90)
    assert task.runs == 2 and task.worker == other, says(agent, task_id)
    folder = cluster.worker_dir(box)
    left = run_leftovers(folder, dead)
    assert {p.name for p in left} >= {dead, f"{dead}.lock", f"{dead}.jsonl"}, left  # what sweeping must remove

    # A worker on the same folder again: its next run sweeps the dead one's leftovers, and never
    # those of a run alive on the box (its lock is held).
    cluster.add_worker(box)
    alive_id = submit_task(agent, fake_task("Alive", {"steps": [{"write": "alive.txt", "text": "alive\n"},
                                                                {"commit": "feature: alive"}, HOLD]}, run_on=box))
    alive = held_attempt(cluster, box, alive_id, "feature: alive")
    assert run_leftovers(folder, dead) == []  # swept as that run was prepared
    assert {p.name for p in run_leftovers(folder, alive)} >= {alive, f"{alive}.lock", f"{alive}.jsonl"}
    # One more run on the box sweeps while that one lives: the live run keeps everything.
    sweeper = done(agent, submit_task(agent, fake_task("Sweeper", {"steps": [
        {"write": "sweeper.txt", "text": "sweeper\n"}, {"commit": "feature: sweeper"}]}, run_on=box)))
    assert sweeper.worker == box
    assert processes_of(alive_id, alive), "the live run's CLI was stopped"
    assert (folder / "runs" / alive / ".git").exists() and (folder / "runs" / f"{alive}.lock").exists()
    assert (folder / "logs" / f"{alive}.jsonl").exists() and (folder / "scratch" / alive).exists()

    (folder / "go").touch()
    done(agent, alive_id)
    assert run_leftovers(folder, alive) == []
    for name in ("killed", "alive", "sweeper"):
        assert git(origin, "show", f"main:{name}.txt") == f"{name}\n"
    assert attempt_branches(origin) == []
