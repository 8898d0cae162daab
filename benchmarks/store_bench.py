"""Task store and agent API speed at scale. Prints one JSON object.

    python benchmarks/store_bench.py [--tasks 10000] [--samples 200] [--contention-seconds 5]
                                     [--archived 100000]

Measures, with `--tasks` tasks already in the store (realistic titles and 200-800 character
bodies):
- create and claim latency through TaskStore (the operations the dispatcher performs);
- POST /agent/tasks and GET /agent/tasks latency against a real `baton-agent` process;
- claims per second with 4 processes contending for the same store;
- create and claim latency with `--tasks` live and `--archived` archived tasks (issue #7: the
  archive keeps the live file proportional to live work), the archive's one-time index build,
  and one archiving pass.
Targets (issue #2): claim p50 <= 20 ms, GET /agent/tasks p50 <= 150 ms at 10,000 tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from datetime import timedelta  # noqa: E402

from backend.archive import archive_finished  # noqa: E402
from backend.models import NewTask, Owner, Task, TaskStatus, utcnow  # noqa: E402
from backend.store import TaskStore  # noqa: E402
from backend.mirrors import MirrorWriter  # noqa: E402

WORDS = "add fix refactor the parser cache login page retry worker queue test docs api timeout".split()


def _task(rng: random.Random, i: int) -> NewTask:
    body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(35, 130)))
    return NewTask(
        title=f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS)} #{i}",
        content=body,
        task_type=rng.choice(["feature", "bugfix", "refactor", "chore", "docs", "test"]),
        priority=rng.choice(["low", "medium", "high", "urgent"]),
    )


def _stats(samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "n": len(samples),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(pick(0.95) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def _timed(fn, count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "b@x"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _http_figures(project: Path, samples: int) -> dict:
    # The store and its API are measured here, not a dispatcher working through the tasks.
    (project / "agent.yaml").write_text("dispatcher_autostart: false\n")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BATON_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.agent.cli", "--port", str(port), "--project-dir", str(project),
         "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"baton-agent exited: {proc.stderr.read()}")
                try:
                    client.get("/agent/health")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("baton-agent did not start")
                    time.sleep(0.05)
            rng = random.Random(2)
            counter = iter(range(10**9))

            def post():
                resp = client.post("/agent/tasks", json=_task(rng, next(counter)).model_dump())
                resp.raise_for_status()

            def get_all():
                resp = client.get("/agent/tasks")
                resp.raise_for_status()
                return resp

            size = len(get_all().content)
            create = _timed(post, samples)
            listing = _timed(get_all, max(20, samples // 4))
        return {"create_http": _stats(create), "get_tasks_http": _stats(listing), "get_tasks_bytes": size}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


CLAIMER = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[4])
from backend.models import Owner
from backend.store import TaskStore
store = TaskStore(sys.argv[1], lock_timeout=120)
start_at, stop_at = float(sys.argv[2]), float(sys.argv[3])
owner = Owner(pid=os.getpid(), host="bench", instance=str(os.getpid()))
store.snapshot()
while time.time() < start_at:
    time.sleep(0.001)
count = 0
while time.time() < stop_at and store.claim(owner, 600) is not None:
    count += 1
print(count)
"""


def _contention(store_path: Path, processes: int, seconds: float) -> dict:
    start_at = time.time() + 3.0  # let every process import and load the store first
    stop_at = start_at + seconds
    procs = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, str(store_path), str(start_at), str(stop_at), str(ROOT)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    counts = [int(p.communicate(timeout=seconds + 120)[0]) for p in procs]
    return {
        "processes": processes,
        "seconds": seconds,
        "claims": sum(counts),
        "claims_per_second": round(sum(counts) / seconds, 1),
        "per_process": counts,
    }


