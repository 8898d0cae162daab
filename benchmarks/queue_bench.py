"""Merge queue figures with a real `baton-agent` process. Prints one JSON object.

    python benchmarks/queue_bench.py [--tasks 10] [--workers 5] [--test-seconds 3] [--slow-test-seconds 30]
                                     [--max-parallel-tests 5] [--pickups 10]

- batch: --tasks tasks of a 1 s agent whose test command (`sleep N`) takes --test-seconds, on
  --workers workers; wall time from starting the dispatcher until every task landed. Bound: two
  waves of agent + tests, about 8 s for the defaults; goal <= 10 s (the serial landing before
  the queue took about 32 s).
- batch_default_tests: the batch with agent.yaml's default max_parallel_tests (as many test
  runs as workers), next to the one with --max-parallel-tests when that is given (each figure
  states the bound it ran with).
- slow_batch: the same with a --slow-test-seconds test command.
- pickup: from POST /agent/tasks to the agent starting, p50, with the queue idle and while it
  is busy (a candidate's tests running). Goal: the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dispatch_bench import Agent, make_project, noop_agent, run_batch, started_at  # noqa: E402

from backend.config import AgentConfig  # noqa: E402

PICKUP_MAX_TESTS = 1  # one test run at a time: every task behind it keeps the queue busy


def queue_yaml(max_tests: int | None) -> str:
    return f"max_parallel_tests: {max_tests}\n" if max_tests is not None else ""  # None: the default


def measure_batch(root: Path, agent_cmd: Path, name: str, tasks: int, workers: int, test_seconds: float,
                  max_tests: int | None) -> dict:
    project = make_project(root, name)
    agent = Agent(project, agent_cmd, workers=workers, env={"BENCH_AGENT_SECONDS": "1"},
                  test_command=f"sleep {test_seconds:g}", extra_yaml=queue_yaml(max_tests))
    try:
        elapsed = run_batch(agent, name, tasks)
    finally:
        agent.close()
    return {"tasks": tasks, "workers": workers, "agent_seconds": 1, "test_seconds": test_seconds,
            "max_parallel_tests": AgentConfig(max_parallel_workers=workers, max_parallel_tests=max_tests).test_slots,
            "elapsed_s": round(elapsed, 2)}


def pickups(agent: Agent, starts: Path, count: int, prefix: str) -> list[float]:
    latencies = []
    for i in range(count):
        posted = time.time()
        task_id = agent.client.post("/agent/tasks", json={"title": f"{prefix} {i}", "content": "bench"}).json()["id"]
        latencies.append(started_at(starts, task_id, timeout=60) - posted)
    return latencies


def measure_pickup(root: Path, agent_cmd: Path, count: int, test_seconds: float) -> dict:
    project = make_project(root, "pickup")
    starts = root / "starts.txt"
    agent = Agent(project, agent_cmd, workers=1, env={"BENCH_STARTS": str(starts)},
                  test_command=f"sleep {test_seconds:g}", extra_yaml=queue_yaml(PICKUP_MAX_TESTS))
    try:
        idle = []
        for i in range(count):  # one at a time, each landed before the next: the queue is idle
            idle += pickups(agent, starts, 1, f"idle {i}")
            agent.wait_all_done([t["id"] for t in agent.client.get("/agent/tasks").json()["in_progress"]])
        busy = pickups(agent, starts, count, "busy")  # each enters the queue behind the ones before
        queue_len = len(agent.client.get("/agent/dispatcher").json()["merge_queue"])
    finally:
        agent.close()
    return {"samples": count, "max_parallel_tests": PICKUP_MAX_TESTS, "idle_p50_ms": round(statistics.median(idle) * 1000, 1),
            "busy_p50_ms": round(statistics.median(busy) * 1000, 1), "queue_length_after_busy": queue_len}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--test-seconds", type=float, default=3)
    parser.add_argument("--slow-test-seconds", type=float, default=30)
    parser.add_argument("--max-parallel-tests", type=int, default=None, help="default: agent.yaml's default")
    parser.add_argument("--pickups", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="baton-queue-bench-") as tmp:
        root = Path(tmp)
        agent_cmd = noop_agent(root)
        batch = measure_batch(root, agent_cmd, "batch", args.tasks, args.workers, args.test_seconds,
                              args.max_parallel_tests)
        if args.max_parallel_tests is None:  # the batch ran with the default: not measured twice
            default_batch = {**batch, "same_run_as": "batch"}
        else:
            default_batch = measure_batch(root, agent_cmd, "batch-default-tests", args.tasks, args.workers,
                                          args.test_seconds, None)
        slow = measure_batch(root, agent_cmd, "slow", args.tasks, args.workers, args.slow_test_seconds,
                             args.max_parallel_tests)
        pickup = measure_pickup(root, agent_cmd, args.pickups, args.test_seconds)
    print(json.dumps({"batch": batch, "batch_default_tests": default_batch, "slow_batch": slow, "pickup": pickup,
                      "goal_batch_s_max": 10}, indent=2))


if __name__ == "__main__":
    main()
