"""Each runtime's real CLI under a real `baton-agent`: Baton's own time per task, and memory with
tasks running together. Prints one JSON object.

    python benchmarks/runtime_bench.py [--runtimes claude_code,codex,opencode] [--tasks 5] [--concurrent 5]
                                       [--delay 3]

Per runtime: the pinned CLI from the test cache ($BATON_NPM_CACHE, else ~/.cache/baton-tests;
installed with npm when missing, else reported as {"skipped": reason}), talking to its stand-in
model API from tests/fakes/ (one tool call that writes a new file, then a final text), with a
fresh HOME and the runtime's own isolated state, on a temp project (bare origin + clone) with
test_command "".

- overhead: --tasks tasks one at a time on one worker. Baton's own time for a task =
  (finished_at - created_at) - the CLI's wall time, measured exactly by a wrapper script
  (agent.yaml's `command`) that notes the time around running the real binary. It includes
  pickup, worktree, prompt, event parsing, commit, landing (rebase + push) and clean-up.
- memory: --concurrent tasks at once, the stand-in holding each model request --delay seconds
  so every CLI is alive together. Every 100 ms, the RSS of each process carrying the task's
  marker (TASK_ID + BATON_PROJECT, as Baton finds them to stop them), summed per task and over
  all. Plus the baton-agent process's own peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests" / "fakes"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from anthropic_standin import StandInMessagesAPI  # noqa: E402
from dispatch_bench import Agent, git, make_project  # noqa: E402
from openai_standin import StandInChatCompletionsAPI, StandInResponsesAPI  # noqa: E402

from backend.dispatcher.process import find_processes  # noqa: E402

# runtime: (npm package, pinned version, binary) - the versions tests/test_real_*.py pin.
PINS = {
    "claude_code": ("@anthropic-ai/claude-code", "2.1.329", "claude"),
    "codex": ("@openai/codex", "0.169.0", "codex"),
    "opencode": ("opencode-ai", "1.18.33", "opencode"),
}
# A new file per task (a task without changes lands nothing), whatever env the tool passes on.
WRITE = "printf 'bench\\n' > \"bench-$(date +%s%N).txt\""
SAMPLE_SECONDS = 0.1

# Not `exec`: the shell stays to note the end. It and the CLI share the task's process group
# and environment marker, so Baton's stop reaches both; stdin and arguments pass through.
WRAPPER = """#!/bin/sh
[ -n "$TASK_ID" ] && echo "$TASK_ID start $(date +%s.%N)" >> {times}
{binary} "$@"
rc=$?
[ -n "$TASK_ID" ] && echo "$TASK_ID end $(date +%s.%N)" >> {times}
exit $rc
"""


def ensure_cli(runtime: str) -> tuple[Path | None, str]:
    """The pinned CLI's binary, installed into the test cache like the e2e tests do, or (None, why not)."""
    import pytest  # realcli reports a missing CLI as a test outcome; here it becomes "skipped"
    from realcli import npm_cli

    try:
        return npm_cli(*PINS[runtime]), ""
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        return None, (exc.msg or "not available").removeprefix("SKIPPED LOUDLY: ")


def standin(runtime: str, delay: float):
    if runtime == "claude_code":
        return StandInMessagesAPI("Bash", {"command": WRITE, "description": "write a file"}, delay=delay)
    if runtime == "codex":
        return StandInResponsesAPI("exec_command", {"cmd": WRITE}, delay=delay)
    return StandInChatCompletionsAPI("bash", {"command": WRITE, "description": "write a file"}, delay=delay)


def runtime_setup(runtime: str, command: Path, url: str, home: Path) -> tuple[str, dict[str, str]]:
    """(agent.yaml's runtime part, environment for baton-agent) pointing the CLI at `url`."""
    env = {"HOME": str(home), "STANDIN_KEY": "sk-standin-not-real"}
    limits = {"command": str(command), "timeout": 300, "stall_timeout": 240}
    if runtime == "claude_code":
        env.update({"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "sk-ant-standin-not-real",
                    "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"})
        section = limits
    elif runtime == "codex":
        provider = {"name": "standin", "base_url": url + "/v1", "wire_api": "responses", "env_key": "STANDIN_KEY",
                    "request_max_retries": 0, "stream_max_retries": 0}  # a failing stand-in fails at once
        section = {**limits, "model": "gpt-5.5", "isolated_home": True, "config": {
            "model_provider": "standin", **{f"model_providers.standin.{k}": v for k, v in provider.items()}}}
    else:
        section = {**limits, "model": "standin/gpt-5.5", "isolated_state": True, "config": {
            "provider": {"standin": {"npm": "@ai-sdk/openai-compatible", "name": "Stand-in",
                                     "options": {"baseURL": url + "/v1", "apiKey": "{env:STANDIN_KEY}"},
                                     "models": {"gpt-5.5": {"tool_call": True, "cost": {"input": 3, "output": 15},
                                                            "limit": {"context": 200000, "output": 8192}}}}},
            "small_model": "standin/gpt-5.5"}}
    return f"runtime: {runtime}\n{runtime}: {json.dumps(section)}\n", env  # JSON is YAML


def cli_seconds(times: Path) -> dict[str, float]:
    """Wall seconds of the CLI per task id, from the wrapper's start/end lines (summed over turns)."""
    total: dict[str, float] = {}
    started: dict[str, float] = {}
    for line in times.read_text().splitlines() if times.exists() else []:
        task_id, kind, stamp = line.split()
        if kind == "start":
            started[task_id] = float(stamp)
        elif task_id in started:
            total[task_id] = total.get(task_id, 0.0) + float(stamp) - started.pop(task_id)
    return total


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def files_landed(project: Path) -> int:
    """How many files the CLIs wrote reached origin's main (one per task: each ran its tool)."""
    names = git(project.parent / f"{project.name}-origin.git", "ls-tree", "--name-only", "main").split()
    return sum(name.startswith("bench-") for name in names)


