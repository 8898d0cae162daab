"""What an operator sees of `executor: dask` (issue 16): `run_on` on create (refused with a clear
422 where turns run here), through the agent and through the dashboard (relayed to an agent, or
a store on disk); `worker` and `run_on` on the board's summaries and on GET /agent/dispatcher,
with a real Dask scheduler and worker; the words for `worker_lost`; the start refusals of
`baton-agent` (no Dask distributed, no git remote) as real processes; and the packaging."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import get_args

import httpx
import pytest

from backend.agent.schemas import TaskSummary
from backend.changefeed import summary
from backend.config import AgentConfig
from backend.models import ErrorReason, NewTask, Owner, TaskStatus
from backend.store import TaskStore
from conftest import fake_task
from support import AGENT, ROOT, free_port, make_local_repo, make_repo, origin_of, git, submit_task, wait_for
from support import wait_task_done
from test_agent_startup import one_line, run
from test_api import assert_error

OWNER = Owner(pid=1, host="here", instance="surface")
NEEDS_DASK = "run_on needs executor: dask (agent.yaml)"


def dask_config(fake_cli=None, scheduler: str | None = None, **overrides) -> AgentConfig:
    """executor: dask against `scheduler` (by default a loopback port nobody listens on: nothing
    here connects unless a test asks the dispatcher's state)."""
    dask = {"scheduler": scheduler or f"tcp://127.0.0.1:{free_port()}", "connect_timeout": 2}
    if fake_cli is not None:
        return fake_cli.config(executor="dask", dask=dask, **overrides)
    return AgentConfig(executor="dask", dask=dask, **overrides)


# ----- run_on on create, through the agent --------------------------------------------------------


def test_a_local_project_refuses_run_on_with_one_error_and_creates_nothing(agent_factory):
    agent = agent_factory()
    error = assert_error(agent.client.post("/agent/tasks", json={"title": "t", "run_on": "box-b"}),
                         422, "run_on_needs_dask")
    assert NEEDS_DASK in error["message"] and "'box-b'" in error["message"]
    bulk = [{"title": "a"}, {"title": "b", "run_on": "box-b"}]
    error = assert_error(agent.client.post("/agent/tasks/bulk", json={"tasks": bulk}), 422, "run_on_needs_dask")
    assert error["message"].startswith("tasks[1]: ") and NEEDS_DASK in error["message"]
    assert agent.store.snapshot().tasks == {}
    # Without one (or with null) a create is as before.
    for body in ({"title": "plain"}, {"title": "null", "run_on": None}):
        resp = agent.client.post("/agent/tasks", json=body)
        assert resp.status_code == 201 and resp.json()["run_on"] is None, resp.text


def test_run_on_must_be_a_box_name_and_worker_is_not_the_callers(agent_factory):
    agent = agent_factory(config=dask_config())
    for bad in ("-box", "box b", "box/../x", "b" * 65, "", "box\n", 7):
        error = assert_error(agent.client.post("/agent/tasks", json={"title": "t", "run_on": bad}),
                             422, "validation_error")
        assert any(d["loc"] == "body.run_on" for d in error["details"]), (bad, error)
    # `worker` is what the dispatcher records (the Dask worker that ran the turn): never asked for.
    error = assert_error(agent.client.post("/agent/tasks", json={"title": "t", "worker": "box-a"}),
                         422, "validation_error")
    assert any(d["loc"] == "body.worker" for d in error["details"]), error
    assert agent.store.snapshot().tasks == {}


def test_a_dask_project_stores_run_on_and_shows_it_on_the_card(agent_factory):
    agent = agent_factory(config=dask_config())
    resp = agent.client.post("/agent/tasks", json={"title": "Pinned", "run_on": "box-b.lab_2"})
    assert resp.status_code == 201, resp.text
    task_id = resp.json()["id"]
    assert resp.json()["run_on"] == "box-b.lab_2" and resp.json()["worker"] is None
    assert agent.store.get(task_id).run_on == "box-b.lab_2"
    assert agent.client.get(f"/agent/tasks/any/{task_id}").json()["run_on"] == "box-b.lab_2"
    bulk = agent.client.post("/agent/tasks/bulk", json={"tasks": [{"title": "a", "run_on": "box-a"}, {"title": "b"}]})
    assert bulk.status_code == 201, bulk.text
    assert [t["run_on"] for t in bulk.json()["tasks"]] == ["box-a", None]
    cards = {c["id"]: c for c in agent.client.get("/agent/summaries", params={"status": "pending"}).json()["tasks"]}
    assert cards[task_id]["run_on"] == "box-b.lab_2"
    assert "run_on" not in cards[bulk.json()["tasks"][1]["id"]]  # null: left out, as every card field


def test_the_openapi_document_allows_run_on_only_where_it_is_accepted(agent_factory):
    local = agent_factory().client.get("/openapi.json").json()
    assert local["components"]["schemas"]["NewTask"]["properties"]["run_on"]["anyOf"] == [{"type": "null"}]
    dask = agent_factory(config=dask_config()).client.get("/openapi.json").json()
    options = dask["components"]["schemas"]["NewTask"]["properties"]["run_on"]["anyOf"]
    assert {"type": "null"} in options
    assert any(o.get("type") == "string" and o.get("pattern") for o in options), options
    # The card and the dispatcher's running list document the fields.
    schemas = dask["components"]["schemas"]
    assert {"run_on", "worker"} <= set(schemas["TaskSummary"]["properties"])
    assert "worker" in schemas["RunningTask"]["properties"]


# ----- through the dashboard: relayed to an agent, or written to a store on disk --------------


def test_the_dashboard_passes_run_on_through_and_relays_the_refusal(agent_factory, dashboard_factory, tmp_path):
    local_agent = agent_factory()
    dask_agent = agent_factory(config=dask_config())
    folders = {}
    for name, yaml in (("plain", ""), ("pool", "executor: dask\ndask:\n  scheduler: tcp://127.0.0.1:8786\n")):
        folders[name] = make_repo(tmp_path, name)
        (folders[name] / "agent.yaml").write_text(yaml)
        TaskStore(folders[name] / "data" / "dev-tasks.json").initialize()
    client = dashboard_factory([
        {"id": "here", "agent_url": local_agent.url, "agent_project_id": local_agent.settings.project_id},
        {"id": "away", "agent_url": dask_agent.url, "agent_project_id": dask_agent.settings.project_id},
        {"id": "plain", "path": str(folders["plain"])},
        {"id": "pool", "path": str(folders["pool"])},
    ], timeout=5)
    stores = {"here": local_agent.store, "away": dask_agent.store,
              "plain": TaskStore(folders["plain"] / "data" / "dev-tasks.json"),
              "pool": TaskStore(folders["pool"] / "data" / "dev-tasks.json")}
    for project in ("here", "plain"):  # turns run on the project host: refused, nothing written
        error = assert_error(client.post(f"/api/projects/{project}/tasks", json={"title": "t", "run_on": "box-b"}),
                             422, "run_on_needs_dask")
        assert NEEDS_DASK in error["message"], project
        error = assert_error(client.post(f"/api/projects/{project}/tasks/bulk",
                                         json={"tasks": [{"title": "a"}, {"title": "b", "run_on": "box-b"}]}),
                             422, "run_on_needs_dask")
        assert error["message"].startswith("tasks[1]: "), (project, error)
        assert stores[project].snapshot().tasks == {}, project
        assert client.post(f"/api/projects/{project}/tasks", json={"title": "t"}).status_code == 201, project
    for project in ("away", "pool"):
        resp = client.post(f"/api/projects/{project}/tasks", json={"title": "t", "run_on": "box-b"})
        assert resp.status_code == 201, (project, resp.text)
        assert stores[project].get(resp.json()["id"]).run_on == "box-b", project
        bulk = client.post(f"/api/projects/{project}/tasks/bulk", json={"tasks": [{"title": "a", "run_on": "box-a"}]})
        assert bulk.status_code == 201, (project, bulk.text)
        assert stores[project].get(bulk.json()["tasks"][0]["id"]).run_on == "box-a", project
        assert_error(client.post(f"/api/projects/{project}/tasks", json={"title": "t", "run_on": "no way"}),
                     422, "validation_error")


# ----- the board's summaries and the words -----------------------------------------------------


def test_a_summary_carries_where_the_task_runs(tmp_path):
    store = TaskStore(tmp_path / "data" / "dev-tasks.json")
    store.initialize()
    task = store.create(NewTask(title="Pinned", run_on="box-b"))
    card = summary(task)
    assert card["run_on"] == "box-b" and "worker" not in card
    store.claim(OWNER, 60, task_id=task.id)
    running = summary(store.update(task.id, worker="box-b"))
    assert (running["status"], running["worker"], running["run_on"]) == ("in_progress", "box-b", "box-b")
    lost = summary(store.transition(task.id, TaskStatus.pending, error_reason="worker_lost",
                                    error_message="box-b stopped answering"))
    assert (lost["status"], lost["error_reason"], lost["worker"]) == ("pending", "worker_lost", "box-b")
    validated = TaskSummary.model_validate(lost).model_dump(exclude_none=True)
    assert validated["worker"] == "box-b" and validated["run_on"] == "box-b"


def test_every_failure_reason_has_words_on_the_board_and_in_tracker_comments():
    from backend.sources.engine import REASONS

    reasons = set(get_args(ErrorReason))
    assert "worker_lost" in reasons
    assert reasons <= set(REASONS), sorted(reasons - set(REASONS))
    words = (ROOT / "frontend" / "js" / "words.js").read_text()
    block = words.split("const REASONS = {", 1)[1].split("};", 1)[0]
    assert reasons <= set(re.findall(r"^\s*([a-z_]+):", block, re.M)), "frontend/js/words.js REASONS"
    assert "its worker machine was lost; it was re-queued" in words


# ----- a real scheduler and worker: where a running task is ----------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One `dask scheduler` and one `dask worker` box-a (runner=2, box-a=2), in a folder of their own."""
    from executors.cluster import DaskCluster

    root = tmp_path_factory.mktemp("surface-dask")
    made = DaskCluster(root / "dask")
    try:
        made.start()
        made.add_worker("box-a", env={"FAKE_CLAUDE_STATE": str(root / "fake-state")})
        yield made
    finally:
        made.close()


def test_the_worker_of_a_running_task_is_on_its_card_and_in_the_dispatcher(cluster, agent_factory, fake_cli,
                                                                            tmp_path):
    agent = agent_factory(config=dask_config(fake_cli, cluster.address), dispatch=True)
    release = tmp_path / "release"
    task_id = submit_task(agent, fake_task("Runs on box-a", {"steps": [
        {"write": "a.txt", "text": "a\n"}, {"wait_for": str(release), "seconds": 60}, {"commit": "feature: a"}]},
        run_on="box-a"))

    def running():
        status = agent.client.get("/agent/dispatcher").json()
        return [r for r in status["running"] if r["task_id"] == task_id and r.get("worker")]

    try:
        entry = wait_for(running, timeout=60, what="the task to run on a worker")[0]
        assert entry["worker"] == "box-a"
        card = agent.client.get("/agent/summaries", params={"status": "in_progress"}).json()["tasks"][0]
        assert (card["id"], card["worker"], card["run_on"]) == (task_id, "box-a", "box-a")
    finally:
        release.write_text("go\n")
    task = wait_task_done(agent, task_id, timeout=60)
    assert task.status is TaskStatus.completed, (task.error_reason, task.error_message, cluster.log("box-a")[-2000:])
    assert task.worker == "box-a"
    assert git(origin_of(agent.settings.project_dir), "show", "main:a.txt") == "a\n"
    card = agent.client.get("/agent/summaries", params={"status": "completed"}).json()["tasks"][0]
    assert (card["id"], card["worker"]) == (task_id, "box-a")


# ----- baton-agent refuses to start what cannot work -------------------------------------------------


def _dask_yaml(repo: Path) -> None:
    (repo / "agent.yaml").write_text(f"executor: dask\ndask:\n  scheduler: tcp://127.0.0.1:{free_port()}\n"
                                     "  connect_timeout: 2\n")


def test_start_refuses_executor_dask_without_distributed(tmp_path):
    repo = make_repo(tmp_path)
    _dask_yaml(repo)
    missing = tmp_path / "no-distributed"
    (missing / "distributed").mkdir(parents=True)
    (missing / "distributed" / "__init__.py").write_text(
        'raise ImportError("No module named distributed (this test hides it)")\n')
    result = run(AGENT + ["--port", str(free_port()), "--project-dir", str(repo)], repo,
                 env={"PYTHONPATH": f"{missing}:{ROOT}"})
    line = one_line(result)
    assert result.returncode == 2, result.stderr
    assert str(repo / "agent.yaml") in line and "executor: dask" in line, line
    assert "pip install '.[distributed]'" in line and "this test hides it" in line, line
    assert not (repo / "data").exists() and not (repo / ".git" / "baton-agent.lock").exists()


def test_start_refuses_executor_dask_without_a_git_remote(tmp_path):
    repo = make_local_repo(tmp_path, "alone")
    _dask_yaml(repo)
    result = run(AGENT + ["--port", str(free_port()), "--project-dir", str(repo)], repo)
    line = one_line(result)
    assert result.returncode == 2, result.stderr
    assert str(repo / "agent.yaml") in line and "executor: dask" in line and "'origin'" in line, line
    assert "workers get their work only through git" in line, line
    assert not (repo / "data").exists()
    # remote: names the one the workers fetch from: another name is not there either.
    (repo / "agent.yaml").write_text((repo / "agent.yaml").read_text() + "remote: upstream\n")
    git(repo, "remote", "add", "origin", str(tmp_path / "nowhere.git"))
    line = one_line(run(AGENT + ["--port", str(free_port()), "--project-dir", str(repo)], repo))
    assert "'upstream'" in line and "workers get their work only through git" in line, line


def test_a_scheduler_that_is_down_is_a_health_problem_not_a_refusal(tmp_path, started):
    repo = make_repo(tmp_path)
    _dask_yaml(repo)
    agent, url = started(repo)
    def executor_problem():
        answer = httpx.get(f"{url}/agent/health", timeout=10).json()
        return answer if any(p["code"] == "executor_unavailable" for p in answer["problems"]) else None

    health = wait_for(executor_problem, timeout=20, what="the executor's problem on /agent/health")
    assert health["status"] == "degraded"
    assert "executor_unavailable" in [p["code"] for p in health["problems"]], health
    assert agent.proc.poll() is None


# ----- packaging ------------------------------------------------------------------------------


def test_the_distributed_extra_is_pinned_exactly_and_the_test_extra_pulls_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    (pin,) = extras["distributed"]
    assert re.fullmatch(r"distributed==\d+\.\d+\.\d+", pin), pin  # the workers must run the very same version
    assert "baton[distributed]" in extras["test"]
    import distributed

    assert distributed.__version__ == pin.split("==")[1], "the tests run another distributed than the pinned one"
    packages = project["tool"]["setuptools"]["packages"]
    assert {"backend.executors", "backend.executors.local", "backend.executors.dask"} <= set(packages)
