"""What a Dask worker guarantees on its side (backend/executors/dask/remote.py), through a real
scheduler and worker: it writes nothing outside its worktree whatever links the repository
holds, forwarded values reach the agent's environment and nowhere else (no command line, no
task file, no log), and the project's secrets stay out of the agent's environment on the
worker as they do at home."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.executors.base import RemoteWork
from backend.executors.dask.remote import RemoteJob, run_remote_turn
from backend.models import TaskStatus
from backend.runtimes.base import Limits
from backend.runtimes.claude_code import ClaudeCodeConfig, ClaudeCodeRuntime
from conftest import fake_task
from support import git, make_repo, origin_of, submit_task, wait_for, wait_task_done

from .cluster import DaskCluster, dask_agent_config

FAKE_ENV = ["FAKE_CLAUDE_LOG", "FAKE_CLAUDE_STATE"]  # the fake's own variables, per test: forwarded
FORWARDED = "fwd-s3cr3t-never-shown"  # every secret value here ends in never-shown: one grep finds them all
WORKER_SECRETS = {"GITHUB_TOKEN": "ghp-worker-never-shown", "BATON_TOKEN": "baton-worker-never-shown",
                  "VAULT_TOKEN": "vault-worker-never-shown"}
DEBUG = {"DASK_LOGGING__DISTRIBUTED": "debug"}  # the most Dask ever writes to its logs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[DaskCluster]:
    """One scheduler and one worker (box-a) for the module, both logging at debug level; the
    worker's own environment holds secrets the agents it runs must never see."""
    made = DaskCluster(tmp_path_factory.mktemp("dask"), env=DEBUG)
    try:
        made.start()
        made.add_worker("box-a", env={**WORKER_SECRETS, **DEBUG})
        yield made
    finally:
        made.close()


def files_holding(needle: bytes, *folders: Path) -> list[Path]:
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
    return found


# ----- links in the repository: nothing written outside the worktree ------------------------------


def _attempt(clone: Path, start: str) -> tuple[str, str]:
    attempt = f"t1-r1-{uuid.uuid4().hex[:8]}"
    branch = f"baton/attempts/t1/{attempt}"
    git(clone, "push", "--quiet", "origin", f"{start}:refs/heads/{branch}")
    return attempt, branch


def _job(fake_cli, clone: Path, start: str, files: dict[str, bytes], scenario: dict,
         forward: dict[str, str] | None = None) -> RemoteJob:
    """A turn as the Dask executor hands it over, built by hand (so the files Baton places can
    be ones the project host itself would never send)."""
    attempt, branch = _attempt(clone, start)
    runtime = ClaudeCodeRuntime(ClaudeCodeConfig(command=fake_cli.command, timeout=60, stall_timeout=30))
    work = RemoteWork(origin=str(origin_of(clone)), start_sha=start, branch=branch, files=files,
                      hidden_env=sorted(WORKER_SECRETS),
                      forward_env={**{name: os.environ[name] for name in FAKE_ENV}, **(forward or {})})
    return RemoteJob(attempt=attempt, task_id="t1", project=str(clone), runtime_name="claude_code", runtime=runtime,
                     prompt="FAKE: " + json.dumps(scenario), resume=None, model=None, read_only=False,
                     limits=Limits(timeout=60, stall_timeout=30), work=work)


def _run(cluster: DaskCluster, job: RemoteJob) -> dict:
    future = cluster.client().submit(run_remote_turn, job, key=f"baton-{job.attempt}", resources={"runner": 1},
                                     pure=False, retries=0)
    try:
        return future.result(timeout=60)
    finally:
        future.release()


