"""Agent runs on Dask workers against the same runs at home. Prints one JSON object.

    python benchmarks/remote_runs.py [--tasks 20] [--agent-seconds 1.0] [--json-only]

The same batch twice, each time on a fresh project (a real `baton-agent`, a bare git origin and a
clone of it, test_command "", max_parallel_workers 2), with the fake Claude CLI of tests/fakes
(whose turn prints `assistant` text at known moments for --agent-seconds, then writes and commits
one file of its own, so every task lands a commit):

- local: the default executor, the CLI runs on the project host;
- dask:  `executor: dask`, a real `dask scheduler` and two `dask worker` processes (box-a, box-b,
  `runner=1` each, so two runs at once as with local; each in its own folder, no nanny) on
  loopback. The workers get the work only through git, as in production.

Figures (every clock here is this machine's: the workers are processes on the same box):

- wall_s: from starting the dispatcher to the last task's `finished_at` (landed on main);
  per_task_s = wall_s / tasks.
- baton_s per run: (the task's finished_at - its run's `attempt_started` event, written just
  after the claim) - the CLI's own run time (from the moment the CLI process started to its exit,
  noted by a wrapper script around the fake). It is all Baton does around the agent: worktree,
  for dask the push of the start, submission, the worker's fetch and worktree, its commit and
  push back, the host's fetch and reset, the deletion of the attempt's branch; then landing
  (with test_command "", a rebase and a push). Given as n, mean, p50, p95, max. The first run
  on each box also clones the origin into the box's cache (once per box, as in production).
- overhead_per_remote_run_s = mean baton_s (dask) - mean baton_s (local): what sending one run
  to a worker adds, with the same CLI, the same repository and the same landing.
- dask.phases_s: for dask runs, mean of claim -> CLI start (push, submit, schedule, fetch,
  worktree), CLI end -> result taken (the worker's commit and push, the result coming back, the
  host's fetch and reset: the "took <sha> from <worker>" line in the task's log) and result
  taken -> landed. local.phases_s has claim -> CLI start and CLI end -> landed.
- event_latency_ms (the dask runs; local.event_latency_ms the same for local ones): for every
  event of the CLI (init, each assistant text, tool calls, result), the time from its `ts` (set
  when the runtime parsed the CLI's line: on the worker for dask, on the host for local) to the
  moment a client of the board received it: the dashboard's Server-Sent Events relay
  /api/projects/<id>/tasks/<task>/stream, which the board's task drawer reads (a real
  `baton-dashboard` in front of the agent; one stream per task, opened before the batch
  starts). That stream follows the task's log every 0.2 s (dispatcher.events.FOLLOW_POLL_SECONDS),
  which dominates it: event_to_log_ms is the same events' time to the task's events file on the
  project host (the file polled every 10 ms by this script), i.e. the executor's own transport.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from dispatch_bench import GIT_ENV, Agent, free_port, git, make_project  # noqa: E402

FAKE_CLAUDE = ROOT / "tests" / "fakes" / "fake_claude.py"
BOXES = ("box-a", "box-b")
EXECUTOR_PROBLEMS = {"executor_unavailable", "executor_misconfigured", "no_workers"}
TAIL_POLL = 0.01  # seconds between looks at the events files (event_to_log_ms resolution)

# The fake CLI, with the moments its process started and ended noted (the CLI's own run time).
CLI_WRAPPER = """#!/bin/sh
echo "start $TASK_ID $(date +%s.%N)" >> "$BENCH_TIMES"
"{python}" "{fake}" "$@"
rc=$?
echo "end $TASK_ID $(date +%s.%N)" >> "$BENCH_TIMES"
exit $rc
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {"n": len(ordered), "mean": round(statistics.fmean(ordered) * scale, digits),
            "p50": round(statistics.median(ordered) * scale, digits),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * scale, digits),
            "max": round(ordered[-1] * scale, digits)}


