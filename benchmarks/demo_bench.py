"""A newcomer's first run: README command 1 in a fresh clone, timed. Prints one JSON object.

    python benchmarks/demo_bench.py [--cold-pip-cache] [--timeout 900]

Clones this repository (its committed HEAD) into a temp folder and runs README command 1 there
as written (one argument added: `--port` on a free port, so a board already on :8888 does not
matter), with a fresh `.venv`. `--cold-pip-cache` gives pip an empty cache, as on a fresh
machine (packages come from the index). Measured from the command's start:
- install_done_s: the dashboard process writes its first line (the venv is installed);
- board_up_s: the board answers HTTP;
- first_landed_s / all_landed_s: the demo's first / every seeded task is a commit on the
  sample origin's main (`<type>(<id>): <title>`).
Then Ctrl+C (SIGINT) and the time the dashboard took to exit with everything stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TASK_SUBJECT = re.compile(r"^[a-z]+\([a-z0-9]+\): ")
SEEDED = 5


def readme_command_one() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^# 1\..*\n(.+)$", text, re.MULTILINE)
    assert match, "README command 1 not found"
    return match.group(1).strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def landed(origin: Path) -> int:
    if not origin.exists():
        return 0
    out = subprocess.run(["git", "-C", str(origin), "log", "--format=%s", "main"], capture_output=True, text=True)
    return sum(1 for line in out.stdout.splitlines() if TASK_SUBJECT.match(line))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-pip-cache", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="baton-demo-bench-") as tmp:
        clone = Path(tmp) / "baton"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
        if args.cold_pip_cache:
            env["PIP_CACHE_DIR"] = str(Path(tmp) / "pip-cache")
        port = free_port()
        command = f"{readme_command_one()} --port {port}"
        origin = clone / "data" / "demo" / "origin.git"
        figures: dict = {"command": command, "pip_cache": "cold" if args.cold_pip_cache else "warm"}
        started = time.monotonic()
        proc = subprocess.Popen(["bash", "-c", command], cwd=clone, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        output: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                if "install_done_s" not in figures and b"baton-dashboard" in raw:
                    figures["install_done_s"] = round(time.monotonic() - started, 1)
                output.append(raw.decode(errors="replace"))

        threading.Thread(target=read, daemon=True).start()
        try:
            deadline = started + args.timeout
            while time.monotonic() < deadline and proc.poll() is None:
                now = round(time.monotonic() - started, 1)
                if "board_up_s" not in figures:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                            figures["board_up_s"] = now
                    except httpx.HTTPError:
                        pass
                count = landed(origin)
                if count and "first_landed_s" not in figures:
                    figures["first_landed_s"] = now
                if count >= SEEDED:
                    figures["all_landed_s"] = now
                    break
                time.sleep(0.25)
            if "all_landed_s" not in figures:
                figures["problem"] = "not every seeded task landed in time" if proc.poll() is None else \
                    f"the command exited with {proc.returncode}"
                figures["output_tail"] = "".join(output)[-3000:]
        finally:
            stop_started = time.monotonic()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            figures["ctrl_c_exit_s"] = round(time.monotonic() - stop_started, 1)
            figures["exit_code"] = proc.returncode
        figures["machine"] = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
