"""GET /agent/changes, /agent/changes/stream and /agent/summaries on a real agent (uvicorn): the
board follows a project by change. The stream is read as a client would, with httpx streaming."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from backend.models import Owner, utcnow

ROOT = Path(__file__).resolve().parent.parent


class EventReader:
    """The events of an open SSE response, one at a time: (event, data, id); ("", None, None)
    for a comment. A read timeout on the client bounds every wait."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()

    def next(self) -> tuple[str, dict | None, str | None]:
        name, data, event_id = "", None, None
        for line in self._lines:
            if line.startswith(":"):
                return "", None, None
            if line == "":
                if data is not None:
                    return name, json.loads(data), event_id
                continue
            key, _, value = line.partition(": ")
            if key == "event":
                name = value
            elif key == "data":
                data = value
            elif key == "id":
                event_id = value
        raise AssertionError("the stream ended")

    def next_changes(self) -> tuple[dict, str | None]:
        while True:
            name, data, event_id = self.next()
            if name == "changes":
                return data, event_id


@contextmanager
def stream(agent, **kwargs) -> Iterator[tuple[httpx.Response, EventReader]]:
    # A read timeout below the 15 s keep-alive: a missing event fails the test instead of hanging it.
    with httpx.Client(base_url=agent.url, timeout=httpx.Timeout(10, read=8)) as client:
        with client.stream("GET", "/agent/changes/stream", **kwargs) as response:
            yield response, EventReader(response)


def create(agent, title: str) -> str:
    resp = agent.client.post("/agent/tasks", json={"title": title})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_the_stream_sends_state_then_the_window_then_each_change(agent):
    first = create(agent, "first")
    with stream(agent) as (response, events):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name, state, event_id = events.next()
        assert name == "state" and event_id is None
        assert state["health"]["project_id"] == agent.settings.project_id and "uptime_seconds" not in state["health"]
        assert state["dispatcher"]["counts"]["pending"] == 1 and state["usage"] == {"hours": []}
        name, window, event_id = events.next()
        assert name == "changes" and window["reset"] and event_id == window["cursor"]
        assert [t["id"] for t in window["tasks"]] == [first] and "content" not in window["tasks"][0]

        second = create(agent, "second")  # woken by this process's write
        # Its change, and a new state with the counts that changed with it. In either order: the
        # write may land while the stream is still computing the state after the window.
        seen: dict[str, tuple] = {}
        while len(seen) < 2:
            name, data, event_id = events.next()
            if name:
                assert name not in seen, f"a second {name} event: {data}"
                seen[name] = (data, event_id)
        delta, event_id = seen["changes"]
        assert not delta["reset"] and [t["id"] for t in delta["tasks"]] == [second]
        assert event_id == delta["cursor"] and delta["revision"] > window["revision"]
        assert seen["state"][0]["dispatcher"]["counts"]["pending"] == 2


def test_the_stream_sees_another_process_write(agent):
    with stream(agent) as (_, events):
        events.next_changes()
        script = ("import sys; from pathlib import Path; from backend.store import TaskStore; "
                  "from backend.models import NewTask; "
                  "print(TaskStore(Path(sys.argv[1])).create(NewTask(title='elsewhere')).id)")
        made = subprocess.run([sys.executable, "-c", script, str(agent.store.path)], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        delta, _ = events.next_changes()
        assert [t["id"] for t in delta["tasks"]] == [made]


def test_a_reconnect_resumes_from_last_event_id(agent):
    create(agent, "seen")
    cursor = agent.client.get("/agent/changes").json()["cursor"]
    missed = create(agent, "missed while away")
    # Last-Event-ID wins over `since` (an EventSource reconnecting keeps its first URL).
    with stream(agent, params={"since": "0123abcd.1"}, headers={"Last-Event-ID": cursor}) as (_, events):
        delta, event_id = events.next_changes()
        assert not delta["reset"] and [t["id"] for t in delta["tasks"]] == [missed]
        assert event_id == delta["cursor"]


def test_a_heartbeat_only_write_sends_no_change(agent):
    running = create(agent, "running")
    agent.store.claim(Owner(pid=1, host="here", instance="test"), 60, task_id=running)
    with stream(agent) as (_, events):
        events.next_changes()
        agent.store.update(running, heartbeat_at=utcnow())
        later = create(agent, "later")
        delta, _ = events.next_changes()
        assert [t["id"] for t in delta["tasks"]] == [later]


def test_changes_and_summaries_over_http(agent):
    ids = [create(agent, f"Task {i}" + (" blue" if i % 2 else "")) for i in range(6)]
    start = agent.client.get("/agent/changes", params={"window": 4}).json()
    assert start["reset"] and [t["id"] for t in start["tasks"]] == ids[:4] and start["removed"] == []
    agent.client.post(f"/agent/tasks/{ids[5]}/cancel").raise_for_status()
    delta = agent.client.get("/agent/changes", params={"since": start["cursor"]}).json()
    assert not delta["reset"] and [(t["id"], t["status"]) for t in delta["tasks"]] == [(ids[5], "cancelled")]
    other_epoch = agent.client.get("/agent/changes", params={"since": "feedbeef." + str(delta["revision"])}).json()
    assert other_epoch["reset"]

    page = agent.client.get("/agent/summaries", params={"status": "pending", "limit": 2}).json()
    assert [t["id"] for t in page["tasks"]] == ids[:2] and page["more"]
    rest = agent.client.get("/agent/summaries", params={"status": "pending", "after": page["tasks"][-1]["sort"]}).json()
    assert [t["id"] for t in rest["tasks"]] == ids[2:5] and not rest["more"]
    blue = agent.client.get("/agent/summaries", params={"status": "pending", "q": "BLUE"}).json()
    assert [t["id"] for t in blue["tasks"]] == [ids[1], ids[3]]


def test_bad_cursors_and_parameters_are_refused_clearly(agent):
    bad = agent.client.get("/agent/changes", params={"since": "no cursor"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    assert agent.client.get("/agent/changes", params={"window": 0}).status_code == 422
    with stream(agent, headers={"Last-Event-ID": "garbage"}) as (response, _):
        response.read()
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cursor"
    wrong = agent.client.get("/agent/summaries", params={"status": "done"})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_status"


def test_large_answers_are_compressed_and_the_stream_is_not(agent):
    for i in range(20):
        create(agent, f"a task with a long enough title to add up, number {i}")
    big = agent.client.get("/agent/changes", headers={"Accept-Encoding": "gzip"})
    assert big.headers.get("content-encoding") == "gzip" and len(big.json()["tasks"]) == 20
    small = agent.client.get("/agent/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers
    with stream(agent, headers={"Accept-Encoding": "gzip"}) as (response, events):
        assert "content-encoding" not in response.headers
        assert events.next()[0] == "state"
        assert events.next_changes()[0]["reset"]


def test_an_unreadable_store_shows_in_the_state_and_the_stream_goes_on(agent):
    create(agent, "before")
    path = agent.store.path
    with stream(agent) as (_, events):
        events.next_changes()
        aside = path.with_name("kept-aside.json")
        path.rename(aside)
        path.mkdir()  # a folder where the store should be: unreadable, not corrupt
        try:
            name, state, _ = events.next()
            assert name == "state" and state["health"]["status"] == "degraded"
            assert "store_unreadable" in [p["code"] for p in state["health"]["problems"]]
        finally:
            path.rmdir()
            aside.rename(path)
        after = create(agent, "after")
        delta, _ = events.next_changes()
        assert [t["id"] for t in delta["tasks"]] == [after]
