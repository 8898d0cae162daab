"""executor: dask, the project host's side of the hardening: what the host refuses or holds back
before a turn ever reaches a worker, and what it tells the board meanwhile.

- resource amounts: a worker must offer as much as a run holds (runner=3 is not runner=2);
- a task pinned to a box no worker offers waits pending, holding no slot, until that box comes;
- a remote URL with a password is refused before anything is pushed, and never written down;
- a scheduler that listens in plain tcp:// off loopback is refused (Dask has no authentication);
- a remote removed while the agent runs shows on /agent/health, and nothing more is claimed;
- a turn waiting for its box says so in its phase, and the worker is named once it starts;
- a task whose tracker tools need this host runs its turns here;
- dask.tls naming files that are not there stops baton-agent at start.

Real processes throughout: a `dask scheduler` and `dask worker`s on loopback (cluster.py), the
agent app, the fake Claude CLI, git with a bare origin per test. The tests that leave the cluster
as they found it share one (`shared`, one worker box-a, module scope).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from backend.executors.dask.config import is_loopback_host
from backend.executors.dask.remote import redact
from backend.models import TaskStatus
from conftest import fake_task
from fakes.tools_gateway_standin import PATH, ToolsGateway
from support import free_port, git, origin_of, run_agent, serve, submit_task, task_events, wait_for, wait_task_done

from .cluster import DaskCluster, done, says

HEALTH_WAIT = 20.0  # the executor looks at its scheduler every 2 s; margin for a loaded 2-core machine


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One scheduler and one worker, box-a (runner=2, box-a=2); the fake CLI on it logs to the
    module's folder."""
    root = tmp_path_factory.mktemp("hardening")
    cluster = DaskCluster(root / "cluster")
    try:
        cluster.start()
        cluster.add_worker("box-a", env={"FAKE_CLAUDE_LOG": str(root / "fake-calls.jsonl"),
                                         "FAKE_CLAUDE_STATE": str(root / "fake-state")})
        cluster.close_client()
        yield cluster
    finally:
        cluster.close()


# ----- helpers ------------------------------------------------------------------------------------


def problems(agent) -> dict[str, str]:
    return {p["code"]: p["message"] for p in agent.client.get("/agent/health").json()["problems"]}


def write_and_commit(name: str, wait: Path | None = None) -> dict:
    steps = [{"wait_for": str(wait), "seconds": 60}] if wait else []
    return {"steps": [*steps, {"write": f"{name}.txt", "text": f"{name}\n"}, {"commit": f"feature: {name}"}]}


def attempt_branches(project: Path) -> list[str]:
    return git(origin_of(project), "for-each-ref", "--format=%(refname)", "refs/heads/baton/attempts").split()


def running(agent, task_id: str) -> dict | None:
    """The task's entry in /agent/dispatcher running[], if it runs."""
    runs = agent.client.get("/agent/dispatcher").json()["running"]
    return next((r for r in runs if r["task_id"] == task_id), None)


def stays_pending(agent, task_id: str) -> None:
    """A whole claiming round with the task pending claims nothing of it."""
    agent.app.state.dispatcher.tick()
    task = agent.store.get(task_id)
    assert task.status is TaskStatus.pending, (task.status, task.error_message)
    assert task.runs == 0 and task.worker is None


# ----- 1. resource amounts ------------------------------------------------------------------------


def test_workers_offering_less_than_a_run_holds_are_no_workers(shared, dask_config, agent_factory):
    agent = agent_factory(config=dask_config(shared, dask={"resources": {"runner": 3}}), dispatch=True)
    task_id = submit_task(agent, fake_task("Big", write_and_commit("big")))

    message = wait_for(lambda: problems(agent).get("no_workers"), timeout=HEALTH_WAIT, what="the no_workers problem")
    assert "runner=3" in message, message  # box-a offers runner=2: the name alone is not enough
    assert agent.app.state.dispatcher.tick() == 0
    stays_pending(agent, task_id)


# ----- 2. pinned to a box nobody offers -----------------------------------------------------------


def test_a_task_pinned_to_an_absent_box_waits_pending_holding_no_slot_until_the_box_comes(
        dask_cluster, dask_config, agent_factory):
    cluster = dask_cluster(workers=("box-a",))
    agent = agent_factory(config=dask_config(cluster, max_parallel_workers=1), dispatch=True)
    origin = origin_of(agent.settings.project_dir)
    pinned = submit_task(agent, fake_task("Pinned", write_and_commit("pinned"), run_on="box-z"))
    # Submitted after it, with the one slot there is: they land while it waits.
    later = [submit_task(agent, fake_task(f"Later {i}", write_and_commit(f"later{i}"))) for i in range(2)]
    for task_id in later:
        assert done(agent, task_id).worker == "box-a"
    stays_pending(agent, pinned)
    assert not git(origin, "ls-tree", "main", "pinned.txt").strip()

    cluster.add_worker("box-z", resources="runner=1,box-z=1")
    task = done(agent, pinned)
    assert (task.run_on, task.worker, task.runs) == ("box-z", "box-z", 1)
    assert git(origin, "show", "main:pinned.txt") == "pinned\n"
    assert attempt_branches(agent.settings.project_dir) == []


