"""Dispatcher speed with a real `baton-agent` process. Prints one JSON object.

    python benchmarks/dispatch_bench.py [--overhead-tasks 30] [--rounds 3] [--pickups 20] [--load-tasks 50]

- overhead: per-task wall time of Baton with a no-op agent and no test command, against a
  shell script doing the same raw git work on the same kind of repository (bare origin +
  clone): worktree add, commit, fetch, rebase, push, worktree remove, branch delete.
  Baton and the shell alternate for --rounds rounds; the medians are compared.
  Target ratio <= 1.5.
- pickup: from POST /agent/tasks returning to the agent process starting. Target p50 <= 100 ms.
- load: 50 tasks of a 1-second agent on 5 workers; efficiency = ideal 10 s / actual.
  Target >= 80 %.
- memory: the baton-agent process's peak RSS (VmHWM) during the load run. Target <= 150 MB.

The stand-in agent is a small shell script that prints Claude Code's stream-json lines.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@x", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@x"}

AGENT_SCRIPT = r"""#!/bin/sh
[ -n "$BENCH_STARTS" ] && echo "$TASK_ID $(date +%s.%N)" >> "$BENCH_STARTS"
cat > /dev/null
[ "${BENCH_AGENT_SECONDS:-0}" != "0" ] && sleep "$BENCH_AGENT_SECONDS"
echo "$TASK_ID" > "bench-$TASK_ID.txt"
S="$TASK_ID-session"
printf '{"type":"system","subtype":"init","session_id":"%s","cwd":"%s","model":"bench","tools":[],"mcp_servers":[],"permissionMode":"bypassPermissions"}\n' "$S" "$PWD"
printf '{"type":"result","subtype":"success","is_error":false,"duration_ms":1,"num_turns":1,"result":"ok","session_id":"%s","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}\n' "$S"
"""

BASELINE_SCRIPT = r"""#!/bin/sh
set -e
cd "$1"
i=0
while [ $i -lt "$2" ]; do
  i=$((i + 1))
  git worktree add -q --no-track -b "task/b$i" "worktrees/b$i" origin/main
  echo "b$i" > "worktrees/b$i/bench-b$i.txt"
  git -C "worktrees/b$i" add -A
  git -C "worktrees/b$i" commit -q -m "bench b$i"
  git -C "worktrees/b$i" fetch -q origin main
  git -C "worktrees/b$i" rebase -q origin/main
  git -C "worktrees/b$i" push -q origin HEAD:main
  git worktree remove --force "worktrees/b$i"
  git branch -q -D "task/b$i"
done
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout


def noop_agent(root: Path) -> Path:
    """AGENT_SCRIPT as an executable in `root`: the stand-in for the Claude CLI."""
    agent_cmd = root / "noop-claude"
    agent_cmd.write_text(AGENT_SCRIPT)
    agent_cmd.chmod(0o755)
    return agent_cmd


def make_project(root: Path, name: str) -> Path:
    origin, clone = root / f"{name}-origin.git", root / name
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True, capture_output=True)
    git(clone, "checkout", "-q", "-b", "main")
    for i in range(50):  # a repository with some content, like a real project
        (clone / f"module_{i}.py").write_text(f"VALUE = {i}\n" * 20)
    (clone / ".gitignore").write_text("")
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "initial")
    git(clone, "push", "-q", "-u", "origin", "main")
    return clone


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Agent:
    def __init__(self, project: Path, agent_cmd: Path | None, workers: int, env: dict[str, str],
                 test_command: str = "", extra_yaml: str = "", runtime_yaml: str | None = None) -> None:
        # runtime_yaml: the runtime's part of agent.yaml, in place of a claude_code section for agent_cmd.
        if runtime_yaml is None:
            runtime_yaml = f"claude_code:\n  command: {agent_cmd}\n  timeout: 120\n  stall_timeout: 120\n"
        (project / "agent.yaml").write_text(
            f"max_parallel_workers: {workers}\npoll_interval_seconds: 5\ntest_command: {json.dumps(test_command)}\n"
            f"{runtime_yaml}{extra_yaml}")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend.agent.cli", "--port", str(self.port), "--project-dir", str(project),
             "--log-level", "warning",
             # The runtimes benchmarked here skip their prompts, as Baton runs them by default.
             "--i-understand-that-this-will-be-running-without-the-usual-guardrails"],
            env={**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"baton-agent exited: {self.proc.stderr.read()}")
            try:
                self.client.get("/agent/health")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("baton-agent did not start") from None
                time.sleep(0.05)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def wait_all_done(self, ids: list[str], timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while True:
            groups = self.client.get("/agent/tasks").json()
            done = {t["id"]: t for s in ("completed", "failed", "cancelled") for t in groups[s]}
            if all(i in done for i in ids):
                bad = [done[i] for i in ids if done[i]["status"] != "completed"]
                if bad:
                    raise SystemExit(f"tasks failed: {[(t['id'], t['error_message']) for t in bad]}")
                return
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for tasks")
            time.sleep(0.02)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=60)


