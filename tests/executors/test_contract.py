"""The contract every executor passes (backend/executors/base.py): the same tasks, run by a real
agent with the fake Claude CLI, end the same way whichever executor runs their agent turns.

Adding an executor: its folder in backend/executors/, its entry in EXECUTORS, and one entry in
PLACES below (a context manager that starts what it needs, once per module, and yields a
function making the agent's config for it). test_every_executor_has_a_place fails until then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.config import AgentConfig
from backend.executors import EXECUTORS
from backend.models import TaskStatus
from conftest import fake_task
from support import git, origin_of, pid_alive, submit_task, task_events, wait_for, wait_task_done

from .cluster import DaskCluster, dask_agent_config

# The fake CLI's own variables (its call log, its session state) change per test; a Dask worker
# started once per module gets them as the project host's environment rules say: forwarded.
FAKE_ENV = ["FAKE_CLAUDE_LOG", "FAKE_CLAUDE_STATE"]


@dataclass
class Place:
    """Where an executor runs turns, for these tests: `config(fake_cli, **agent_yaml)` makes the
    agent's config; `worker` is what Task.worker says while and after a turn ran there."""

    name: str
    config: Callable[..., AgentConfig]
    worker: str | None


@contextlib.contextmanager
def _local(root: Path) -> Iterator[Place]:
    yield Place("local", lambda fake_cli, **keys: fake_cli.config(**keys), worker=None)


@contextlib.contextmanager
def _dask(root: Path) -> Iterator[Place]:
    cluster = DaskCluster(root)
    try:
        cluster.start()
        cluster.add_worker("box-a")
        yield Place("dask", lambda fake_cli, **keys: dask_agent_config(fake_cli, cluster, {"forward_env": FAKE_ENV},
                                                                       **keys),
                    worker="box-a")
    finally:
        cluster.close()


PLACES: dict[str, Callable[[Path], contextlib.AbstractContextManager[Place]]] = {"local": _local, "dask": _dask}


def test_every_executor_has_a_place():
    assert set(PLACES) == set(EXECUTORS), "each executor in backend.executors.EXECUTORS needs its entry in PLACES"


@pytest.fixture(scope="module", params=sorted(EXECUTORS))
def place(request, tmp_path_factory) -> Iterator[Place]:
    """One per executor and module: tests run grouped by it, so a cluster starts once."""
    if request.param not in PLACES:
        pytest.fail(f"executor {request.param!r} has no entry in PLACES (tests/executors/test_contract.py)")
    with PLACES[request.param](tmp_path_factory.mktemp(f"place-{request.param}")) as made:
        yield made


def agent_kinds(agent, task_id: str) -> list[str]:
    return [e["kind"] for e in task_events(agent, task_id) if e["kind"] != "baton"]


def baton_says(agent, task_id: str) -> str:
    return "\n".join(e.get("text", "") for e in task_events(agent, task_id) if e["kind"] == "baton")