def test_files_are_never_written_through_a_link_the_repository_holds(cluster, fake_cli, tmp_path):
    outside = tmp_path / "outside"
    (outside / "attachments-target").mkdir(parents=True)
    (outside / "docs-target").mkdir()
    (outside / "claude.md").write_text("original, outside the worktree\n")
    clone = make_repo(tmp_path)
    # Committed links, each where Baton places a file: a copy_files path pointing at a file
    # outside, one pointing nowhere yet (a write would create its target), and folders on the
    # way to .baton/attachments and to a deeper copy_files path.
    (clone / "CLAUDE.md").symlink_to(outside / "claude.md")
    (clone / "GUIDE.md").symlink_to(outside / "guide-not-there-yet.md")
    (clone / ".baton").symlink_to(outside / "attachments-target", target_is_directory=True)
    (clone / "docs").symlink_to(outside / "docs-target", target_is_directory=True)
    git(clone, "add", "CLAUDE.md", "GUIDE.md", ".baton", "docs")
    git(clone, "commit", "-q", "-m", "links out of the worktree")
    git(clone, "push", "--quiet", "origin", "main")
    start = git(clone, "rev-parse", "HEAD").strip()
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}

    job = _job(fake_cli, clone, start, files={
        "CLAUDE.md": b"Baton's copy\n", "GUIDE.md": b"Baton's guide\n",
        ".baton/attachments/notes.txt": b"attached\n", ".baton/attachments/sub/deep.txt": b"deeper\n",
        "docs/deep/conventions.md": b"conventions\n",
        "PROGRESS.md": b"progress, placed\n",  # no link in the way: placed as usual
    }, scenario={"steps": [{"read": "PROGRESS.md", "into": "seen-progress.txt"}]})
    result = _run(cluster, job)

    assert result["error"] is None and result["exit_code"] == 0, result
    after = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing created outside
    assert not (outside / "guide-not-there-yet.md").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["attachments-target", "claude.md", "docs-target"]
    # The turn ran, saw the file Baton could place, and its commit keeps the links as committed.
    head = result["head"]
    git(clone, "fetch", "--quiet", "origin", job.work.branch)
    assert git(clone, "rev-parse", "FETCH_HEAD").strip() == head
    assert git(clone, "show", f"{head}:seen-progress.txt") == "progress, placed\n"
    tree = git(clone, "ls-tree", head).splitlines()
    assert {line.split("\t")[1]: line.split()[0] for line in tree if line.split()[0] == "120000"}.keys() == {
        "CLAUDE.md", "GUIDE.md", ".baton", "docs"}
    assert "PROGRESS.md" not in git(clone, "ls-tree", "-r", "--name-only", head).split()  # Baton's file stays out
    assert list((cluster.worker_dir("box-a") / "runs").iterdir()) == []  # the worktree is gone