def _archive_figures(live: int, archived: int, samples: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="baton-bench-archive-") as tmp:
        store_path = Path(tmp) / "data" / "dev-tasks.json"
        store = TaskStore(store_path, mirrors=MirrorWriter(Path(tmp) / "tasks"))
        store.initialize()
        rng = random.Random(3)
        old = utcnow() - timedelta(days=30)
        started = time.perf_counter()
        batch: list[Task] = []
        for i in range(archived):
            fields = _task(rng, i).model_dump(exclude={"tool_grant"})  # kept beside the store, not in a Task
            batch.append(Task(id=f"arch{i:08d}", status=TaskStatus.completed, created_at=old, updated_at=old,
                              finished_at=old, **fields))
            if len(batch) == 5000 or i == archived - 1:
                store.archive.append(batch)
                batch = []
        archive_fill = time.perf_counter() - started
        for start in range(0, live, 100):
            store.create_many(_task(rng, i) for i in range(start, min(live, start + 100)))

        cold = TaskStore(store_path)
        started = time.perf_counter()
        assert cold.get(f"arch{archived - 1:08d}").status is TaskStatus.completed
        index_build = time.perf_counter() - started

        owner = Owner(pid=os.getpid(), host="bench", instance="archive")
        counter = iter(range(live, 10**9))
        create = _timed(lambda: store.create(_task(rng, next(counter))), samples)
        claimed: list[Task] = []
        claim = _timed(lambda: claimed.append(store.claim(owner, 600)), samples)
        for task in claimed:
            store.transition(task.id, TaskStatus.completed)
            store.update(task.id, finished_at=old)
        started = time.perf_counter()
        moved = archive_finished(store, 7)
        archive_pass = time.perf_counter() - started
        return {
            "live_tasks": live,
            "archived_tasks": archived,
            "live_file_bytes": store_path.stat().st_size,
            "archive_file_bytes": store.archive.path.stat().st_size,
            "archive_fill_seconds": round(archive_fill, 2),
            "archive_index_build_seconds": round(index_build, 3),
            "create_store": _stats(create),
            "claim_store": _stats(claim),
            "archive_pass": {"tasks_moved": len(moved), "seconds": round(archive_pass, 3)},
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--contention-seconds", type=float, default=5.0)
    parser.add_argument("--archived", type=int, default=100_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="baton-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        _git(project, "init", "-b", "main")
        _git(project, "commit", "--allow-empty", "-m", "init")
        store_path = project / "data" / "dev-tasks.json"
        store = TaskStore(store_path, mirrors=MirrorWriter(project / "tasks"))
        store.initialize()

        rng = random.Random(1)
        started = time.perf_counter()
        for batch in range(0, args.tasks, 100):
            store.create_many(_task(rng, i) for i in range(batch, min(args.tasks, batch + 100)))
        fill_seconds = time.perf_counter() - started
        file_bytes = store_path.stat().st_size

        owner = Owner(pid=os.getpid(), host="bench", instance="main")
        counter = iter(range(args.tasks, 10**9))
        create = _timed(lambda: store.create(_task(rng, next(counter))), args.samples)
        claim = _timed(lambda: store.claim(owner, 600), args.samples)
        cold = TaskStore(store_path)
        cold_load = _timed(lambda: cold.check(), 5)

        http = _http_figures(project, args.samples)
        contention = _contention(store_path, 4, args.contention_seconds)

    result = {
        "tasks_in_store": args.tasks,
        "store_file_bytes": file_bytes,
        "fill_seconds": round(fill_seconds, 2),
        "create_store": _stats(create),
        "claim_store": _stats(claim),
        "cold_full_load": _stats(cold_load),
        **http,
        "contention": contention,
        "with_archive": _archive_figures(args.tasks, args.archived, args.samples),
        "targets": {
            "claim_p50_ms_max": 20,
            "claim_p50_met": _stats(claim)["p50_ms"] <= 20,
            "get_tasks_p50_ms_max": 150,
            "get_tasks_p50_met": http["get_tasks_http"]["p50_ms"] <= 150,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