def test_a_committed_file_lands(place, agent_factory, fake_cli):
    agent = agent_factory(config=place.config(fake_cli), dispatch=True)
    project = agent.settings.project_dir
    task_id = submit_task(agent, fake_task("Add hello", {"steps": [
        {"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, (task.error_message, baton_says(agent, task_id))
    origin = origin_of(project)
    assert git(origin, "rev-parse", "main").strip() == task.commit_sha
    assert git(origin, "show", "main:hello.txt") == "hi\n"
    assert git(origin, "log", "-1", "--format=%s", "main").strip() == "feature: hello"
    assert task.worker == place.worker
    (call,) = fake_cli.calls()
    assert call["env"]["TASK_ID"] == task_id
    # Cleaned up: the task's branch, and no attempt branch left on the origin.
    wait_for(lambda: git(origin, "branch", "--list", f"task/{task_id}", "baton/*").strip() == "",
             what="the task's branches to go")


def test_leftover_changes_are_committed_and_batons_own_files_never_land(place, agent_factory, fake_cli):
    agent = agent_factory(config=place.config(fake_cli), dispatch=True)
    project = agent.settings.project_dir
    (project / "CLAUDE.md").write_text("# conventions (untracked in the project)\n")  # copy_files
    task_id = submit_task(agent, fake_task("Sneaky", {"steps": [
        {"read": "CLAUDE.md", "into": "seen-claude.txt"},  # Baton's copy reached the agent
        {"write": "work.txt", "text": "real work\n"},
        {"git": ["add", "-f", "data/dev-tasks.json", "CLAUDE.md", "work.txt"]},
        {"commit": "work plus baton files"},
        {"write": "later.txt", "text": "uncommitted\n"},
        {"write": "CLAUDE.md", "text": "# rewritten by the agent\n"},
    ]}, task_type="bugfix"))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, (task.error_message, baton_says(agent, task_id))
    origin = origin_of(project)
    files = set(git(origin, "ls-tree", "-r", "--name-only", "main").split())
    assert {"work.txt", "later.txt", "seen-claude.txt"} <= files
    assert git(origin, "show", "main:later.txt") == "uncommitted\n"  # left uncommitted, committed by Baton
    assert git(origin, "show", "main:seen-claude.txt") == "# conventions (untracked in the project)\n"
    for sha in git(origin, "rev-list", "main").split():  # in no landed commit at all
        changed = git(origin, "show", "--name-only", "--format=", sha).split()
        assert "data/dev-tasks.json" not in changed and "CLAUDE.md" not in changed, sha
    subjects = git(origin, "log", "--format=%s", "main").splitlines()
    assert f"bugfix({task_id}): Sneaky" in subjects  # the leftovers' commit carries the task's message
    assert (project / "CLAUDE.md").read_text() == "# conventions (untracked in the project)\n"
    assert agent.store.check().tasks[task_id].status is TaskStatus.completed


def test_a_failing_agent_fails_with_agent_error_and_keeps_its_branch(place, agent_factory, fake_cli):
    agent = agent_factory(config=place.config(fake_cli), dispatch=True)
    project = agent.settings.project_dir
    task_id = submit_task(agent, fake_task("Will fail", {
        "steps": [{"write": "partial.txt", "text": "half done\n"}],
        "result": "error_during_execution", "error": "model exploded"}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.failed
    assert task.error_reason == "agent_error" and "model exploded" in task.error_message
    assert Path(task.log_path).exists() and "model exploded" in Path(task.log_path).read_text()
    branch = f"task/{task_id}"
    assert git(origin_of(project), "show", f"{branch}:partial.txt") == "half done\n"  # nothing lost
    assert git(origin_of(project), "branch", "--list", "baton/*").strip() == ""


def test_an_exit_without_result_is_an_agent_error_with_its_stderr(place, agent_factory, fake_cli):
    agent = agent_factory(config=place.config(fake_cli), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Crash", {"no_result": True, "exit": 3})))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_error"
    assert "exited with status 3 without a result" in task.error_message
    assert "crashed without a result" in task.error_message  # the CLI's stderr came back


# The fake's Write, three ticks, a commit and its answer, as the task's transcript shows them
# (Baton's own lines aside): what a local run records.
TRANSCRIPT = ["session_started", "tool_use", "tool_result", "assistant_text", "assistant_text", "assistant_text",
              "tool_use", "tool_result", "assistant_text", "result"]


def test_events_arrive_in_order_once_and_are_accounted_as_at_home(place, agent_factory, fake_cli):
    agent = agent_factory(config=place.config(fake_cli), dispatch=True)
    task_id = submit_task(agent, fake_task("Two tools", {"steps": [
        {"write": "a.txt", "text": "a\n"}, {"tick": 3, "every": 0.05}, {"commit": "feature: a"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    assert agent_kinds(agent, task_id) == TRANSCRIPT
    texts = [e["text"] for e in task_events(agent, task_id) if e["kind"] == "assistant_text"]
    assert texts == ["still working (1)", "still working (2)", "still working (3)", "Done."]  # in order, once
    # The same Task fields as a local run of the fake records (tests/test_dispatcher.py).
    assert task.session_id and task.agent_model == "claude-fake-1" and task.agent_runtime == "claude_code"
    assert task.cost_usd == pytest.approx(0.0125)
    assert (task.input_tokens, task.output_tokens, task.cache_read_tokens, task.cache_creation_tokens) == (
        1200, 50, 300, 20)
    assert task.num_turns >= 1 and task.result_text == "Done."
    assert task.worker == place.worker
    raw = Path(task.log_path).read_text()  # the CLI's own output, in the task's log
    assert raw.index("still working (1)") < raw.index("still working (3)") < raw.index('"type": "result"')


def test_a_wall_clock_limit_stops_the_turn(place, agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=place.config(fake_cli, claude_code={"timeout": 2, "stall_timeout": 30}),
                          dispatch=True)
    pidfile = tmp_path / "grandchild.pid"
    task_id = submit_task(agent, fake_task("Busy forever", {"steps": [
        {"grandchild": str(pidfile)}, {"tick": 1000, "every": 0.1}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.failed and task.error_reason == "timeout", task.error_message
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not pid_alive(grandchild), timeout=10, what="the grandchild to be gone")
    assert "still working" in Path(task.log_path).read_text()  # output kept flowing until the limit


def test_a_stall_limit_stops_the_turn(place, agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=place.config(fake_cli, claude_code={"stall_timeout": 1}), dispatch=True)
    marker = tmp_path / "silent.pid"
    task = wait_task_done(agent, submit_task(agent, fake_task("Silent", {"steps": [
        {"marker": str(marker)}, {"sleep": 60}]})))
    assert task.status is TaskStatus.failed and task.error_reason == "stalled", task.error_message
    assert "printed nothing for 1s" in task.error_message
    wait_for(lambda: not pid_alive(int(marker.read_text())), timeout=10, what="the silent CLI to be gone")


def test_a_cancel_mid_turn_ends_cancelled_and_keeps_the_work(place, agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=place.config(fake_cli), dispatch=True)
    project = agent.settings.project_dir
    marker = tmp_path / "running"
    task_id = submit_task(agent, fake_task("Long", {"steps": [
        {"write": "partial.txt", "text": "started\n"}, {"marker": str(marker)}, {"sleep": 120}]}))
    wait_for(marker.exists, timeout=30, what="the agent to start")
    wait_for(lambda: agent.store.get(task_id).worker == place.worker, what="the task to name where it runs")
    agent_pid = int(marker.read_text())
    resp = agent.client.post(f"/agent/tasks/{task_id}/cancel")
    assert resp.status_code in (200, 202), resp.text  # 202: still stopping after 5 s
    task = wait_task_done(agent, task_id, timeout=30)
    assert task.status is TaskStatus.cancelled, task.error_message
    assert not pid_alive(agent_pid)
    assert git(origin_of(project), "show", f"task/{task_id}:partial.txt") == "started\n"
    assert git(origin_of(project), "branch", "--list", "baton/*").strip() == ""


def test_a_secret_in_the_command_line_is_refused_before_the_cli_starts(place, agent_factory, fake_cli, monkeypatch):
    monkeypatch.setenv("SECRET_FOR_TEST", "s3cr3t-in-argv")
    config = place.config(fake_cli, claude_code={"extra_args": ["--note=s3cr3t-in-argv"]},
                          secret_env_vars=["BATON_TOKEN", "SECRET_FOR_TEST"])
    agent = agent_factory(config=config, dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Leaky", {"steps": []})))
    assert task.status is TaskStatus.failed and task.error_reason == "runtime_unavailable", task.error_message
    assert "SECRET_FOR_TEST" in task.error_message and "s3cr3t-in-argv" not in task.error_message
    assert fake_cli.calls() == []  # never started, anywhere
