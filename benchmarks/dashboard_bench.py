"""Dashboard speed with real processes. Prints one JSON object.

    python benchmarks/dashboard_bench.py [--agents 20] [--samples 30] [--board-tasks 2000]

- /api/projects over 20 agents: real HTTP servers (in a separate process) answering like
  baton-agent with realistic payloads, each with its own delay (up to ~120 ms), and one that
  accepts connections but never answers. Compared with the slowest healthy agent's own
  latency. Target: dashboard p50 <= slowest healthy p50 + 100 ms; the hanging agent costs no
  more than the configured timeout (the first request, which meets it, is reported too).
- A board of 2,000 tasks (a real baton-agent's store) rendered in Debian's Chromium: time from
  navigation to the board being complete, measured in the page (performance.now() when the
  first full render finished). Target <= 1 s.
- The same page left idle: bytes per minute it receives (body bytes counted by Chromium's DevTools
  network events, plus the headers of any response), after it settled. Goal: near zero.
- Store write -> change on the page: a task created through the agent's API (one store write in
  the agent) until its card is in the page (a MutationObserver notes Date.now()), p50/p95.
  Goal p95 <= 300 ms.
- 20 projects x 5,000 tasks (20 real baton-agents): navigation to the first complete render.
  Goal <= 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend import storeformat  # noqa: E402
from backend.fsutil import atomic_write  # noqa: E402
from backend.models import NewTask, Owner, Task, TaskStatus, new_task_id  # noqa: E402
from backend.store import TaskStore  # noqa: E402

TIMEOUT = 2.0

STAND_INS = r'''
import json, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

specs = json.loads(sys.argv[1])
counts = {"pending": 12, "plan_review": 0, "in_progress": 3, "completed": 140, "failed": 4, "cancelled": 2}
running = [{"task_id": f"t{i}abcdefg", "title": f"Running task number {i} with a realistic title",
            "phase": "agent running", "port": 9200 + i, "started_at": "2026-11-20T20:00:00+00:00"} for i in range(3)]
dispatcher = json.dumps({"state": "running", "workers": {"max": 5, "busy": 3}, "running": running,
                         "queue_length": 12, "counts": counts, "ports_in_use": {"9200": "t0", "9201": "t1", "9202": "t2"},
                         "owner": {"pid": 4242, "host": "bench", "instance": "abcdef123456"}}).encode()
health = json.dumps({"status": "ok", "project": "bench", "project_id": "bench", "version": "0.1.0",
                     "uptime_seconds": 1234.5, "problems": []}).encode()

def make(delay):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a): pass
        def do_GET(self):
            time.sleep(delay)
            body = health if self.path.startswith("/agent/health") else dispatcher
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    return H

ports = []
for spec in specs:
    if spec == "hang":
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128)
        held = []
        threading.Thread(target=lambda s=s: [held.append(s.accept()) for _ in iter(int, 1)], daemon=True).start()
        ports.append(s.getsockname()[1])
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), make(spec))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ports.append(server.server_address[1])
print(json.dumps(ports), flush=True)
sys.stdin.read()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"process exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} never answered") from None
            time.sleep(0.05)


def p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def start_dashboard(root: Path, projects_yaml: str) -> tuple[subprocess.Popen, str]:
    (root / "projects.yaml").write_text(projects_yaml)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml",
                             "--port", str(port), "--log-level", "warning"],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/api/health", proc)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure_projects(root: Path, agents: int, samples: int) -> dict:
    rng = random.Random(3)
    delays = sorted(round(rng.uniform(0.005, 0.12), 3) for _ in range(agents - 1))
    specs = [*delays, "hang"]
    stand_ins = subprocess.Popen([sys.executable, "-c", STAND_INS, json.dumps(specs)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ports = json.loads(stand_ins.stdout.readline())
    lines = [f"agent_timeout_seconds: {TIMEOUT}", "projects:"]
    for i, port in enumerate(ports):
        lines.append(f"  - id: agent-{i}\n    agent_url: http://127.0.0.1:{port}\n    agent_project_id: bench")
    dashboard, url = start_dashboard(root, "\n".join(lines) + "\n")
    try:
        with httpx.Client(timeout=30) as client:
            slowest = f"http://127.0.0.1:{ports[len(delays) - 1]}/agent/dispatcher"
            direct = []
            for _ in range(samples):
                started = time.perf_counter()
                client.get(slowest)
                direct.append(time.perf_counter() - started)
            started = time.perf_counter()
            first = client.get(f"{url}/api/projects").json()["projects"]
            first_s = time.perf_counter() - started
            through = []
            for _ in range(samples):
                started = time.perf_counter()
                body = client.get(f"{url}/api/projects").json()["projects"]
                through.append(time.perf_counter() - started)
    finally:
        stop(dashboard)
        stand_ins.stdin.close()
        stand_ins.wait(timeout=30)
    healthy = sum(1 for p in body if p["healthy"])
    return {
        "agents": agents, "hanging_agents": 1, "timeout_s": TIMEOUT,
        "slowest_healthy_agent_p50_ms": p50_ms(direct),
        "api_projects_p50_ms": p50_ms(through),
        "api_projects_p95_ms": round(sorted(through)[int(0.95 * len(through)) - 1] * 1000, 1),
        "overhead_over_slowest_ms": round(p50_ms(through) - p50_ms(direct), 1),
        "target_overhead_ms_max": 100,
        "first_request_meeting_the_hanging_agent_ms": round(first_s * 1000, 1),
        "first_request_bound_ms": TIMEOUT * 1000 + 100,
        "healthy_reported": healthy, "hanging_reported_unhealthy": not body[-1]["healthy"] and not first[-1]["healthy"],
    }


def make_board(root: Path, tasks: int) -> Path:
    project = root / "board"
    project.mkdir(parents=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "init"], cwd=project, check=True, env=env)
    store = TaskStore(project / "data" / "dev-tasks.json")
    store.initialize()
    rng = random.Random(5)
    words = "add fix refactor parser cache login page retry worker queue tests docs api timeout board".split()
    for start in range(0, tasks, 100):
        store.create_many(NewTask(title=" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize(),
                                  content=" ".join(rng.choice(words) for _ in range(60)),
                                  task_type=rng.choice(["feature", "bugfix", "docs", "test"]),
                                  priority=rng.choice(["low", "medium", "high"]))
                          for _ in range(min(100, tasks - start)))
    owner = Owner(pid=1, host="bench", instance="bench")
    for task in store.list_tasks()[: tasks * 3 // 4]:  # a realistic spread over the columns
        store.claim(owner, 60, task_id=task.id)
        end = rng.choice([TaskStatus.completed, TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled])
        store.transition(task.id, end, cost_usd=round(rng.uniform(0.01, 2), 4),
                         error_reason="tests_failed" if end is TaskStatus.failed else None)
    return project


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


def start_agent(project: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    agent = subprocess.Popen([sys.executable, "-m", "backend.agent.cli", "--port", str(port), "--project-dir",
                              str(project), "--log-level", "warning"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return agent, f"http://127.0.0.1:{port}"


def percentile_ms(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 1)


def time_first_render(url: str, samples: int) -> tuple[list[float], int]:
    """Seconds from navigation to the page's first complete render (measured in the page), per
    fresh page; and how many cards that render shows."""
    from playwright.sync_api import sync_playwright

    times, cards = [], 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        for _ in range(samples):
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.goto(url)
            page.wait_for_selector("body[data-board-ready='1']", timeout=120000)
            times.append(int(page.evaluate("document.body.dataset.boardReadyMs")) / 1000)
            cards = page.locator(".card").count()
            page.close()
        browser.close()
    return times, cards


def measure_live(root: Path, tasks: int, idle_seconds: float, probes: int) -> dict:
    """One agent with `tasks` tasks and one page: what an idle page receives, then how fast a
    store write reaches the page."""
    from playwright.sync_api import sync_playwright

    project = make_board(root / "live", tasks)
    (project / "agent.yaml").write_text("dispatcher_autostart: false\n")
    agent, agent_url = start_agent(project)
    wait_http(f"{agent_url}/agent/health", agent)
    dashboard, url = start_dashboard(root / "live", f"projects:\n  - id: board\n    agent_url: {agent_url}\n")
    received = {"bytes": 0, "requests": 0}
    latencies = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            counting = {"on": False}

            arrivals = []  # what came while idle: (seconds into the window, bytes)

            def on_data(event: dict) -> None:
                # dataLength: the body bytes of this chunk, reported as it arrives (Chromium reports
                # a stream's encodedDataLength late, in lumps, so it lands in the wrong window).
                if counting["on"]:
                    received["bytes"] += event.get("dataLength", 0)
                    arrivals.append((round(time.monotonic() - counting["since"], 1), event.get("dataLength", 0)))

            def on_response(event: dict) -> None:
                if counting["on"]:
                    received["requests"] += 1
                    received["bytes"] += len(json.dumps(event["response"].get("headers", {})))

            cdp.on("Network.dataReceived", on_data)
            cdp.on("Network.responseReceived", on_response)
            page.goto(url)
            page.wait_for_selector("body[data-board-ready='1']", timeout=60000)
            page.wait_for_timeout(10000)  # let the first load and the stream's first events settle
            counting["since"] = time.monotonic()
            counting["on"] = True
            page.wait_for_timeout(idle_seconds * 1000)
            counting["on"] = False
            idle = dict(received)
            # A MutationObserver notes when each probe's card appears (the page's clock is this machine's).
            page.evaluate("""() => { window.__seen = {}; new MutationObserver(() => {
                for (const node of document.querySelectorAll('.card .card-title')) {
                  const t = node.textContent; if (t.startsWith('probe ') && !(t in window.__seen)) window.__seen[t] = Date.now();
                } }).observe(document.getElementById('board'), {subtree: true, childList: true, characterData: true}); }""")
            with httpx.Client(timeout=30) as client:
                for i in range(probes):
                    title = f"probe {i}"
                    sent = time.time() * 1000
                    client.post(f"{agent_url}/agent/tasks", json={"title": title, "priority": "urgent"}).raise_for_status()
                    page.wait_for_function(f"() => window.__seen && window.__seen[{json.dumps(title)}]", timeout=30000)
                    latencies.append((page.evaluate(f"window.__seen[{json.dumps(title)}]") - sent) / 1000)
            browser.close()
    finally:
        stop(dashboard)
        stop(agent)
    return {"tasks": tasks, "idle_seconds": idle_seconds, "idle_requests": idle["requests"],
            "idle_bytes": idle["bytes"], "idle_arrivals_s_bytes": arrivals[:20], "idle_bytes_per_minute": round(idle["bytes"] * 60 / idle_seconds),
            "probes": probes, "write_to_page_p50_ms": p50_ms(latencies),
            "write_to_page_p95_ms": percentile_ms(latencies, 0.95), "target_p95_ms_max": 300}


def seed_store(project: Path, count: int, rng: random.Random) -> None:
    """A store of `count` tasks spread over the columns, written in one go in the store's own format
    (through the API it would take thousands of whole-file rewrites per project)."""
    words = "add fix refactor parser cache login page retry worker queue tests docs api timeout board".split()
    now = datetime.now(timezone.utc)
    lines = []
    for i in range(count):
        created = now - timedelta(minutes=count - i)
        status = rng.choice([TaskStatus.completed] * 6 + [TaskStatus.failed, TaskStatus.cancelled, TaskStatus.pending])
        done = status is not TaskStatus.pending
        lines.append(storeformat.encode_task(Task(
            id=new_task_id(), title=" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize(),
            content=" ".join(rng.choice(words) for _ in range(60)), status=status,
            priority=rng.choice(["low", "medium", "high"]), created_at=created, updated_at=created,
            started_at=created if done else None, finished_at=created + timedelta(seconds=30) if done else None,
            attempts=1 if done else 0, cost_usd=round(rng.uniform(0.01, 2), 4) if done else None,
            input_tokens=rng.randint(1000, 90000) if done else None, output_tokens=rng.randint(100, 9000) if done else None,
            error_reason="tests_failed" if status is TaskStatus.failed else None)))
    store = project / "data" / "dev-tasks.json"
    store.parent.mkdir(parents=True)
    atomic_write(store, storeformat.chunks(storeformat.header(1), lines))


def measure_big_board(root: Path, projects: int, tasks: int, samples: int) -> dict:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x"}
    rng = random.Random(11)
    agents, lines = [], ["projects:"]
    try:
        for i in range(projects):
            project = root / "big" / f"p{i}"
            project.mkdir(parents=True)
            subprocess.run(["git", "init", "-q", "-b", "main"], cwd=project, check=True)
            subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "init"], cwd=project, check=True, env=env)
            (project / "agent.yaml").write_text("dispatcher_autostart: false\n")
            seed_store(project, tasks, rng)
            agent, agent_url = start_agent(project)
            agents.append((agent, agent_url))
            lines.append(f"  - id: p{i}\n    agent_url: {agent_url}\n    agent_project_id: p{i}")
        for agent, agent_url in agents:
            wait_http(f"{agent_url}/agent/health", agent)
        dashboard, url = start_dashboard(root / "big", "\n".join(lines) + "\n")
        try:
            with httpx.Client(timeout=60) as client:
                client.get(f"{url}/api/board")  # the agents' first read of their store is not the page's
                answer = client.get(f"{url}/api/board", headers={"Accept-Encoding": "gzip"})
                wire = answer.num_bytes_downloaded
                listed = answer.json()["projects"]
                with_tasks = sum(1 for item in listed if item["tasks"] is not None)
                summaries = sum(len(column) for item in listed if item["tasks"] for column in item["tasks"].values())
            times, cards = time_first_render(url, samples)
        finally:
            stop(dashboard)
    finally:
        for agent, _ in agents:
            stop(agent)
    return {"projects": projects, "tasks_per_project": tasks, "cards_rendered": cards, "samples": samples,
            "api_board_bytes_on_the_wire": wire, "projects_with_tasks": with_tasks, "summaries_in_api_board": summaries,
            "navigation_to_board_complete_p50_ms": p50_ms(times),
            "navigation_to_board_complete_max_ms": round(max(times) * 1000, 1), "target_ms_max": 1500}


def measure_board(root: Path, tasks: int, samples: int) -> dict:
    project = make_board(root, tasks)
    (project / "agent.yaml").write_text("dispatcher_autostart: false\n")
    agent, agent_url = start_agent(project)
    wait_http(f"{agent_url}/agent/health", agent)
    dashboard, url = start_dashboard(root, f"projects:\n  - id: board\n    agent_url: {agent_url}\n")
    try:
        times, cards = time_first_render(url, samples)
    finally:
        stop(dashboard)
        stop(agent)
    return {"tasks": tasks, "cards_rendered": cards, "samples": samples,
            "navigation_to_board_complete_p50_ms": p50_ms(times),
            "navigation_to_board_complete_max_ms": round(max(times) * 1000, 1), "target_ms_max": 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--board-tasks", type=int, default=2000)
    parser.add_argument("--board-samples", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--big-projects", type=int, default=20)
    parser.add_argument("--big-tasks", type=int, default=5000)
    parser.add_argument("--big-samples", type=int, default=3)
    parser.add_argument("--only", choices=["projects", "board", "live", "big"], action="append",
                        help="run only these parts (repeatable); default all")
    args = parser.parse_args()
    parts = set(args.only or ["projects", "board", "live", "big"])
    with tempfile.TemporaryDirectory(prefix="baton-dash-bench-") as tmp:
        root = Path(tmp)
        out, met = {}, {}
        if "projects" in parts:
            out["api_projects"] = projects = measure_projects(root, args.agents, args.samples)
            met["api_projects_overhead"] = projects["overhead_over_slowest_ms"] <= 100
            met["hanging_agent_bounded"] = projects["first_request_meeting_the_hanging_agent_ms"] <= TIMEOUT * 1000 + 100
        if "board" in parts:
            out["board"] = board = measure_board(root, args.board_tasks, args.board_samples)
            met["board_render"] = board["navigation_to_board_complete_p50_ms"] <= 1000
        if "live" in parts:
            out["live"] = live = measure_live(root, args.board_tasks, args.idle_seconds, args.probes)
            met["write_to_page_p95"] = live["write_to_page_p95_ms"] <= 300
        if "big" in parts:
            out["big_board"] = big = measure_big_board(root, args.big_projects, args.big_tasks, args.big_samples)
            met["big_board_render"] = big["navigation_to_board_complete_p50_ms"] <= 1500
    print(json.dumps({**out, "targets_met": met}, indent=2))


if __name__ == "__main__":
    main()
