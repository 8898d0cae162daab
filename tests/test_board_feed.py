"""Issue #10 item 1, live by change: the dashboard relays every project's change feed as one
Server-Sent Events stream (/api/board/stream), resumable with Last-Event-ID; /api/board carries
summaries (compressed when large) and /api/board/page pages one column across projects. Real
agents (uvicorn on free ports, or a baton-agent process killed and started again), a real
dashboard, real stores."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import socket
import threading
from datetime import datetime, timezone

import httpx
import pytest

from backend.models import NewTask
from backend.store import TaskStore
from backend.web.sse import SSEParser
from support import AgentProcess, free_port, make_repo, wait_for, wait_for_http


class BoardStream:
    """Reads /api/board/stream in a thread: `items` is every (event, data, id) so far, a
    keep-alive comment as ("", None, None)."""

    def __init__(self, base_url: str, cursor: str | None = None, last_event_id: str | None = None) -> None:
        self.items: list[tuple[str, dict | None, str | None]] = []
        self.headers: httpx.Headers | None = None
        self.client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10, read=None))
        params = {"cursor": cursor} if cursor is not None else {}
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        self.response = self.client.send(self.client.build_request("GET", "/api/board/stream", params=params,
                                                                   headers=headers), stream=True)
        assert self.response.status_code == 200, self.response.read()
        self.headers = self.response.headers
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        parser = SSEParser()
        try:
            for text in self.response.iter_text():
                for event, raw, event_id in parser.feed(text):
                    self.items.append((event, json.loads(raw) if raw is not None else None, event_id))
        except (httpx.HTTPError, OSError, ValueError):
            pass  # closed by the test

    def events(self, name: str) -> list[tuple[dict, str | None]]:
        return [(data, event_id) for event, data, event_id in list(self.items) if event == name]

    def project(self, pid: str, condition=lambda p: True, what: str = "a project event") -> dict:
        """The project's newest state, once it satisfies `condition`."""
        def newest():
            found = [d for d, _ in self.events("project") if d["id"] == pid]
            return found[-1] if found and condition(found[-1]) else None
        return wait_for(newest, timeout=30, what=what)

    def tasks_with(self, pid: str, task_id: str) -> tuple[dict, str]:
        return wait_for(lambda: next(((d, i) for d, i in self.events("tasks") if d["project"] == pid
                                      and task_id in [t["id"] for t in d["tasks"]]), None),
                        timeout=30, what=f"a tasks event with {task_id}")

    def close(self) -> None:
        # Closing the response from here does not wake the reader's blocked read: the socket does.
        sock = self.response.extensions["network_stream"].get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=10)
        self.response.close()
        self.client.close()
        self.thread.join(timeout=10)


@pytest.fixture
def streams():
    opened: list[BoardStream] = []

    def open_stream(*args, **kwargs) -> BoardStream:
        opened.append(BoardStream(*args, **kwargs))
        return opened[-1]

    yield open_stream
    for stream in opened:
        stream.close()


def _one_agent(agent_factory, dashboard_factory):
    agent = agent_factory()
    project_id = agent.client.get("/agent/health").json()["project_id"]
    client = dashboard_factory([{"id": "alpha", "agent_url": agent.url, "agent_project_id": project_id}], timeout=5)
    return agent, client


def test_a_store_write_in_an_agent_is_a_tasks_event_on_the_board_stream(agent_factory, dashboard_factory, streams):
    agent, client = _one_agent(agent_factory, dashboard_factory)
    board = client.get("/api/board").json()
    stream = streams(str(client.base_url), cursor=board["cursor"])
    assert stream.headers["content-type"].startswith("text/event-stream") and "content-encoding" not in stream.headers
    assert stream.project("alpha")["healthy"]
    task = agent.store.create(NewTask(title="written in the agent", content="long content " * 50))
    data, event_id = stream.tasks_with("alpha", task.id)
    assert data["reset"] is False and data["removed"] == []
    [summary] = data["tasks"]
    assert summary["title"] == "written in the agent" and summary["status"] == "pending"
    assert "content" not in summary and summary["sort"]
    assert event_id.startswith("alpha:") and event_id != board["cursor"]


