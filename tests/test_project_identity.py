"""The dashboard only shows an agent's tasks under a project when the agent's health names that
project: another project's agent on the configured port is unavailable, with the reason, and
nothing of it is read or written through this project."""

from __future__ import annotations

from backend.agent.app import create_app
from backend.agent.settings import AgentSettings
from backend.config import AgentConfig
from backend.models import NewTask
from backend.store import TaskStore
from support import free_port, make_repo, serve, wait_for
from test_api import assert_error
from test_dashboard_api import HEALTH, stand_in  # noqa: F401 (a fixture, used by name)


def project(client, project_id: str = "mine") -> dict:
    return next(p for p in client.get("/api/board").json()["projects"] if p["id"] == project_id)


def project_agent(tmp_path, name: str):
    """An agent app of project `name` (not served yet), its store, and the one task in it."""
    settings = AgentSettings(project_dir=make_repo(tmp_path, name), config=AgentConfig(dispatcher_autostart=False))
    store = TaskStore(settings.store_path)
    store.initialize()
    task = store.create(NewTask(title=f"a task of {name}"))
    return create_app(settings, store), store, task


def test_another_projects_agent_is_unavailable_and_nothing_of_it_is_served(agent_factory, dashboard_factory):
    other = agent_factory(config=AgentConfig(project_id="other"))
    other.store.create(NewTask(title="not mine"))
    client = dashboard_factory([{"id": "mine", "agent_url": other.url}])
    entry = project(client)
    assert not entry["healthy"] and entry["tasks"] is None
    assert f"the agent at {other.url} serves project 'other', not 'mine'" in entry["reason"]
    assert "agent_project_id" in entry["reason"] and entry["tasks_error"] == entry["reason"]
    listed = next(p for p in client.get("/api/projects").json()["projects"] if p["id"] == "mine")
    assert not listed["healthy"] and listed["counts"] is None and "'other'" in listed["reason"]
    task_id = other.store.list_tasks()[0].id
    for resp in (client.get("/api/projects/mine/tasks"),
                 client.get(f"/api/projects/mine/tasks/pending/{task_id}.md"),
                 client.get(f"/api/projects/mine/tasks/{task_id}/events"),
                 client.get(f"/api/projects/mine/tasks/{task_id}/stream"),
                 client.post("/api/projects/mine/tasks", json={"title": "lost?"}),
                 client.post(f"/api/projects/mine/tasks/{task_id}/cancel"),
                 client.post("/api/projects/mine/dispatcher/start")):
        assert "serves project 'other'" in assert_error(resp, 502, "agent_unavailable")["message"]
    assert [t.title for t in other.store.list_tasks()] == ["not mine"]
    assert other.store.list_tasks()[0].status.value == "pending"


def test_agent_project_id_names_the_agent_to_expect(agent_factory, dashboard_factory):
    other = agent_factory(config=AgentConfig(project_id="other"))
    other.store.create(NewTask(title="expected"))
    client = dashboard_factory([{"id": "mine", "agent_url": other.url, "agent_project_id": "other"}])
    entry = project(client)
    assert entry["healthy"] and [t["title"] for t in entry["tasks"]["pending"]] == ["expected"]


def test_a_health_without_project_id_is_not_trusted(dashboard_factory, stand_in):
    old = stand_in({"/agent/health": (200, {k: v for k, v in HEALTH[1].items() if k != "project_id"}),
                    "/agent/tasks": (200, {"pending": []})})
    client = dashboard_factory([{"id": "mine", "agent_url": old.url}])
    entry = project(client)
    assert not entry["healthy"] and "does not name its project" in entry["reason"]
    assert_error(client.get("/api/projects/mine/tasks"), 502, "agent_unavailable")


def test_an_agent_that_takes_over_the_port_is_caught(dashboard_factory, tmp_path):
    port = free_port()
    client = dashboard_factory([{"id": "mine", "agent_url": f"http://127.0.0.1:{port}"}], timeout=5)

    mine, _, _ = project_agent(tmp_path, "mine")
    with serve(mine, port=port):
        assert [t["title"] for t in project(client)["tasks"]["pending"]] == ["a task of mine"]
    intruder, intruder_store, _ = project_agent(tmp_path, "intruder")
    with serve(intruder, port=port):
        # A write right away asks the agent who it is first: nothing lands in the intruder's store.
        assert_error(client.post("/api/projects/mine/tasks", json={"title": "for mine"}), 502, "agent_unavailable")
        entry = wait_for(lambda: (e := project(client))["reason"] and "serves project 'intruder'" in e["reason"] and e,
                         timeout=15, what="the board to notice the other agent")
        assert entry["tasks"] is None and not entry["healthy"]
    assert [t.title for t in intruder_store.list_tasks()] == ["a task of intruder"]


def test_reads_after_an_agent_took_over_the_port_are_not_served(dashboard_factory, tmp_path):
    # No board refresh in between: a read of the project straight after the swap (the drawer's
    # task, its events, an API client polling tasks) must not show the intruder's data.
    port = free_port()
    client = dashboard_factory([{"id": "mine", "agent_url": f"http://127.0.0.1:{port}"}], timeout=5)

    mine, _, _ = project_agent(tmp_path, "mine")
    with serve(mine, port=port):
        assert client.get("/api/projects/mine/tasks").status_code == 200  # identity confirmed once
    intruder, _, theirs = project_agent(tmp_path, "intruder")
    with serve(intruder, port=port):
        for path in ("/api/projects/mine/tasks", f"/api/projects/mine/tasks/pending/{theirs.id}.md",
                     f"/api/projects/mine/tasks/{theirs.id}/events", "/api/projects/mine/commits",
                     f"/api/projects/mine/tasks/{theirs.id}/stream"):
            resp = client.get(path)
            assert "a task of intruder" not in resp.text, path
            assert "serves project 'intruder'" in assert_error(resp, 502, "agent_unavailable")["message"], path