def scenario(i: int, agent_seconds: float) -> dict:
    ticks = max(2, round(agent_seconds * 10))  # an assistant line every ~0.1 s
    return {"steps": [{"tick": ticks, "every": agent_seconds / ticks},
                      {"write": f"bench-{i}.txt", "text": f"task {i}\n"}, {"commit": f"bench {i}"}]}


# ----- processes ------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Cluster:
    """A `dask scheduler` and one `dask worker` per box, on loopback, as the operator runs them."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        dask = str(Path(sys.executable).parent / "dask")
        env = {**os.environ, **env, "PYTHONPATH": str(ROOT),
               "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
               "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "15s"}
        root.mkdir(parents=True, exist_ok=True)
        try:
            self._start([dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                         "--dashboard-address", "127.0.0.1:0"], env, root, root / "scheduler.log")
            for box in BOXES:
                folder = root / box
                folder.mkdir()
                self._start([dask, "worker", self.address, "--no-nanny", "--host", "127.0.0.1",
                             "--dashboard-address", "127.0.0.1:0", "--resources", f"runner=1,{box}=1",
                             "--name", box, "--local-directory", str(folder)],
                            {**env, "BATON_WORKER_DIR": str(folder)}, folder, root / f"{box}.log")
        except BaseException:
            self.close()
            raise

    def _start(self, argv: list[str], env: dict[str, str], cwd: Path, logfile: Path) -> None:
        with open(logfile, "w") as handle:
            self.procs.append(subprocess.Popen(argv, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT))

    def wait_ready(self) -> None:
        """Until every worker has joined (started meanwhile: the agent waits for them too)."""
        from distributed import Client

        for proc in self.procs:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args[1]} exited with {proc.returncode}")
        with Client(self.address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(len(BOXES), timeout=60)

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)


class Dashboard:
    """One `baton-dashboard` in front of both projects' agents (whose ports are chosen first): it
    starts while the first agent does, and serves both batches."""

    def __init__(self, root: Path, agent_ports: dict[str, int]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "projects.yaml").write_text("projects:\n" + "".join(
            f"  - id: {name}\n    agent_url: http://127.0.0.1:{port}\n" for name, port in agent_ports.items()))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml",
                                      "--port", str(port), "--log-level", "warning"],
                                     cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_sees(self, project_id: str, task_id: str) -> None:
        """Until the dashboard answers for the task (it checks an agent that was down once a second)."""
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"baton-dashboard exited with {self.proc.returncode}")
            try:
                answer = httpx.get(f"{self.url}/api/projects/{project_id}/tasks/{task_id}/events", timeout=5)
                if answer.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the dashboard never served {project_id}'s tasks")
            time.sleep(0.1)

    def close(self) -> None:
        stop_process(self.proc)


class BenchAgent(Agent):
    """dispatch_bench's Agent on a port chosen beforehand (the dashboard's projects.yaml names it)."""

    def __init__(self, port: int, *args, **kwargs) -> None:
        self._port = port
        super().__init__(*args, **kwargs)

    @property
    def port(self) -> int:
        return self._port

    @port.setter
    def port(self, _ignored: int) -> None:
        pass  # Agent.__init__ picks a free port of its own: this one was picked first


# ----- watching the batch ----------------------------------------------------------------------


class Watch:
    """Follows every task of the batch the way the board does (the dashboard's SSE relay) and
    the task's events file on the project host, noting when each event arrived at each."""

    def __init__(self, board_url: str, project_id: str, logs_dir: Path, ids: list[str]) -> None:
        self.board_url, self.project_id, self.logs_dir, self.ids = board_url, project_id, logs_dir, ids
        self.board: dict[tuple[str, int], float] = {}  # (task, seq) -> arrival at the board client
        self.log: dict[tuple[str, int], float] = {}  # (task, seq) -> arrival in the events file
        self.events: dict[tuple[str, int], dict] = {}
        self.ended: set[str] = set()
        self.opened = threading.Event()
        self.done = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self.opened.wait(60):
            raise SystemExit("the board's task streams did not open")
        if self.failure is not None:
            raise SystemExit(f"watching failed: {self.failure!r}")

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.done.set()
            raise SystemExit(f"timed out: {len(self.ended)} of {len(self.ids)} tasks ended")
        if self.failure is not None:
            raise SystemExit(f"watching failed: {self.failure!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by start()/wait()
            self.failure = exc
            self.opened.set()

    async def _main(self) -> None:
        async with httpx.AsyncClient(base_url=self.board_url, timeout=httpx.Timeout(30, read=None)) as client:
            ready = [asyncio.Event() for _ in self.ids]
            streams = [asyncio.create_task(self._follow(client, task_id, ok)) for task_id, ok in zip(self.ids, ready)]
            await asyncio.gather(*(ok.wait() for ok in ready))
            if self.failure is not None:
                raise self.failure
            self.opened.set()
            tail = asyncio.create_task(self._tail())
            await asyncio.gather(*streams)
            self.done.set()
            await tail

    async def _follow(self, client: httpx.AsyncClient, task_id: str, ready: asyncio.Event) -> None:
        try:
            await self._follow_one(client, task_id, ready)
        except BaseException as exc:
            self.failure = self.failure or exc
            raise
        finally:
            ready.set()

    async def _follow_one(self, client: httpx.AsyncClient, task_id: str, ready: asyncio.Event) -> None:
        async with client.stream("GET", f"/api/projects/{self.project_id}/tasks/{task_id}/stream") as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"the board's stream of {task_id}: HTTP {resp.status_code} "
                                   f"{(await resp.aread())[:300]!r}")
            ready.set()
            name = None
            async for line in resp.aiter_lines():
                now = time.time()
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:") and name == "end":
                    self.ended.add(task_id)
                    return
                elif line.startswith("data:"):
                    item = json.loads(line[5:])
                    if isinstance(item, dict) and isinstance(item.get("seq"), int):
                        self.board.setdefault((task_id, item["seq"]), now)

    async def _tail(self) -> None:
        offsets = dict.fromkeys(self.ids, 0)
        partial = dict.fromkeys(self.ids, b"")
        while not self.done.is_set():
            for task_id in self.ids:
                path = self.logs_dir / f"{task_id}.events.jsonl"
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    continue
                if size <= offsets[task_id]:
                    continue
                now = time.time()
                with open(path, "rb") as handle:
                    handle.seek(offsets[task_id])
                    chunk = partial[task_id] + handle.read(size - offsets[task_id])
                offsets[task_id] = size
                *lines, partial[task_id] = chunk.split(b"\n")
                for line in lines:
                    item = json.loads(line)
                    self.log.setdefault((task_id, item["seq"]), now)
                    self.events[(task_id, item["seq"])] = item
            await asyncio.sleep(TAIL_POLL)


# ----- one batch -------------------------------------------------------------------------------


def run_batch(root: Path, mode: str, port: int, dashboard: Dashboard, cli: Path, env: dict[str, str], tasks: int,
              agent_seconds: float, times_file: Path, cluster: Cluster | None = None) -> dict:
    project = make_project(root, mode)
    extra_yaml = ""
    if cluster is not None:
        extra_yaml = f"executor: dask\ndask:\n  scheduler: {cluster.address}\n  resources:\n    runner: 1\n"
    agent = BenchAgent(port, project, cli, workers=2, env=env, test_command="", extra_yaml=extra_yaml)
    try:
        if cluster is not None:
            cluster.wait_ready()
        # A dask agent claims only once its executor sees a scheduler that fits (its health says).
        deadline = time.monotonic() + 60
        while problems := [p for p in agent.client.get("/agent/health").json().get("problems") or []
                           if p.get("code") in EXECUTOR_PROBLEMS]:
            if time.monotonic() > deadline:
                raise SystemExit(f"{mode}: the executor never became ready: {problems}")
            time.sleep(0.1)
        agent.client.post("/agent/dispatcher/stop").raise_for_status()
        ids = bulk_fake(agent, mode, tasks, agent_seconds)
        dashboard.wait_sees(mode, ids[0])
        watch = Watch(dashboard.url, mode, project / "logs", ids)
        watch.start()
        started = time.time()
        agent.client.post("/agent/dispatcher/start").raise_for_status()
        watch.wait(timeout=600)
        groups = agent.client.get("/agent/tasks").json()
        by_id = {t["id"]: t for group in groups.values() if isinstance(group, list) for t in group}
        bad = [(i, by_id.get(i, {}).get("status"), by_id.get(i, {}).get("error_message")) for i in ids
               if by_id.get(i, {}).get("status") != "completed"]
        if bad:
            raise SystemExit(f"{mode}: tasks did not land: {bad}")
        events = {i: agent.client.get(f"/agent/tasks/{i}/events", params={"limit": 5000}).json()["events"]
                  for i in ids}
    finally:
        agent.close()
    landed = len(git(root / f"{mode}-origin.git", "rev-list", "main").split()) - 1
    return analyse(mode, ids, by_id, events, watch, cli_times(times_file, ids), started, landed)


def bulk_fake(agent: Agent, mode: str, count: int, agent_seconds: float) -> list[str]:
    body = {"tasks": [{"title": f"{mode} {i}", "content": "FAKE: " + json.dumps(scenario(i, agent_seconds))}
                      for i in range(count)]}
    resp = agent.client.post("/agent/tasks/bulk", json=body)
    resp.raise_for_status()
    return [t["id"] for t in resp.json()["tasks"]]


def cli_times(path: Path, ids: list[str]) -> dict[str, tuple[float, float]]:
    marks: dict[tuple[str, str], float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        what, task_id, at = line.split()
        marks.setdefault((what, task_id), float(at))  # one run per task here
    return {i: (marks[("start", i)], marks[("end", i)]) for i in ids if ("start", i) in marks and ("end", i) in marks}


def analyse(mode: str, ids: list[str], tasks: dict[str, dict], events: dict[str, list[dict]], watch: Watch,
            cli: dict[str, tuple[float, float]], started: float, landed: int) -> dict:
    missing = [i for i in ids if i not in cli]
    if missing:
        raise SystemExit(f"{mode}: no CLI start/end noted for {missing}")
    finished = {i: epoch(tasks[i]["finished_at"]) for i in ids}
    wall = max(finished.values()) - started
    baton, before, after, taken_to_landed = [], [], [], []
    for i in ids:
        claim = next(epoch(e["ts"]) for e in events[i] if e.get("subtype") == "attempt_started")
        cli_start, cli_end = cli[i]
        baton.append((finished[i] - claim) - (cli_end - cli_start))
        before.append(cli_start - claim)
        if mode == "dask":
            took = next(epoch(e["ts"]) for e in events[i]
                        if e["kind"] == "baton" and (e.get("text") or "").startswith("took "))
            after.append(took - cli_end)
            taken_to_landed.append(finished[i] - took)
        else:
            after.append(finished[i] - cli_end)
    board, to_log = [], []
    for i in ids:
        for e in events[i]:
            if e["kind"] == "baton":
                continue  # Baton's own lines are written on the project host
            key = (i, e["seq"])
            if key in watch.board:
                board.append(watch.board[key] - epoch(e["ts"]))
            if key in watch.log:
                to_log.append(watch.log[key] - epoch(e["ts"]))
    workers: dict[str, int] = {}
    for i in ids:
        name = tasks[i].get("worker") or "(this host)"
        workers[name] = workers.get(name, 0) + 1
    clis = [end - start for start, end in cli.values()]
    phases = {"claim_to_cli_start": round(statistics.fmean(before), 3)}
    if mode == "dask":
        phases |= {"cli_end_to_result_taken": round(statistics.fmean(after), 3),
                   "result_taken_to_landed": round(statistics.fmean(taken_to_landed), 3)}
    else:
        phases |= {"cli_end_to_landed": round(statistics.fmean(after), 3)}
    def latency(values: list[float]) -> dict:
        return {k: v for k, v in spread(values, 1000, 1).items() if k in ("n", "p50", "p95", "max")}

    return {"wall_s": round(wall, 2), "per_task_s": round(wall / len(ids), 3), "commits_landed": landed,
            "runs_per_worker": workers, "cli_s": spread(clis), "baton_s": spread(baton), "phases_s": phases,
            "event_latency_ms": latency(board), "event_to_log_ms": latency(to_log),
            "events_missed_by_board": sum(1 for i in ids for e in events[i]
                                          if e["kind"] != "baton" and (i, e["seq"]) not in watch.board)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--agent-seconds", type=float, default=1.0)
    parser.add_argument("--json-only", action="store_true", help="print nothing but the JSON (no progress)")
    args = parser.parse_args()
    say = (lambda _m: None) if args.json_only else log
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="baton-remote-bench-") as tmp:
        root = Path(tmp)
        cli = root / "bin" / "claude"
        cli.parent.mkdir()
        cli.write_text(CLI_WRAPPER.format(python=sys.executable, fake=FAKE_CLAUDE))
        cli.chmod(0o755)
        results = {}
        ports = {"local": free_port(), "dask": free_port()}
        dashboard = Dashboard(root / "dashboard", ports)
        try:
            for mode in ("local", "dask"):
                times = root / f"{mode}-cli-times.txt"
                env = {**GIT_ENV, "FAKE_CLAUDE_STATE": str(root / "fake-state"), "BENCH_TIMES": str(times)}
                say(f"{mode}: {args.tasks} tasks x {args.agent_seconds:g} s agent")
                if mode == "local":
                    results[mode] = run_batch(root, mode, ports[mode], dashboard, cli, env, args.tasks,
                                              args.agent_seconds, times)
                    continue
                cluster = Cluster(root / "cluster", env)  # starting while the agent does
                try:
                    results[mode] = run_batch(root, mode, ports[mode], dashboard, cli, env, args.tasks,
                                              args.agent_seconds, times, cluster)
                finally:
                    cluster.close()
        finally:
            dashboard.close()
    local, dask = results["local"], results["dask"]
    figures = {
        "tasks": args.tasks, "agent_seconds": args.agent_seconds, "parallel_runs": 2,
        # Everything runs on this one machine: its load (other work included) moves every figure.
        "machine": {"cores": os.cpu_count(), "load_1m_before": round(load_before, 2),
                    "load_1m_after": round(os.getloadavg()[0], 2)},
        "local": local, "dask": dask,
        # Mean per run of (landed - claimed) - the CLI's own run time, dask minus local.
        "overhead_per_remote_run_s": round(dask["baton_s"]["mean"] - local["baton_s"]["mean"], 3),
        "event_latency_ms": dask["event_latency_ms"],
        "definitions": {
            "baton_s": "per run: (finished_at - attempt_started) - the CLI process's own run time",
            "phases_s": "means per run: attempt_started -> CLI process start; CLI exit -> the host took the "
                        "worker's commit ('took <sha>' in the log; dask) -> finished_at (landed)",
            "overhead_per_remote_run_s": "mean baton_s of the dask runs - mean baton_s of the local runs",
            "event_latency_ms": "dask runs: event ts (parsed on the worker) -> received by a client of the "
                                "dashboard's SSE relay /api/projects/<id>/tasks/<task>/stream (the agent "
                                "follows the log every 0.2 s)",
            "event_to_log_ms": "event ts -> line in the task's events file on the project host (polled every "
                               f"{TAIL_POLL * 1000:g} ms)",
        },
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