def test_an_idle_board_stream_sends_nothing_but_keep_alives(agent_factory, dashboard_factory, streams):
    agent, client = _one_agent(agent_factory, dashboard_factory)
    quiet = agent.store.create(NewTask(title="only its heartbeat moves"))
    stream = streams(str(client.base_url), cursor=client.get("/api/board").json()["cursor"])
    stream.project("alpha")
    # Writes that change nothing a card shows (a heartbeat, the content) reach no page...
    agent.store.update(quiet.id, heartbeat_at=datetime.now(timezone.utc))
    agent.store.update(quiet.id, content="edited, not on the card")
    # ...and the next thing the page hears is the next real change, alone.
    marker = agent.store.create(NewTask(title="a real change"))
    stream.tasks_with("alpha", marker.id)
    stream.project("alpha", lambda p: p["counts"]["pending"] == 2, "the counts to follow")
    seen = [(event, data) for event, data, _ in stream.items if event != ""]
    assert sorted(event for event, _ in seen) == ["project", "project", "tasks"]
    assert seen[0][0] == "project" and seen[0][1]["counts"]["pending"] == 1
    assert [t["id"] for event, data in seen if event == "tasks" for t in data["tasks"]] == [marker.id]


def test_a_reconnecting_page_gets_only_what_changed_meanwhile(agent_factory, dashboard_factory, streams):
    agent, client = _one_agent(agent_factory, dashboard_factory)
    first = streams(str(client.base_url), cursor=client.get("/api/board").json()["cursor"])
    seen = agent.store.create(NewTask(title="seen before the page left"))
    _, last_id = first.tasks_with("alpha", seen.id)
    first.close()
    missed = agent.store.create(NewTask(title="created while the page was away"))
    again = streams(str(client.base_url), cursor="alpha:0000.1", last_event_id=last_id)  # Last-Event-ID wins
    data, _ = again.tasks_with("alpha", missed.id)
    assert data["reset"] is False and [t["id"] for t in data["tasks"]] == [missed.id]
    # A cursor of another agent process (epoch): the page gets the window instead, as a reset.
    other_epoch = streams(str(client.base_url), last_event_id="alpha:feedbeef.1")
    data, _ = other_epoch.tasks_with("alpha", missed.id)
    assert data["reset"] is True and {t["id"] for t in data["tasks"]} == {seen.id, missed.id}