# ----- 3. a password in the remote's URL ---------------------------------------------------------


PASSWORD = "secretZq7pw"


def test_a_remote_url_with_a_password_fails_the_task_before_any_push_and_is_never_written(
        shared, dask_config, agent_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="backend")
    agent = agent_factory(config=dask_config(shared), dispatch=True)
    project = agent.settings.project_dir
    origin = origin_of(project)
    git(project, "remote", "set-url", "origin", f"http://user:{PASSWORD}@127.0.0.1:1/x.git")
    refs_before = git(origin, "for-each-ref")

    task_id = submit_task(agent, fake_task("Leak", write_and_commit("leak")))
    task = wait_task_done(agent, task_id, timeout=60)

    assert task.status is TaskStatus.failed, (task.status, task.error_reason, task.error_message)
    assert task.error_reason == "runtime_unavailable", (task.error_reason, task.error_message)
    assert "'origin'" in task.error_message and "carries a password" in task.error_message, task.error_message
    assert task.worker is None and task.runs == 1  # refused on the host: no worker ever had it
    assert git(origin, "for-each-ref") == refs_before  # nothing was pushed (the URL leads nowhere anyway)
    # Nowhere: the task record (store, mirrors), its transcript, the project's logs, this process's log.
    assert PASSWORD not in json.dumps(agent.client.get(f"/agent/tasks/any/{task_id}").json())
    assert PASSWORD not in json.dumps(task_events(agent, task_id))
    written = [path for folder in ("data", "tasks", "logs") for path in (project / folder).rglob("*") if path.is_file()]
    assert any(path.name.endswith(".jsonl") for path in written), written  # the events file is among them
    for path in written:
        assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in caplog.text


def test_redact_drops_the_user_and_password_of_a_url():
    text = redact("git clone https://u:p@h/x failed; also ssh://me:pw@box:22/r.git and http://tok@h2/y")
    assert "u:p" not in text and "me:pw" not in text and "tok@" not in text, text
    assert "h/x" in text and "box:22/r.git" in text, text  # the rest of each URL stays readable


# ----- 4. plain tcp off loopback --------------------------------------------------------------------


@pytest.fixture
def exposed(tmp_path):
    cluster = DaskCluster(tmp_path / "exposed", host="0.0.0.0")
    try:
        yield cluster
    finally:
        cluster.close()


def test_a_scheduler_listening_in_plain_tcp_off_loopback_is_refused(exposed, dask_config, agent_factory):
    exposed.start()
    exposed.add_worker("box-a")
    announced = str(exposed.client().scheduler_info()["address"])
    exposed.close_client()
    if is_loopback_host(urlsplit(announced).hostname or ""):
        pytest.skip(f"this machine has no address off loopback: the scheduler bound to 0.0.0.0 announces "
                    f"{announced}, so there is nothing exposed to refuse")

    agent = agent_factory(config=dask_config(exposed), dispatch=True)  # dials tcp://127.0.0.1:<port>
    task_id = submit_task(agent, fake_task("Exposed", write_and_commit("exposed")))
    message = wait_for(lambda: problems(agent).get("executor_misconfigured"), timeout=HEALTH_WAIT,
                       what="the executor_misconfigured problem")
    assert "plain tcp:// off loopback" in message and announced in message, message
    assert agent.app.state.dispatcher.tick() == 0
    stays_pending(agent, task_id)


# ----- 5. the remote removed while the agent runs -------------------------------------------------


def test_a_remote_removed_while_the_agent_runs_shows_and_nothing_more_is_claimed(shared, dask_config, agent_factory):
    agent = agent_factory(config=dask_config(shared), dispatch=True)
    project = agent.settings.project_dir
    done(agent, submit_task(agent, fake_task("Before", write_and_commit("before"))))  # the agent runs, with a remote
    assert problems(agent) == {}

    git(project, "remote", "remove", "origin")
    message = wait_for(lambda: problems(agent).get("no_remote"), timeout=10, what="the no_remote problem")
    assert "'origin'" in message, message
    task_id = submit_task(agent, fake_task("After", write_and_commit("after")))
    assert agent.app.state.dispatcher.tick() == 0
    stays_pending(agent, task_id)


