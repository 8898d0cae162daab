"""The dashboard API against real agents (uvicorn on free ports), a dead one, a hanging one, one
answering garbage, and a project read straight from its store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.models import NewTask, Owner, TaskStatus
from backend.store import TaskStore
from conftest import fake_task
from support import free_port, make_repo, misbehaving_server, wait_for
from test_api import assert_error
from test_events_api import sse_events


@pytest.fixture
def world(agent_factory, dashboard_factory, tmp_path, fake_cli):
    """One healthy agent (running the fake CLI), a dead URL, a hanging and a garbage server, and
    one agent-less project."""
    healthy = agent_factory(config=fake_cli.config(), dispatch=True)
    # Its first health answer asks git once; ask it here, outside the dashboard's 0.5 s budget
    # (the dashboard checks health before anything else it asks an agent).
    healthy.client.get("/agent/health").raise_for_status()
    local_repo = make_repo(tmp_path, "localproject")
    store = TaskStore(local_repo / "data" / "dev-tasks.json")
    store.initialize()
    with misbehaving_server("hang") as hanging, misbehaving_server("garbage") as garbage:
        client = dashboard_factory([
            {"id": "alpha", "agent_url": healthy.url, "color": "#4f8cff", "agent_project_id": healthy.settings.project_id},
            {"id": "dead", "agent_url": f"http://127.0.0.1:{free_port()}"},
            {"id": "hangs", "agent_url": hanging},
            {"id": "garbage", "agent_url": garbage},
            {"id": "local", "path": str(local_repo)},
        ], timeout=0.5)
        yield client, healthy, store


def test_projects_show_health_without_one_agent_hiding_the_others(world):
    client, healthy, _ = world
    projects = {p["id"]: p for p in client.get("/api/projects").json()["projects"]}
    assert list(projects) == ["alpha", "dead", "hangs", "garbage", "local"]
    assert projects["alpha"]["healthy"] and projects["alpha"]["dispatcher"]["state"] == "running"
    assert projects["alpha"]["counts"] == {s.value: 0 for s in TaskStatus}
    assert projects["alpha"]["color"] == "#4f8cff" and projects["alpha"]["mode"] == "http"
    assert not projects["dead"]["healthy"] and "cannot reach" in projects["dead"]["reason"]
    assert not projects["hangs"]["healthy"] and "within 0.5s" in projects["hangs"]["reason"]
    assert not projects["garbage"]["healthy"] and "not JSON" in projects["garbage"]["reason"]
    assert projects["local"]["healthy"] and projects["local"]["mode"] == "local"
    assert projects["local"]["dispatcher"]["state"] == "no agent"


def test_reads_from_an_unavailable_agent_say_so(world):
    client, _, _ = world
    for project in ("dead", "hangs", "garbage"):
        error = assert_error(client.get(f"/api/projects/{project}/tasks"), 502, "agent_unavailable")
        assert error["message"]
    board = {p["id"]: p for p in client.get("/api/board").json()["projects"]}
    assert board["dead"]["tasks"] is None and board["dead"]["tasks_error"]
    assert board["alpha"]["tasks"]["pending"] == []  # a real empty list only where it is the truth


def test_writes_to_an_unavailable_agent_answer_502(world):
    client, _, _ = world
    resp = client.post("/api/projects/dead/tasks", json={"title": "lost?"})
    assert_error(resp, 502, "agent_unavailable")
    assert_error(client.post("/api/projects/hangs/dispatcher/stop"), 502, "agent_unavailable")


def test_create_through_the_dashboard_runs_on_the_agent(world):
    client, healthy, _ = world
    resp = client.post("/api/projects/alpha/tasks", json=fake_task("Via dashboard", {"steps": [
        {"write": "d.txt", "text": "d\n"}]}))
    assert resp.status_code == 201
    task_id = resp.json()["id"]
    wait_for(lambda: healthy.store.get(task_id).status is TaskStatus.completed, timeout=60, what="landing")
    board = {p["id"]: p for p in client.get("/api/board").json()["projects"]}
    assert [t["id"] for t in board["alpha"]["tasks"]["completed"]] == [task_id]
    detail = client.get(f"/api/projects/alpha/tasks/completed/{task_id}.md").json()
    assert detail["markdown"].startswith("# Via dashboard")
    events = client.get(f"/api/projects/alpha/tasks/{task_id}/events").json()["events"]
    assert "tool_use" in [e["kind"] for e in events]
    stream = client.get(f"/api/projects/alpha/tasks/{task_id}/stream")
    assert sse_events(stream.text.splitlines())[-1][1] == "end"
    landed = healthy.store.get(task_id).commit_sha
    wait_for(lambda: client.get("/api/projects/alpha/commits", params={"count": 1}).json()[0]["sha"]
             == landed, what="the project's main to show the landed commit")
    assert client.get("/api/projects/alpha/worktrees").json()["worktrees"]


def test_agent_errors_pass_through_unchanged(world):
    client, healthy, _ = world
    healthy.client.post("/agent/dispatcher/stop")
    task = client.post("/api/projects/alpha/tasks", json={"title": "stay pending"}).json()
    error = assert_error(client.post(f"/api/projects/alpha/tasks/{task['id']}/rerun"), 409, "invalid_transition")
    assert task["id"] in error["message"]
    assert_error(client.get("/api/projects/alpha/tasks/sleeping/x.md"), 404, "not_found")
    assert client.post(f"/api/projects/alpha/tasks/{task['id']}/cancel").json()["status"] == "cancelled"


def test_validation_happens_before_any_agent_is_asked(world):
    client, _, _ = world
    error = assert_error(client.post("/api/projects/dead/tasks", json={"title": ""}), 422, "validation_error")
    assert error["details"][0]["loc"] == "body.title"
    assert_error(client.post("/api/projects/alpha/tasks/bulk", json={"tasks": []}), 422, "validation_error")
    assert_error(client.get("/api/projects/nope/tasks"), 404, "not_found")
    assert_error(client.post("/api/projects/alpha/dispatcher/explode"), 404, "not_found")


def test_dispatcher_controls_are_relayed(world):
    client, healthy, _ = world
    assert client.post("/api/projects/alpha/dispatcher/stop").json()["state"] == "stopped"
    assert healthy.client.get("/agent/dispatcher").json()["state"] == "stopped"
    assert client.post("/api/projects/alpha/dispatcher/start").json()["state"] == "running"


def test_a_project_without_an_agent_works_through_its_store(world):
    client, _, store = world
    created = client.post("/api/projects/local/tasks", json={"title": "written to the store"})
    assert created.status_code == 201 and store.get(created.json()["id"]).title == "written to the store"
    bulk = client.post("/api/projects/local/tasks/bulk", json={"tasks": [{"title": "a"}, {"title": "b"}]})
    assert len(bulk.json()["tasks"]) == 2
    assert len(client.get("/api/projects/local/tasks").json()["pending"]) == 3
    assert client.post(f"/api/projects/local/tasks/{created.json()['id']}/cancel").json()["status"] == "cancelled"
    error = assert_error(client.post("/api/projects/local/dispatcher/start"), 409, "needs_agent")
    assert "baton-agent --project-dir" in error["message"]
    running = store.create(NewTask(title="claimed elsewhere"))
    store.claim(Owner(pid=1, host="h", instance="i"), 60, task_id=running.id)
    assert_error(client.post(f"/api/projects/local/tasks/{running.id}/cancel"), 409, "needs_agent")
    assert client.get("/api/projects/local/commits").json()[0]["message"] == "initial commit"


def test_a_corrupt_local_store_is_unavailable_not_empty(world):
    client, _, store = world
    store.path.write_bytes(b"{broken")
    assert_error(client.get("/api/projects/local/tasks"), 502, "agent_unavailable")
    local = next(p for p in client.get("/api/projects").json()["projects"] if p["id"] == "local")
    assert not local["healthy"] and "not valid JSON" in local["reason"]
    assert store.path.read_bytes() == b"{broken"


def test_the_page_and_its_assets_are_served(world):
    client, _, _ = world
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/js/app.js">' in page.text
    assert client.get("/js/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/css/style.css").status_code == 200
    # Every module the page may load (chat.js, plans.js… included), as served.
    scripts = sorted(path.name for path in (Path(__file__).parent.parent / "frontend" / "js").glob("*.js"))
    assert {"app.js", "board.js", "drawer.js", "dom.js", "api.js", "chat.js", "plans.js"} <= set(scripts)
    for script in scripts:
        response = client.get(f"/js/{script}")
        assert response.status_code == 200, script
        source = response.text
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in source, f"{script} uses {sink}: text only, never HTML"


def test_token_protects_the_api_and_a_session_cookie_stands_in_for_it(dashboard_factory, tmp_path):
    repo = make_repo(tmp_path, "tokened")
    client = dashboard_factory([{"id": "p", "path": str(repo)}], token="dash-secret")
    assert client.get("/").status_code == 200  # the page itself holds nothing secret
    assert client.get("/api/health").json()["auth"] is True
    assert_error(client.get("/api/projects"), 401, "unauthorized")
    assert client.get("/api/projects", headers={"Authorization": "Bearer dash-secret"}).status_code == 200
    assert_error(client.post("/api/session", json={"token": "nope"}), 401, "unauthorized")
    login = client.post("/api/session", json={"token": "dash-secret"})
    assert login.status_code == 204
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "dash-secret" not in cookie
    assert client.get("/api/projects").status_code == 200  # the client now sends the cookie
    client.cookies.clear()
    client.cookies.set("baton_session", "forged")
    assert_error(client.get("/api/projects"), 401, "unauthorized")


def test_dashboard_refuses_foreign_hosts_and_origins(dashboard_factory, tmp_path):
    client = dashboard_factory([{"id": "p", "path": str(make_repo(tmp_path, "hosts"))}])
    assert_error(client.get("/api/projects", headers={"Host": "evil.example"}), 403, "forbidden_host")
    resp = client.post("/api/projects/p/tasks", json={"title": "x"}, headers={"Origin": "http://evil.example"})
    assert_error(resp, 403, "forbidden_origin")
    assert "access-control-allow-origin" not in client.get("/api/projects").headers


def test_stream_errors_have_the_error_shape_before_any_event(world):
    client, _, _ = world
    assert_error(client.get("/api/projects/dead/tasks/abc/stream"), 502, "agent_unavailable")
    assert_error(client.get("/api/projects/hangs/tasks/abc/stream"), 502, "agent_unavailable")
    assert_error(client.get("/api/projects/alpha/tasks/nosuchtask/stream"), 404, "not_found")
    assert_error(client.get("/api/projects/local/tasks/nosuchtask/stream"), 404, "not_found")


def test_board_json_is_what_the_page_reads(world):
    client, _, _ = world
    board = client.get("/api/board").json()
    projects = {p["id"]: p for p in board["projects"]}
    alpha = projects["alpha"]
    assert {"id", "name", "color", "healthy", "reason", "counts", "dispatcher", "tasks", "tasks_error",
            "usage", "cursor"} <= set(alpha)
    assert list(alpha["tasks"]) == [s.value for s in TaskStatus] and alpha["tasks_error"] is None
    # The combined cursor names the projects that could be read, each with its feed's cursor.
    assert board["cursor"] == f"alpha:{alpha['cursor']},local:{projects['local']['cursor']}"
    assert projects["dead"]["cursor"] is None and projects["dead"]["usage"] is None


def test_a_hanging_agent_is_not_waited_for_twice(world):
    client, _, _ = world
    first = next(p for p in client.get("/api/projects").json()["projects"] if p["id"] == "hangs")
    assert "within 0.5s" in first["reason"]
    second = next(p for p in client.get("/api/projects").json()["projects"] if p["id"] == "hangs")
    assert not second["healthy"] and "checking again in the background" in second["reason"]


def test_an_agent_that_comes_back_is_healthy_again(dashboard_factory, tmp_path):
    from backend.agent.app import create_app
    from backend.agent.settings import AgentSettings
    from backend.config import AgentConfig
    from support import serve

    port = free_port()
    client = dashboard_factory([{"id": "later", "agent_url": f"http://127.0.0.1:{port}"}], timeout=0.5)
    assert not client.get("/api/projects").json()["projects"][0]["healthy"]
    settings = AgentSettings(project_dir=make_repo(tmp_path, "later"), config=AgentConfig(dispatcher_autostart=False))
    with serve(create_app(settings), port=port):
        wait_for(lambda: client.get("/api/projects").json()["projects"][0]["healthy"], timeout=15,
                 what="the dashboard to see the agent back")
        assert client.get("/api/projects/later/tasks").json()["pending"] == []


# ----- review findings, each pinned --------------------------------------------------------------


class StandIn:
    """An agent-like HTTP server whose answers a test scripts per path."""

    def __init__(self, routes: dict) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.routes = routes
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                status, body = stand_in.routes.get(self.path.split("?")[0], (404, {"error": {
                    "status": 404, "code": "not_found", "message": "no such path"}}))
                if body == "hang":
                    stand_in.release.wait(30)
                    return
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


HEALTH = (200, {"status": "ok", "version": "0.1.0", "project": "x", "project_id": "x", "uptime_seconds": 1,
                "problems": []})
DISPATCHER = (200, {"state": "running", "workers": {"max": 1, "busy": 0}, "counts": {}})


@pytest.fixture
def stand_in():
    made = []

    def make(routes):
        made.append(StandIn(routes))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_an_agent_answering_4xx_everywhere_does_not_break_the_board(dashboard_factory, stand_in, agent_factory):
    good = agent_factory()
    refusing = stand_in({})  # every path: 404 in the error shape
    client = dashboard_factory([{"id": "good", "agent_url": good.url, "agent_project_id": good.settings.project_id},
                                {"id": "odd", "agent_url": refusing.url}])
    projects = {p["id"]: p for p in client.get("/api/projects").json()["projects"]}
    assert projects["good"]["healthy"] and not projects["odd"]["healthy"]
    assert "refused (404)" in projects["odd"]["reason"]
    board = {p["id"]: p for p in client.get("/api/board").json()["projects"]}
    assert board["good"]["tasks"] is not None and board["odd"]["tasks"] is None


def test_the_breaker_asks_again_what_failed_and_does_not_flap(dashboard_factory, stand_in):
    half = stand_in({"/agent/health": HEALTH, "/agent/dispatcher": DISPATCHER, "/agent/changes": (200, "hang")})
    client = dashboard_factory([{"id": "half", "agent_url": half.url, "agent_project_id": "x"}], timeout=0.5)
    first = client.get("/api/board").json()["projects"][0]
    assert first["tasks"] is None and "within 0.5s" in first["tasks_error"]
    for _ in range(3):  # health still answers, but the probe asks for the tasks that hung
        again = client.get("/api/board").json()["projects"][0]
        assert not again["healthy"] and "checking again in the background" in again["reason"]


def test_tasks_that_are_not_tasks_make_the_project_unavailable(dashboard_factory, stand_in):
    statuses = {s.value: [] for s in TaskStatus}
    bad = stand_in({"/agent/health": HEALTH, "/agent/dispatcher": DISPATCHER,
                    "/agent/tasks": (200, {**statuses, "pending": [{"id": "x", "title": "no dates"}]}),
                    "/agent/changes": (200, {"cursor": "e.1", "revision": 1, "reset": True, "removed": [],
                                             "tasks": [{"id": "x", "title": "no status, no sort"}]})})
    client = dashboard_factory([{"id": "bad", "agent_url": bad.url, "agent_project_id": "x"}])
    board = client.get("/api/board").json()["projects"][0]
    assert board["tasks"] is None and "not a change set" in board["tasks_error"]
    assert "not a task" in assert_error(client.get("/api/projects/bad/tasks"), 502, "agent_unavailable")["message"]


def test_answers_are_size_capped(dashboard_factory, agent_factory, monkeypatch):
    import backend.dashboard.connectors.http as http_connector

    monkeypatch.setattr(http_connector, "MAX_ANSWER_BYTES", 2000)
    agent = agent_factory()
    for i in range(20):
        agent.client.post("/agent/tasks", json={"title": f"task {i}", "content": "x" * 200})
    client = dashboard_factory([{"id": "big", "agent_url": agent.url, "agent_project_id": agent.settings.project_id}])
    assert "larger than" in assert_error(client.get("/api/projects/big/tasks"), 502, "agent_unavailable")["message"]


def test_ids_from_the_url_never_reach_other_agent_paths(world):
    client, _, _ = world
    assert_error(client.post("/api/projects/alpha/tasks/..%2Fdispatcher%2Fstop/rerun"), 404, "not_found")
    assert_error(client.post("/api/projects/alpha/tasks/..;x/cancel"), 400, "invalid_id")
    assert_error(client.get("/api/projects/alpha/tasks/pending/..%2F..%2Fdispatcher"), 404, "not_found")
    assert client.get("/api/projects/alpha/dispatcher").json()["state"] == "running"


def test_security_headers_forbid_framing(world, agent_factory):
    client, healthy, _ = world
    for resp in (client.get("/"), client.get("/api/projects"), client.get("/api/nope"), healthy.client.get("/agent/health")):
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert resp.headers["x-frame-options"] == "DENY" and resp.headers["x-content-type-options"] == "nosniff"