def test_an_agent_restarted_mid_stream_is_followed_again(tmp_path, dashboard_factory, streams):
    repo = make_repo(tmp_path, "restarts")
    (repo / "agent.yaml").write_text("dispatcher_autostart: false\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start_agent(n: int) -> AgentProcess:
        agent = AgentProcess(["--port", str(port), "--project-dir", str(repo)], repo,
                             tmp_path / f"agent{n}")
        wait_for_http(f"{url}/agent/health", agent.proc)
        return agent

    agent = start_agent(0)
    try:
        project_id = httpx.get(f"{url}/agent/health").json()["project_id"]
        client = dashboard_factory([{"id": "alpha", "agent_url": url, "agent_project_id": project_id}], timeout=5)
        stream = streams(str(client.base_url), cursor=client.get("/api/board").json()["cursor"])
        stream.project("alpha", lambda p: p["healthy"], "the project healthy")
        agent.proc.kill()
        agent.proc.wait()
        lost = stream.project("alpha", lambda p: not p["healthy"], "the project unhealthy")
        assert lost["reason"] and lost["tasks_error"] == lost["reason"]
        store = TaskStore(repo / "data" / "dev-tasks.json")
        created = store.create(NewTask(title="created while the agent was down"))
        agent = start_agent(1)
        back = stream.project("alpha", lambda p: p["healthy"], "the project healthy again")
        assert back["reason"] is None and back["counts"]["pending"] == 1
        data, _ = stream.tasks_with("alpha", created.id)
        assert data["reset"] is True  # a new agent process: its cursors start over
        healthy = [d["healthy"] for d, _ in stream.events("project")]
        assert healthy[0] and False in healthy and healthy[-1]
    finally:
        agent.proc.kill()
        agent.proc.wait()


def test_a_local_project_follows_through_the_same_stream(tmp_path, dashboard_factory, streams):
    repo = make_repo(tmp_path, "local")
    store = TaskStore(repo / "data" / "dev-tasks.json")
    store.initialize()
    client = dashboard_factory([{"id": "loc", "path": str(repo)}])
    board = client.get("/api/board").json()
    assert board["projects"][0]["tasks"]["pending"] == [] and board["cursor"].startswith("loc:")
    stream = streams(str(client.base_url), cursor=board["cursor"])
    project = stream.project("loc")
    assert project["healthy"] and project["mode"] == "local" and project["counts"]["pending"] == 0
    made = client.post("/api/projects/loc/tasks", json={"title": "through the dashboard"}).json()
    stream.tasks_with("loc", made["id"])
    # Another process's write (here: another store object on the same file) is polled for.
    other = store.create(NewTask(title="written beside the dashboard"))
    data, _ = stream.tasks_with("loc", other.id)
    assert data["reset"] is False
    assert stream.project("loc", lambda p: p["counts"]["pending"] == 2, "the counts to follow")


def test_another_projects_agent_relays_no_tasks(agent_factory, dashboard_factory, streams, tmp_path):
    other = agent_factory(config=None)
    good = agent_factory()
    good_id = good.client.get("/agent/health").json()["project_id"]
    client = dashboard_factory([{"id": "mine", "agent_url": other.url, "agent_project_id": "not-this-one"},
                                {"id": "good", "agent_url": good.url, "agent_project_id": good_id}], timeout=5)
    stream = streams(str(client.base_url))
    entry = stream.project("mine")
    assert not entry["healthy"] and "not 'not-this-one'" in entry["reason"]
    other.store.create(NewTask(title="not mine to show"))
    marker = good.store.create(NewTask(title="after it"))
    stream.tasks_with("good", marker.id)
    assert [d for d, _ in stream.events("tasks") if d["project"] == "mine"] == []


def test_the_board_is_compressed_and_carries_summaries_only(agent_factory, dashboard_factory):
    agent, client = _one_agent(agent_factory, dashboard_factory)
    for i in range(30):
        agent.store.create(NewTask(title=f"task {i}", content="the whole content " * 100))
    raw = httpx.get(f"{client.base_url}/api/board", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    board = raw.json()  # httpx undid the gzip
    alpha = board["projects"][0]
    assert len(alpha["tasks"]["pending"]) == 30 and board["cursor"] == f"alpha:{alpha['cursor']}"
    assert all("content" not in t and "sort" in t for t in alpha["tasks"]["pending"])
    assert alpha["usage"] == {"hours": []} and alpha["counts"]["pending"] == 30
    assert len(gzip.compress(raw.content)) < len(raw.content)  # sanity: what was sent was the smaller form
    plain = httpx.get(f"{client.base_url}/api/board", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json()["projects"][0]["tasks"] == alpha["tasks"]


def test_board_page_merges_projects_by_sort_and_pages_with_after(agent_factory, dashboard_factory):
    one, two = agent_factory(), agent_factory()
    one_id, two_id = (a.client.get("/agent/health").json()["project_id"] for a in (one, two))
    client = dashboard_factory([{"id": "one", "agent_url": one.url, "agent_project_id": one_id},
                                {"id": "two", "agent_url": two.url, "agent_project_id": two_id}], timeout=5)
    made = []  # (project, task) in creation order, alternating; one urgent task goes first
    for i in range(5):
        for pid, agent in (("one", one), ("two", two)):
            made.append((pid, agent.store.create(NewTask(title=f"{pid} {i}"))))
    urgent = two.store.create(NewTask(title="two urgent", priority="urgent"))
    expected = [("two", urgent.id)] + [(pid, t.id) for pid, t in made]
    first = client.get("/api/board/page", params={"status": "pending", "limit": 4}).json()
    assert [(t["project"], t["id"]) for t in first["tasks"]] == expected[:4] and first["more"]
    rest = client.get("/api/board/page", params={"status": "pending", "limit": 50,
                                                 "after": first["tasks"][-1]["sort"]}).json()
    assert [(t["project"], t["id"]) for t in rest["tasks"]] == expected[4:] and not rest["more"]
    only_two = client.get("/api/board/page", params={"status": "pending", "project": "two", "q": "URGENT"}).json()
    assert [t["id"] for t in only_two["tasks"]] == [urgent.id]
    assert client.get("/api/board/page", params={"status": "pending", "project": "nope"}).status_code == 404
    assert client.get("/api/board/page", params={"status": "nope"}).status_code == 400


def test_the_state_of_an_agent_the_dashboard_runs_is_relayed(tmp_path, dashboard_factory, streams, monkeypatch):
    monkeypatch.setenv("BATON_AGENT_BACKOFF_FIRST", "2")
    repo = make_repo(tmp_path, "p")
    (repo / "agent.yaml").write_text("dispatcher_autostart: false\n")  # no coding-agent CLI needed
    port = free_port()
    client = dashboard_factory([{"id": "p", "path": str(repo), "agent_url": f"http://127.0.0.1:{port}",
                                 "start": True}], timeout=5)
    stream = streams(str(client.base_url))
    first = stream.project("p", lambda p: p["healthy"] and p["agent"]["state"] == "running", "the agent running")
    os.kill(first["agent"]["pid"], signal.SIGKILL)
    again = stream.project("p", lambda p: p["healthy"] and p["agent"]["restarts"] == 1
                           and p["agent"]["state"] == "running", "the agent running again")
    assert again["agent"]["pid"] != first["agent"]["pid"]
    seen = [d for d, _ in stream.events("project")]
    assert any(d["agent"]["state"] == "restarting" or not d["healthy"] for d in seen)