# ----- 6. the phase of a turn waiting for its box -------------------------------------------------


def test_a_turn_waiting_for_its_box_says_so_then_runs_there(shared, dask_config, agent_factory, tmp_path):
    agent = agent_factory(config=dask_config(shared, max_parallel_workers=3), dispatch=True)
    go = tmp_path / "go"
    try:
        # box-a offers runner=2: two held runs take both slots.
        held = [submit_task(agent, fake_task(f"Held {i}", write_and_commit(f"held{i}", wait=go), run_on="box-a"))
                for i in range(2)]
        wait_for(lambda: all(agent.store.get(t).worker == "box-a" for t in held), timeout=60,
                 what="both held tasks to start on box-a")
        waiting = submit_task(agent, fake_task("Waits", write_and_commit("waits"), run_on="box-a"))

        entry = wait_for(lambda: (r := running(agent, waiting)) and r["phase"].startswith("waiting") and r,
                         timeout=30, what="the third task to wait for box-a")
        assert entry["phase"] == "waiting for a worker on box-a", entry
        assert entry["worker"] is None
        assert agent.store.get(waiting).status is TaskStatus.in_progress
        assert agent.store.get(waiting).worker is None
        # After a few seconds the transcript says what the turn waits for: one run's resources.
        wait_for(lambda: "waiting for a Dask worker with box-a=1, runner=1 free" in says(agent, waiting),
                 timeout=30, what="the transcript's waiting notice")
    finally:
        go.write_text("")  # released whatever happens: nothing is left holding box-a

    entry = wait_for(lambda: (r := running(agent, waiting)) and r["worker"] and r, timeout=60,
                     what="the third task to start on box-a")
    assert entry["worker"] == "box-a" and not entry["phase"].startswith("waiting"), entry
    for task_id in [*held, waiting]:
        assert done(agent, task_id).worker == "box-a"
    assert git(origin_of(agent.settings.project_dir), "show", "main:waits.txt") == "waits\n"


# ----- 7. tracker tools run here ---------------------------------------------------------------------


ISSUE = {"kind": "linear", "id": "9f1c2a7e-0b1d-4c55-8d2e-3a1b2c3d4e5f", "identifier": "ENG-7",
         "url": "https://linear.app/acme/issue/ENG-7/fix-the-login"}
TOOL_TOKEN = "v1.tok3n-for-the-dask-hardening-test"


@pytest.fixture
def gateway():
    gw = ToolsGateway(token=TOOL_TOKEN)
    with serve(gw.app()) as base:
        gw.url = base + PATH
        yield gw


def test_a_task_with_tracker_tools_runs_its_turns_on_the_project_host(shared, dask_config, agent_factory, fake_cli,
                                                                       gateway):
    agent = agent_factory(config=dask_config(shared), dispatch=True)
    project = agent.settings.project_dir
    task_id = submit_task(agent, fake_task("Fix the login", {"steps": [
        {"mcp": "tracker_get_issue"}, *write_and_commit("login")["steps"]]},
        source=ISSUE, tool_grant={"url": gateway.url, "token": TOOL_TOKEN}))

    task = done(agent, task_id)
    assert task.worker is None
    assert "tracker tools need this host" in says(agent, task_id)
    # Its tools reached the gateway (a worker's turn gets none), and the CLI ran in the project's worktree.
    assert [c["tool"] for c in gateway.calls] == ["tracker_get_issue"]
    (call,) = [c for c in fake_cli.calls() if c["env"].get("TASK_ID") == task_id]
    assert Path(call["cwd"]).resolve().is_relative_to(project.resolve()), call["cwd"]
    assert git(origin_of(project), "show", "main:login.txt") == "login\n"
    assert attempt_branches(project) == []


# ----- 8. TLS files that are not there ---------------------------------------------------------------


def test_baton_agent_with_missing_tls_files_exits_2_naming_the_key(repo, tmp_path):
    missing = tmp_path / "no-such-dir"
    (repo / "agent.yaml").write_text(
        "executor: dask\ndask:\n  scheduler: tls://127.0.0.1:8786\n"
        f"  tls: {{ca_file: {missing / 'ca.pem'}, cert_file: {missing / 'host.pem'}, key_file: {missing / 'host.key'}}}\n")
    result = run_agent(["--port", str(free_port()), "--project-dir", str(repo)], repo)
    assert result.returncode == 2, result.stderr
    assert f"{repo / 'agent.yaml'}: dask.tls.ca_file: {missing / 'ca.pem'} is not a readable file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (repo / "data").exists() and not (repo / "tasks").exists()  # refused before writing anything