def test_a_task_in_a_repository_linking_out_writes_nothing_there(cluster, agent_factory, fake_cli, tmp_path):
    """The same, end to end: a real agent, an attachment, and links committed on main."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "claude.md").write_text("original\n")
    project = make_repo(tmp_path, "linked")
    (project / "CLAUDE.md").symlink_to(outside / "claude.md")
    (project / ".baton").symlink_to(outside / "dir", target_is_directory=True)
    git(project, "add", "CLAUDE.md", ".baton")
    git(project, "commit", "-q", "-m", "links out")
    git(project, "push", "--quiet", "origin", "main")
    (project / "PROGRESS.md").write_text("progress\n")  # untracked: copied into the task's worktree
    agent = agent_factory(config=dask_agent_config(fake_cli, cluster, {"forward_env": FAKE_ENV}), project=project)
    task_id = submit_task(agent, fake_task("Linked", {"steps": [
        {"read": ".baton/attachments/notes.txt", "into": "seen-notes.txt"},
        {"read": "PROGRESS.md", "into": "seen-progress.txt"}, {"commit": "feature: seen"}]}))
    resp = agent.client.post(f"/agent/tasks/{task_id}/attachments", files=[("files", ("notes.txt", b"attached\n"))])
    assert resp.status_code == 201, resp.text
    assert agent.client.post("/agent/dispatcher/start").status_code == 200
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    assert task.worker == "box-a"
    assert (outside / "claude.md").read_text() == "original\n"
    assert list((outside / "dir").iterdir()) == []
    origin = origin_of(project)
    assert git(origin, "show", "main:seen-notes.txt") == "attached\n"
    assert git(origin, "show", "main:seen-progress.txt") == "progress\n"


# ----- secrets --------------------------------------------------------------------------------------


def test_forwarded_values_reach_the_agent_and_nothing_else(cluster, agent_factory, fake_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_FOR_TEST", FORWARDED)
    envdump = tmp_path / "agent-env.txt"
    config = dask_agent_config(fake_cli, cluster, {"forward_env": ["SECRET_FOR_TEST", *FAKE_ENV]},
                               secret_env_vars=["BATON_TOKEN", "GITHUB_TOKEN", "VAULT_TOKEN"])
    agent = agent_factory(config=config, dispatch=True)
    task_id = submit_task(agent, fake_task("Env", {"steps": [
        {"run": ["sh", "-c", f"env > {envdump}"]}, {"write": "a.txt", "text": "a\n"}, {"commit": "feature: a"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    assert task.worker == "box-a"

    (call,) = fake_cli.calls()
    assert call["env"]["SECRET_FOR_TEST"] == FORWARDED  # forwarded: the agent has it
    assert call["env"]["GITHUB_TOKEN"] is None and call["env"]["BATON_TOKEN"] is None  # the worker's own: hidden
    assert FORWARDED not in " ".join(call["argv"]) and FORWARDED not in call["prompt"]
    seen = dict(line.split("=", 1) for line in envdump.read_text().splitlines() if "=" in line)
    assert seen["SECRET_FOR_TEST"] == FORWARDED and seen["TASK_ID"] == task_id
    assert not {"GITHUB_TOKEN", "BATON_TOKEN", "VAULT_TOKEN"} & set(seen)
    assert not [name for name in seen if name.startswith("DASK_")]  # the worker's own settings stay with it

    project, logs = agent.settings.project_dir, agent.settings.logs_dir
    wait_for(lambda: not (logs / f"{task_id}.runtime").exists(), what="the landed task's cleanup")
    assert FORWARDED not in agent.store.get(task_id).model_dump_json()
    leaked = files_holding(b"never-shown", project, logs, cluster.root)  # task files, logs, Dask's logs
    assert leaked == [], leaked
    assert "distributed" in cluster.log("box-a") and "distributed" in cluster.log("scheduler")  # logs were written


def test_a_forwarded_value_in_the_command_line_is_refused_on_the_worker(cluster, agent_factory, fake_cli,
                                                                          monkeypatch):
    monkeypatch.setenv("SECRET_FOR_TEST", FORWARDED)
    config = dask_agent_config(fake_cli, cluster, {"forward_env": ["SECRET_FOR_TEST", *FAKE_ENV]},
                               claude_code={"extra_args": [f"--note={FORWARDED}"]})
    agent = agent_factory(config=config, dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Leaky", {"steps": []})))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_error", task.error_message
    assert "SECRET_FOR_TEST" in task.error_message and FORWARDED not in task.error_message
    assert fake_cli.calls() == []  # never started


def test_a_remote_jobs_repr_names_the_attempt_only(fake_cli, tmp_path):
    runtime = ClaudeCodeRuntime(ClaudeCodeConfig(command=fake_cli.command))
    work = RemoteWork(origin="/srv/origin.git", start_sha="a" * 40, branch="baton/attempts/t1/t1-r1-abc",
                      files={"CLAUDE.md": b"conventions never-shown"}, forward_env={"API_KEY": FORWARDED})
    job = RemoteJob(attempt="t1-r1-abc", task_id="t1", project=str(tmp_path), runtime_name="claude_code",
                    runtime=runtime, prompt="the prompt, never-shown", resume=None, model=None, read_only=False,
                    limits=runtime.limits, work=work)
    for text in (repr(job), str(job), f"{job!r}", repr([job]), repr({"job": job})):
        assert "t1-r1-abc" in text and "never-shown" not in text, text
    assert FORWARDED not in repr(work)  # nor the work it carries, printed on its own
