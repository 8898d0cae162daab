"""How well a real `baton-agent` schedules a plan of dependent tasks. Prints one JSON object;
exits 1 if any task started before one of its dependencies had completed (or did not complete).

    python benchmarks/plan_schedule.py [--tasks 200] [--depth 10] [--workers 5] [--task-seconds 1] [--seed 12]

The plan: --tasks tasks in --depth layers of (nearly) equal size, drawn with --seed. Every task
of layer L > 0 depends on 1-3 tasks of earlier layers, at least one of them in layer L-1, so the
longest dependency chain (the critical path) is exactly --depth tasks. It is created with the
dispatcher stopped, through the real agent API (POST /agent/tasks/bulk, at most 100 tasks a
request: layers in order, a later request naming earlier tasks by id, refs within a request),
then the dispatcher is started and the run timed until every task completed.

The stand-in agent (a shell script speaking Claude Code's stream-json) sleeps --task-seconds,
writes one file and records when it started and ended; test_command is "" (no tests), so what
is measured is Baton's scheduling, worktrees and landing, not a test suite.

Figures:
- wall_seconds: dispatcher start -> the last task's completion (its `finished_at`).
- critical_path_bound_seconds = depth x task_seconds; work_bound_seconds = tasks x task_seconds /
  workers; lower_bound_seconds = the larger; ratio = wall / lower bound (1.0 is unreachable:
  every task also pays for its worktree, commit and landing).
- scheduling_overhead_per_task_seconds: for each task t,
      started_at(t) - max(ready(t), worker_free(t))
  where started_at is when Baton claimed it, ready(t) is when its last dependency completed
  (`finished_at`; the dispatcher's start for a task without dependencies), and worker_free(t) is
  when the worker it ran on became free: workers are reconstructed from the run by taking the
  tasks in the order they started, each on the worker freed earliest (all --workers are free at
  the dispatcher's start; a worker is freed when its stand-in agent ended). So it is the time a
  task could have been running but was not: noticing the dependency completed, claiming, and
  whatever Baton does between an agent's end and its worker's next claim. Reported as
  mean / p50 / p95 / max over all tasks.
- ready_to_start_seconds: started_at(t) - ready(t), the same without the wait for a worker
  (it includes queueing behind other ready tasks).
- setup_seconds: claimed -> its stand-in agent started (worktree, prompt, process start): inside
  the worker's time, so the main reason the ratio exceeds 1 when the work bound dominates.
- landing_seconds: a task's agent ended -> it completed (committed, rebased, pushed): the time its
  dependents wait beyond the agent's own work.
- worker_busy_fraction: the time workers held a task (claim -> agent end), over workers x wall.
- dependency_order: every task's claim (started_at) and its agent's own start came after every
  one of its dependencies completed; `violations` lists any that did not.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dispatch_bench import Agent, git, make_project  # noqa: E402

BULK_MAX = 100  # the agent API's limit per bulk request

# Records "<task id> start|end <epoch seconds>" in $BENCH_TIMES around its work.
AGENT_SCRIPT = r"""#!/bin/sh
echo "$TASK_ID start $(date +%s.%N)" >> "$BENCH_TIMES"
cat > /dev/null
sleep "$BENCH_AGENT_SECONDS"
echo "$TASK_ID" > "bench-$TASK_ID.txt"
S="$TASK_ID-session"
printf '{"type":"system","subtype":"init","session_id":"%s","cwd":"%s","model":"bench","tools":[],"mcp_servers":[],"permissionMode":"bypassPermissions"}\n' "$S" "$PWD"
printf '{"type":"result","subtype":"success","is_error":false,"duration_ms":1,"num_turns":1,"result":"ok","session_id":"%s","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}\n' "$S"
echo "$TASK_ID end $(date +%s.%N)" >> "$BENCH_TIMES"
"""


def make_plan(tasks: int, depth: int, seed: int) -> list[dict]:
    """[{ref, layer, depends_on: [refs]}] in layer order; see the module docstring."""
    if not 1 <= depth <= tasks:
        raise SystemExit("--depth must be between 1 and --tasks")
    rng = random.Random(seed)
    sizes = [tasks // depth + (1 if i < tasks % depth else 0) for i in range(depth)]
    layers: list[list[str]] = []
    plan: list[dict] = []
    for layer, size in enumerate(sizes):
        refs = [f"l{layer}-t{i}" for i in range(size)]
        for ref in refs:
            deps: list[str] = []
            if layer:
                deps.append(rng.choice(layers[layer - 1]))  # keeps the chain exactly `depth` long
                earlier = [r for lay in layers for r in lay if r not in deps]
                deps += rng.sample(earlier, min(len(earlier), rng.randint(0, 2)))
            plan.append({"ref": ref, "layer": layer, "depends_on": deps})
        layers.append(refs)
    return plan


def longest_chain(plan: list[dict]) -> int:
    length: dict[str, int] = {}
    for item in plan:  # layer order: dependencies first
        length[item["ref"]] = 1 + max((length[d] for d in item["depends_on"]), default=0)
    return max(length.values())


def create(agent: Agent, plan: list[dict]) -> dict[str, str]:
    """Every task of the plan through POST /agent/tasks/bulk; returns ref -> task id."""
    ids: dict[str, str] = {}
    for start in range(0, len(plan), BULK_MAX):
        chunk = plan[start:start + BULK_MAX]
        body = {"tasks": [{"title": f"plan task {item['ref']}", "content": "bench", "ref": item["ref"],
                           # Refs of this request stay refs; tasks of an earlier request are named by id.
                           "depends_on": [ids.get(dep, dep) for dep in item["depends_on"]]} for item in chunk]}
        resp = agent.client.post("/agent/tasks/bulk", json=body)
        if resp.status_code != 201:
            raise SystemExit(f"bulk create refused: {resp.status_code} {resp.text[:500]}")
        ids.update({t["ref"]: t["id"] for t in resp.json()["tasks"]})
    return ids


def wait_finished(agent: Agent, ids: list[str], timeout: float) -> dict[str, dict]:
    """Every task of `ids` once none is waiting or running any more: id -> task."""
    deadline = time.monotonic() + timeout
    while True:
        groups = agent.client.get("/agent/tasks").json()
        done = {t["id"]: t for status in ("completed", "failed", "cancelled", "blocked") for t in groups[status]}
        if all(i in done for i in ids):
            return done
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {sum(i in done for i in ids)} of {len(ids)} tasks finished")
        time.sleep(0.1)  # a benchmark waiting for a run of a minute, not a test synchronising


def read_times(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for line in path.read_text().splitlines():
        task_id, kind, at = line.split()
        (starts if kind == "start" else ends).setdefault(task_id, float(at))
    return starts, ends


def stats(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(ordered), 4), "p50": round(statistics.median(ordered), 4),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4), "max": round(ordered[-1], 4)}


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def analyse(plan: list[dict], ids: dict[str, str], tasks: dict[str, dict], agent_starts: dict[str, float],
            agent_ends: dict[str, float], t0: float, workers: int) -> dict:
    by_ref = {item["ref"]: item for item in plan}
    started = {ref: epoch(tasks[ids[ref]]["started_at"]) for ref in by_ref}
    finished = {ref: epoch(tasks[ids[ref]]["finished_at"]) for ref in by_ref}
    ready = {ref: max((finished[d] for d in item["depends_on"]), default=t0) for ref, item in by_ref.items()}
    violations = []
    for ref, item in by_ref.items():
        for dep in item["depends_on"]:
            if started[ref] < finished[dep] or agent_starts[ids[ref]] < finished[dep]:
                violations.append({"task": ref, "dependency": dep, "started_at": tasks[ids[ref]]["started_at"],
                                   "dependency_finished_at": tasks[ids[dep]]["finished_at"]})
    free = [t0] * workers  # a heap of the moments each worker became free
    overhead = []
    for ref in sorted(by_ref, key=lambda r: started[r]):
        worker_free = heapq.heappop(free)
        overhead.append(started[ref] - max(ready[ref], worker_free))
        heapq.heappush(free, agent_ends[ids[ref]])
    wall = max(finished.values()) - t0
    busy = sum(agent_ends[ids[r]] - started[r] for r in by_ref)
    return {"wall_seconds": round(wall, 2), "overhead": overhead,
            "ready_to_start": [started[r] - ready[r] for r in by_ref],
            "landing": [finished[r] - agent_ends[ids[r]] for r in by_ref],
            "setup": [agent_starts[ids[r]] - started[r] for r in by_ref],
            "worker_busy_fraction": round(busy / (workers * wall), 3) if wall > 0 else None,
            "violations": violations}


def run(tasks: int, depth: int, workers: int, task_seconds: float, seed: int, timeout: float) -> dict:
    plan = make_plan(tasks, depth, seed)
    assert longest_chain(plan) == depth
    with tempfile.TemporaryDirectory(prefix="baton-plan-bench-") as tmp:
        root = Path(tmp)
        agent_cmd = root / "bench-claude"
        agent_cmd.write_text(AGENT_SCRIPT)
        agent_cmd.chmod(0o755)
        times = root / "times.txt"
        project = make_project(root, "plan")
        agent = Agent(project, agent_cmd, workers=workers,
                      env={"BENCH_TIMES": str(times), "BENCH_AGENT_SECONDS": f"{task_seconds:g}"})
        try:
            agent.client.post("/agent/dispatcher/stop").raise_for_status()
            ids = create(agent, plan)
            t0 = time.time()
            agent.client.post("/agent/dispatcher/start").raise_for_status()
            found = wait_finished(agent, list(ids.values()), timeout)
        finally:
            agent.close()
        landed = len(git(root / "plan-origin.git", "rev-list", "main").split()) - 1
        not_completed = {ref: found[i]["status"] for ref, i in ids.items() if found[i]["status"] != "completed"}
        if not_completed:
            return {"problem": "not every task completed", "not_completed": not_completed}
        agent_starts, agent_ends = read_times(times)
    figures = analyse(plan, ids, found, agent_starts, agent_ends, t0, workers)
    critical = depth * task_seconds
    work = tasks * task_seconds / workers
    lower = max(critical, work)
    return {
        "tasks": tasks, "depth": depth, "workers": workers, "task_seconds": task_seconds, "seed": seed,
        "dependencies": sum(len(item["depends_on"]) for item in plan),
        "wall_seconds": figures["wall_seconds"],
        "critical_path_bound_seconds": round(critical, 3), "work_bound_seconds": round(work, 3),
        "lower_bound_seconds": round(lower, 3),
        "ratio": round(figures["wall_seconds"] / lower, 3),
        "scheduling_overhead_per_task_seconds": stats(figures["overhead"]),
        "ready_to_start_seconds": stats(figures["ready_to_start"]),
        "setup_seconds": stats(figures["setup"]),
        "landing_seconds": stats(figures["landing"]),
        "worker_busy_fraction": figures["worker_busy_fraction"],
        "commits_landed": landed,
        "dependency_order_respected": not figures["violations"],
        "violations": figures["violations"][:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--task-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the whole run")
    args = parser.parse_args()
    result = run(args.tasks, args.depth, args.workers, args.task_seconds, args.seed, args.timeout)
    print(json.dumps(result, indent=2))
    if "problem" in result or not result["dependency_order_respected"]:
        print(json.dumps({k: v for k, v in result.items() if k in ("problem", "not_completed", "violations")}),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
