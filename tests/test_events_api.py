"""Dispatcher endpoints, event pages and the live Server-Sent Events stream."""

from __future__ import annotations

import json

import httpx

from backend.models import NewTask, Owner, TaskStatus
from conftest import fake_task
from support import wait_for


def sse_events(lines) -> list[tuple[str | None, str, dict]]:
    """Parse an SSE line iterator into (id, event, data) until the stream ends."""
    out, event_id, name, data = [], None, "message", []
    for line in lines:
        if line == "":
            if data:
                out.append((event_id, name, json.loads("\n".join(data))))
            event_id, name, data = None, "message", []
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
    return out


def test_dispatcher_status_start_stop(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(max_parallel_workers=3), dispatch=False)
    status = agent.client.get("/agent/dispatcher").json()
    assert status["state"] == "stopped"
    assert status["workers"] == {"max": 3, "busy": 0}
    assert status["running"] == [] and status["ports_in_use"] == {}
    agent.client.post("/agent/tasks", json={"title": "queued"})
    assert agent.client.get("/agent/dispatcher").json()["queue_length"] == 1
    assert agent.client.post("/agent/dispatcher/start").json()["state"] == "running"
    assert agent.client.post("/agent/dispatcher/restart").json()["state"] == "running"
    assert agent.client.post("/agent/dispatcher/stop").json()["state"] == "stopped"


def test_status_shows_the_running_task_and_its_port(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    marker = tmp_path / "running"
    task_id = agent.client.post("/agent/tasks", json=fake_task("Show me", {"steps": [
        {"marker": str(marker)}, {"sleep": 60}]})).json()["id"]
    wait_for(marker.exists, timeout=30, what="the agent to start")
    status = agent.client.get("/agent/dispatcher").json()
    (running,) = status["running"]
    assert running["task_id"] == task_id and running["phase"] == "agent running"
    assert status["ports_in_use"] == {str(running["port"]): task_id}
    assert status["workers"]["busy"] == 1
    agent.client.post(f"/agent/tasks/{task_id}/cancel")


def test_event_pages(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    task_id = agent.client.post("/agent/tasks", json=fake_task("Paged", {"steps": [
        {"write": f"f{i}.txt", "text": "x"} for i in range(3)]})).json()["id"]
    wait_for(lambda: agent.store.get(task_id).status is TaskStatus.completed, timeout=60, what="completion")
    everything = agent.client.get(f"/agent/tasks/{task_id}/events").json()
    seqs = [e["seq"] for e in everything["events"]]
    assert seqs == list(range(1, len(seqs) + 1)) and everything["next_after"] == seqs[-1]
    page = agent.client.get(f"/agent/tasks/{task_id}/events", params={"after": 2, "limit": 3}).json()
    assert [e["seq"] for e in page["events"]] == [3, 4, 5] and page["next_after"] == 5
    tool = next(e for e in everything["events"] if e["kind"] == "tool_use")
    assert tool["tool_name"] == "Write" and tool["tool_input"].endswith("f0.txt")
    assert agent.client.get("/agent/tasks/zzzzzz/events").status_code == 404


def test_stream_follows_a_running_task_live_and_ends(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    go = tmp_path / "go"
    task_id = agent.client.post("/agent/tasks", json=fake_task("Live", {"steps": [
        {"write": "a.txt", "text": "a"}, {"wait_for": str(go), "seconds": 30}, {"write": "b.txt", "text": "b"}]})
    ).json()["id"]
    seen: list[str] = []
    with httpx.stream("GET", f"{agent.url}/agent/tasks/{task_id}/stream", timeout=60) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        for line in lines:  # the first tool call arrives while the agent is still running
            seen.append(line)
            if line.startswith("event: tool_use"):
                break
        assert agent.store.get(task_id).status is TaskStatus.in_progress
        go.touch()
        seen.extend(lines)
    events = sse_events(seen)
    names = [name for _, name, _ in events]
    assert names[-1] == "end" and events[-1][2] == {"status": "completed"}
    assert names.count("tool_use") == 2 and "result" in names
    ids = [int(i) for i, _, _ in events if i is not None]
    assert ids == sorted(ids) and ids[0] == 1


def test_stream_resumes_after_last_event_id(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    task_id = agent.client.post("/agent/tasks", json=fake_task("Done already", {"steps": [
        {"write": "a.txt", "text": "a"}]})).json()["id"]
    wait_for(lambda: agent.store.get(task_id).status is TaskStatus.completed, timeout=60, what="completion")
    total = len(agent.client.get(f"/agent/tasks/{task_id}/events").json()["events"])
    resp = agent.client.get(f"/agent/tasks/{task_id}/stream", headers={"Last-Event-ID": "3"})
    events = sse_events(resp.text.splitlines())
    assert [int(i) for i, _, _ in events if i] == list(range(4, total + 1))
    assert events[-1][1] == "end"


def test_cancel_of_a_running_task_owned_by_nobody_here_is_409(agent_factory):
    agent = agent_factory()
    task = agent.store.create(NewTask(title="x"))
    agent.store.claim(Owner(pid=1, host="elsewhere", instance="other"), 60)
    resp = agent.client.post(f"/agent/tasks/{task.id}/cancel")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "invalid_transition"


def test_a_non_ascii_digit_in_last_event_id_is_ignored_not_a_500(agent):
    # "²".isdigit() is True but int("²") raises: the header must be read as ASCII digits only.
    task_id = agent.client.post("/agent/tasks", json={"title": "t"}).json()["id"]
    agent.store.transition(task_id, TaskStatus.cancelled)
    resp = agent.client.get(f"/agent/tasks/{task_id}/stream", headers={"Last-Event-ID": b"\xb2"})  # "²" in latin-1
    assert resp.status_code == 200 and "event: end" in resp.text
