"""Idempotency-Key on creates, end to end: a retried create (say, after a timeout) never makes a
second task, on the agent and through the dashboard's HTTP and local connectors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from backend.store import TaskStore
from support import make_repo
from test_api import assert_error


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


def all_tasks(store: TaskStore) -> list:
    return store.list_tasks()


def test_a_repeated_create_answers_the_first_task_and_creates_nothing(agent):
    first = agent.client.post("/agent/tasks", json={"title": "Once"}, headers=key("retry-1"))
    again = agent.client.post("/agent/tasks", json={"title": "Once"}, headers=key("retry-1"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert [t.id for t in all_tasks(agent.store)] == [first.json()["id"]]
    other = agent.client.post("/agent/tasks", json={"title": "Once"}, headers=key("retry-2"))
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]  # a new key is a new task
    plain = agent.client.post("/agent/tasks", json={"title": "Once"})
    assert plain.status_code == 201 and len(all_tasks(agent.store)) == 3  # no key: as before


def test_a_repeated_bulk_answers_the_same_tasks(agent):
    body = {"tasks": [{"title": "one"}, {"title": "two", "priority": "high"}]}
    first = agent.client.post("/agent/tasks/bulk", json=body, headers=key("bulk-1"))
    again = agent.client.post("/agent/tasks/bulk", json=body, headers=key("bulk-1"))
    assert first.status_code == again.status_code == 201
    assert [t["id"] for t in again.json()["tasks"]] == [t["id"] for t in first.json()["tasks"]]
    assert len(all_tasks(agent.store)) == 2


def test_the_same_key_with_another_body_is_refused(agent):
    agent.client.post("/agent/tasks", json={"title": "First"}, headers=key("k")).raise_for_status()
    error = assert_error(agent.client.post("/agent/tasks", json={"title": "Second"}, headers=key("k")),
                         409, "idempotency_key_reused")
    assert "'k'" in error["message"]
    assert_error(agent.client.post("/agent/tasks/bulk", json={"tasks": [{"title": "First"}, {"title": "x"}]},
                                   headers=key("k")), 409, "idempotency_key_reused")
    assert [t.title for t in all_tasks(agent.store)] == ["First"]


@pytest.mark.parametrize("bad", ["", "x" * 101, "tab\there"])
def test_bad_keys_are_refused(agent, bad):
    resp = agent.client.post("/agent/tasks", json={"title": "t"}, headers=key(bad))
    assert_error(resp, 400, "invalid_idempotency_key")
    assert all_tasks(agent.store) == []


def test_concurrent_repeats_create_one_task(agent):
    def post(_):
        with httpx.Client(base_url=agent.url, timeout=30) as client:
            return client.post("/agent/tasks", json={"title": "Racing"}, headers=key("race")).json()["id"]

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(post, range(16)))
    assert len(ids) == 1 and [t.id for t in all_tasks(agent.store)] == list(ids)


def test_through_the_dashboard_to_an_agent(agent, dashboard_factory):
    client = dashboard_factory([{"id": "p", "agent_url": agent.url, "agent_project_id": agent.settings.project_id}])
    first = client.post("/api/projects/p/tasks", json={"title": "Via board"}, headers=key("board-1"))
    again = client.post("/api/projects/p/tasks", json={"title": "Via board"}, headers=key("board-1"))
    assert first.status_code == again.status_code == 201 and again.json()["id"] == first.json()["id"]
    bulk = {"tasks": [{"title": "a"}, {"title": "b"}]}
    ids = [[t["id"] for t in client.post("/api/projects/p/tasks/bulk", json=bulk, headers=key("board-2")).json()["tasks"]]
           for _ in range(2)]
    assert ids[0] == ids[1]
    assert len(all_tasks(agent.store)) == 3
    assert_error(client.post("/api/projects/p/tasks", json={"title": "changed"}, headers=key("board-1")),
                 409, "idempotency_key_reused")
    assert_error(client.post("/api/projects/p/tasks", json={"title": "t"}, headers=key("x" * 101)),
                 400, "invalid_idempotency_key")
    assert len(all_tasks(agent.store)) == 3


def test_through_the_dashboard_to_a_local_store(dashboard_factory, tmp_path):
    repo = make_repo(tmp_path, "localkeys")
    store = TaskStore(repo / "data" / "dev-tasks.json")
    store.initialize()
    client = dashboard_factory([{"id": "local", "path": str(repo)}])
    first = client.post("/api/projects/local/tasks", json={"title": "Local"}, headers=key("local-1"))
    again = client.post("/api/projects/local/tasks", json={"title": "Local"}, headers=key("local-1"))
    assert first.status_code == again.status_code == 201 and again.json()["id"] == first.json()["id"]
    bulk = {"tasks": [{"title": "a"}, {"title": "b"}]}
    ids = [[t["id"] for t in client.post("/api/projects/local/tasks/bulk", json=bulk, headers=key("local-2")).json()["tasks"]]
           for _ in range(2)]
    assert ids[0] == ids[1]
    assert_error(client.post("/api/projects/local/tasks/bulk", json={"tasks": [{"title": "c"}]}, headers=key("local-2")),
                 409, "idempotency_key_reused")
    assert len(all_tasks(store)) == 3