def bulk(agent: Agent, prefix: str, count: int) -> list[str]:
    tasks = [{"title": f"{prefix} {i}", "content": "bench"} for i in range(count)]
    ids: list[str] = []
    for start in range(0, count, 100):
        resp = agent.client.post("/agent/tasks/bulk", json={"tasks": tasks[start:start + 100]})
        resp.raise_for_status()
        ids += [t["id"] for t in resp.json()["tasks"]]
    return ids


def run_batch(agent: Agent, prefix: str, count: int) -> float:
    """Queue `count` tasks with the dispatcher stopped, start it, and time until all landed."""
    agent.client.post("/agent/dispatcher/stop")
    ids = bulk(agent, prefix, count)
    started = time.perf_counter()
    agent.client.post("/agent/dispatcher/start")
    agent.wait_all_done(ids)
    return time.perf_counter() - started


def measure_overhead(root: Path, agent_cmd: Path, count: int, rounds: int) -> dict:
    """Alternate Baton and the shell baseline `rounds` times; report the median of each."""
    script = root / "baseline.sh"
    script.write_text(BASELINE_SCRIPT)
    baton_runs, shell_runs = [], []
    for r in range(rounds):
        project = make_project(root, f"overhead{r}")
        agent = Agent(project, agent_cmd, workers=1, env={})
        try:
            baton_runs.append(run_batch(agent, "noop", count) / count)
        finally:
            agent.close()
        shell_project = make_project(root, f"baseline{r}")
        started = time.perf_counter()
        subprocess.run(["sh", str(script), str(shell_project), str(count)], check=True,
                       env={**os.environ, **GIT_ENV})
        shell_runs.append((time.perf_counter() - started) / count)
    baton, shell = statistics.median(baton_runs), statistics.median(shell_runs)
    return {"tasks_per_round": count, "rounds": rounds,
            "baton_per_task_ms": round(baton * 1000, 1), "shell_per_task_ms": round(shell * 1000, 1),
            "baton_rounds_ms": [round(x * 1000, 1) for x in baton_runs],
            "shell_rounds_ms": [round(x * 1000, 1) for x in shell_runs],
            "ratio": round(baton / shell, 2), "target_ratio_max": 1.5}



def started_at(starts: Path, task_id: str, timeout: float) -> float:
    """When the fake agent of `task_id` started (it appends `<task id> <time>` to `starts`)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = starts.read_text().splitlines() if starts.exists() else []
        hit = [line for line in lines if line.startswith(task_id + " ")]
        if hit:
            return float(hit[0].split()[1])
        if time.monotonic() > deadline:
            raise SystemExit("agent never started")
        time.sleep(0.005)  # a benchmark polling a file, not a test synchronising

def measure_pickup(root: Path, agent_cmd: Path, count: int) -> dict:
    project = make_project(root, "pickup")
    starts = root / "starts.txt"
    agent = Agent(project, agent_cmd, workers=1, env={"BENCH_STARTS": str(starts)})
    latencies = []
    try:
        for i in range(count):
            resp = agent.client.post("/agent/tasks", json={"title": f"pickup {i}", "content": "bench"})
            posted = time.time()
            task_id = resp.json()["id"]
            latencies.append(started_at(starts, task_id, timeout=30) - posted)
            agent.wait_all_done([task_id])
    finally:
        agent.close()
    ordered = sorted(latencies)
    return {"samples": count, "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 1),
            "target_p50_ms_max": 100}


def measure_load(root: Path, agent_cmd: Path, count: int, workers: int) -> dict:
    project = make_project(root, "load")
    agent = Agent(project, agent_cmd, workers=workers, env={"BENCH_AGENT_SECONDS": "1"})
    try:
        elapsed = run_batch(agent, "load", count)
        peak = agent.peak_rss_mb()
    finally:
        agent.close()
    ideal = count / workers * 1.0
    landed = len(git(project.parent / "load-origin.git", "rev-list", "main").split()) - 1
    return {"tasks": count, "workers": workers, "agent_seconds": 1, "elapsed_s": round(elapsed, 2),
            "ideal_s": ideal, "efficiency": round(ideal / elapsed, 3), "target_efficiency_min": 0.8,
            "commits_landed": landed, "peak_rss_mb": peak, "target_peak_rss_mb_max": 150}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--overhead-tasks", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pickups", type=int, default=20)
    parser.add_argument("--load-tasks", type=int, default=50)
    parser.add_argument("--workers", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="baton-dispatch-bench-") as tmp:
        root = Path(tmp)
        agent_cmd = noop_agent(root)
        result = {
            "overhead": measure_overhead(root, agent_cmd, args.overhead_tasks, args.rounds),
            "pickup": measure_pickup(root, agent_cmd, args.pickups),
            "load": measure_load(root, agent_cmd, args.load_tasks, args.workers),
        }
    result["targets_met"] = {
        "overhead_ratio": result["overhead"]["ratio"] <= 1.5,
        "pickup_p50": result["pickup"]["p50_ms"] <= 100,
        "load_efficiency": result["load"]["efficiency"] >= 0.8,
        "peak_memory": result["load"]["peak_rss_mb"] <= 150,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
