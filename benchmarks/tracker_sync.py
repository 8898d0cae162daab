"""What a tracker source costs: one full sync of 1,000 active issues over 5 projects, and the
tracker API calls per minute once nothing changes. Prints one JSON object.

    python benchmarks/tracker_sync.py [--kind linear|jira] [--projects 5] [--issues 1000] [--poll-seconds 30]

Set-up: one stand-in tracker process (tests/fakes/linear_standin.py or jira_standin.py: the same
strict API as the real service, on loopback) with --projects teams (Linear) or projects (Jira)
of --issues / --projects active issues each; one real `baton-agent` per project (dispatcher
stopped, so tasks stay pending and only the sync is measured); per project the real tracker
client (backend/trackers/) and the real sync engine (backend/sources/engine.py) talking to its
agent over HTTP through the dashboard's connector, exactly as the dashboard runs them.

Figures:
- full_sync: the 5 engines' first round (poll the tracker, then reconcile: create a task per
  issue) run concurrently, as the dashboard runs them: wall seconds, tracker API calls (counted by
  the clients; the stand-in's own count is reported beside it), tasks created on the agents.
- steady_state: further rounds with nothing changed: tracker calls per round (each round is one
  poll of every project), and calls per minute at the default poll interval (--poll-seconds:
  rounds per minute x calls per round; the reconciles between polls make no tracker call, which
  is checked by counting them too), plus the wall seconds of one steady round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402

from backend.dashboard.config import ProjectConfig  # noqa: E402
from backend.dashboard.connectors.http import HTTPConnector  # noqa: E402
from backend.sources.config import SourceConfig  # noqa: E402
from backend.sources.engine import SyncEngine  # noqa: E402
from backend.sources.taskside import ConnectorTaskSide  # noqa: E402
from backend.trackers import make_tracker  # noqa: E402
from dispatch_bench import Agent, make_project  # noqa: E402
from trackers_support import start_standin  # noqa: E402


def scopes(kind: str, projects: int) -> list[str]:
    return [f"P{chr(ord('A') + i)}" for i in range(projects)] if kind == "jira" else [f"T{chr(ord('A') + i)}"
                                                                                      for i in range(projects)]


async def measure(args, standin, agents: list[Agent], scope_keys: list[str]) -> dict:
    client = httpx.AsyncClient(timeout=60)
    engines, trackers = [], []
    for index, (agent, key) in enumerate(zip(agents, scope_keys)):
        filter_ = {"project": key} if args.kind == "jira" else {"team": key}
        config = SourceConfig.model_validate(standin.source(filter=filter_, poll_seconds=args.poll_seconds))
        tracker = make_tracker(config, environ=standin.environ)
        project = ProjectConfig(id=f"p{index}", agent_url=agent.url)
        connector = HTTPConnector(project, client, timeout=60)
        engines.append(SyncEngine(config, tracker, ConnectorTaskSide(connector), project_id=project.id,
                                  engine_id="bench"))
        trackers.append(tracker)

    def calls() -> int:
        return sum(t.counter.calls for t in trackers)

    async def round_(engine: SyncEngine) -> None:
        await engine.poll()
        await engine.reconcile()

    standin.admin.reset()
    start = time.perf_counter()
    await asyncio.gather(*(round_(e) for e in engines))
    full_wall = time.perf_counter() - start
    full_calls = calls()
    full_by_op: dict[str, int] = {}
    for tracker in trackers:
        for op, n in tracker.counter.by_operation.items():
            full_by_op[op] = full_by_op.get(op, 0) + n
    standin_full = standin.admin.stats()["calls"]
    created = sum(len([t for t in a.client.get("/agent/tasks").json()["pending"] if t.get("source")]) for a in agents)

    # Steady state: the same rounds again, nothing changed on either side.
    per_round, walls = [], []
    for _ in range(args.steady_rounds):
        before = calls()
        start = time.perf_counter()
        await asyncio.gather(*(round_(e) for e in engines))
        walls.append(time.perf_counter() - start)
        per_round.append(calls() - before)
    before = calls()
    for _ in range(3):  # the reconciles the runner does between polls
        await asyncio.gather(*(e.reconcile() for e in engines))
    reconcile_calls = calls() - before
    tasks_after = sum(len([t for t in a.client.get("/agent/tasks").json()["pending"] if t.get("source")])
                      for a in agents)

    for tracker in trackers:
        await tracker.aclose()
    await client.aclose()
    steady = statistics.median(per_round)
    return {
        "kind": args.kind, "projects": args.projects, "active_issues": args.issues,
        "full_sync": {"wall_seconds": round(full_wall, 3), "tracker_calls": full_calls,
                      "tracker_calls_by_operation": full_by_op, "standin_counted_calls": standin_full,
                      "tasks_created": created},
        "steady_state": {"poll_seconds": args.poll_seconds, "calls_per_round": per_round,
                         "calls_per_minute": round(steady * 60 / args.poll_seconds, 1),
                         "round_wall_seconds_median": round(statistics.median(walls), 3),
                         "tracker_calls_in_3_reconciles_between_polls": reconcile_calls,
                         "tasks_after_steady_rounds": tasks_after},
        "duplicates": tasks_after - created,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["linear", "jira"], default="linear")
    parser.add_argument("--projects", type=int, default=5)
    parser.add_argument("--issues", type=int, default=1000)
    parser.add_argument("--poll-seconds", type=float, default=30.0)
    parser.add_argument("--steady-rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="baton-tracker-bench-") as tmp:
        root = Path(tmp)
        keys = scopes(args.kind, args.projects)
        option = {"projects": keys} if args.kind == "jira" else {"teams": keys}
        standin = start_standin(args.kind, root, **option)
        agents: list[Agent] = []
        try:
            per = args.issues // args.projects
            state = "To Do" if args.kind == "jira" else "Todo"
            where = "project" if args.kind == "jira" else "team"
            issues = [{"title": f"Issue {i} of {key}", "description": f"Do thing {i}.\n\nIn detail.", "state": state,
                       where: key} for key in keys for i in range(per)]
            for start in range(0, len(issues), 500):
                standin.admin.seed(issues[start:start + 500])
            for index in range(args.projects):
                project = make_project(root, f"p{index}")
                # Dispatcher stopped (autostart off): the tasks stay pending; only the sync is measured.
                agents.append(Agent(project, Path("/bin/false"), 1, {}, extra_yaml="dispatcher_autostart: false\n"))
            figures = asyncio.run(measure(args, standin, agents, keys))
        finally:
            for agent in agents:
                agent.close()
            standin.stop()
    print(json.dumps(figures, indent=2))
    if figures["duplicates"] != 0 or figures["full_sync"]["tasks_created"] != (args.issues // args.projects) * args.projects:
        sys.exit(1)


if __name__ == "__main__":
    main()