def new_task(agent: Agent, title: str) -> str:
    return agent.client.post("/agent/tasks", json={"title": title, "content": "Write a file."}).json()["id"]


def measure_overhead(agent: Agent, project: Path, times: Path, count: int) -> dict:
    own, cli, fraction = [], [], []
    for i in range(count):  # one at a time: nothing else of Baton's runs meanwhile
        task_id = new_task(agent, f"overhead {i}")
        agent.wait_all_done([task_id])
        task = next(t for t in agent.client.get("/agent/tasks").json()["completed"] if t["id"] == task_id)
        total = seconds_between(task["created_at"], task["finished_at"])
        wall = cli_seconds(times)[task_id]
        own.append(total - wall)
        cli.append(wall)
        fraction.append((total - wall) / total)
    return {"tasks": count, "files_landed": files_landed(project),
            "baton_s_p50": round(statistics.median(own), 3), "baton_s_max": round(max(own), 3),
            "cli_s_p50": round(statistics.median(cli), 3), "baton_fraction_p50": round(statistics.median(fraction), 3),
            "baton_s_each": [round(x, 3) for x in own]}


def _read(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def rss_by_task(project: str) -> dict[str, int]:
    """kB of resident memory per task id over every live process of `project`'s tasks (a
    descendant that lost TASK_ID counts under "")."""
    out: dict[str, int] = {}
    for pid in find_processes(None, {"BATON_PROJECT": project}):
        env = dict(e.split(b"=", 1) for e in _read(pid, "environ").split(b"\0") if b"=" in e)
        rss = next((int(line.split()[1]) for line in _read(pid, "status").splitlines()
                    if line.startswith(b"VmRSS:")), 0)
        task_id = env.get(b"TASK_ID", b"").decode()
        out[task_id] = out.get(task_id, 0) + rss
    return out


def measure_memory(agent: Agent, project: Path, count: int) -> dict:
    peak_total, peak_task, samples, most_alive = 0, {}, 0, 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_total, samples, most_alive
        marker = str(project.resolve())
        while not stop.wait(SAMPLE_SECONDS):
            per_task = rss_by_task(marker)
            samples += 1
            most_alive = max(most_alive, len(per_task.keys() - {""}))
            peak_total = max(peak_total, sum(per_task.values()))
            for task_id, kb in per_task.items():
                peak_task[task_id] = max(peak_task.get(task_id, 0), kb)

    sampler = threading.Thread(target=sample, daemon=True)
    agent.client.post("/agent/dispatcher/stop")  # all queued first, then started together
    ids = [new_task(agent, f"memory {i}") for i in range(count)]
    sampler.start()
    agent.client.post("/agent/dispatcher/start")
    try:
        agent.wait_all_done(ids)
    finally:
        stop.set()
        sampler.join()
    per_task = [peak_task.get(i, 0) / 1024 for i in ids]
    return {"concurrent": count, "files_landed": files_landed(project), "samples": samples,
            "most_tasks_alive_together": most_alive, "peak_total_mb": round(peak_total / 1024, 1),
            "peak_per_task_mb_max": round(max(per_task), 1),
            "peak_per_task_mb_p50": round(statistics.median(per_task), 1),
            "baton_agent_peak_rss_mb": agent.peak_rss_mb()}


def bench_runtime(root: Path, runtime: str, args: argparse.Namespace) -> dict:
    binary, why = ensure_cli(runtime)
    if binary is None:
        return {"skipped": why}
    base = root / runtime
    base.mkdir()
    times = base / "cli-times.txt"
    wrapper = base / f"{runtime}-timed"
    wrapper.write_text(WRAPPER.format(times=shlex.quote(str(times)), binary=shlex.quote(str(binary))))
    wrapper.chmod(0o755)
    result: dict = {"cli": f"{PINS[runtime][0]}@{PINS[runtime][1]}"}
    for phase, workers, delay in (("overhead", 1, 0.0), ("memory", args.concurrent, args.delay)):
        home = base / f"home-{phase}"
        home.mkdir()
        with standin(runtime, delay) as api:
            runtime_yaml, env = runtime_setup(runtime, wrapper, api.url, home)
            project = make_project(base, phase)
            agent = Agent(project, None, workers=workers, env=env, runtime_yaml=runtime_yaml)
            try:
                if phase == "overhead":
                    result["overhead"] = measure_overhead(agent, project, times, args.tasks)
                else:
                    result["memory"] = {**measure_memory(agent, project, args.concurrent), "model_delay_s": delay}
            finally:
                agent.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtimes", default="claude_code,codex,opencode")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=5)
    parser.add_argument("--delay", type=float, default=3.0, help="seconds the stand-in holds each model request "
                                                                 "in the memory run")
    args = parser.parse_args()
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    unknown = [r for r in runtimes if r not in PINS]
    if unknown or args.tasks < 1 or args.concurrent < 1:
        parser.error(f"--runtimes takes {', '.join(PINS)}; --tasks and --concurrent at least 1"
                     + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    node = shutil.which("node") and subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    result: dict = {"machine": {"cores": os.cpu_count(), "platform": platform.platform()},
                    "versions": {"python": platform.python_version(), "git": git, "node": node}}
    with tempfile.TemporaryDirectory(prefix="baton-runtime-bench-") as tmp:
        for runtime in runtimes:
            started = time.monotonic()
            result[runtime] = bench_runtime(Path(tmp), runtime, args)
            result[runtime]["bench_wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
