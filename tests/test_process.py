"""run_streaming with real child processes: limits, stop requests, process groups, memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backend.dispatcher.process import StopRequest, run_streaming
from support import pid_alive, wait_for

ROOT = Path(__file__).parent.parent


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run(tmp_path: Path, argv: list[str], **kw):
    lines: list[str] = []
    defaults = dict(cwd=tmp_path, env=dict(os.environ), stdin_text=None, stdout_log=tmp_path / "out.log",
                    stderr_log=tmp_path / "err.log", on_line=lines.append, wall_timeout=None,
                    stall_timeout=None, stop=StopRequest())
    outcome = run_streaming(argv, **{**defaults, **kw})
    return outcome, lines


SPAWN_GRANDCHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen(['sleep', '600'])\n"
    "open(sys.argv[1], 'w').write(str(child.pid))\n"
)


def test_output_stdin_stderr_and_exit_code(tmp_path):
    code = "import sys\nprint(sys.stdin.read().upper())\nprint('warn', file=sys.stderr)\nsys.exit(4)"
    outcome, lines = run(tmp_path, py(code), stdin_text="hello")
    assert outcome.exit_code == 4 and outcome.stopped is None
    assert lines == ["HELLO\n"]
    assert (tmp_path / "out.log").read_text() == "HELLO\n"
    assert (tmp_path / "err.log").read_text() == "warn\n"


def test_wall_timeout_while_output_flows_kills_grandchildren(tmp_path):
    pidfile = tmp_path / "gc.pid"
    code = SPAWN_GRANDCHILD + "while True:\n    print('tick', flush=True)\n    time.sleep(0.05)\n"
    outcome, lines = run(tmp_path, py(code) + [str(pidfile)], wall_timeout=1.0)
    assert outcome.stopped == "timeout"
    assert len(lines) > 5  # it was still printing when stopped
    wait_for(lambda: not pid_alive(int(pidfile.read_text())), timeout=5, what="grandchild to die")


def test_stall_limit_fires_on_silence(tmp_path):
    outcome, lines = run(tmp_path, py("import time\nprint('one', flush=True)\ntime.sleep(60)"),
                         stall_timeout=0.5)
    assert outcome.stopped == "stalled" and lines == ["one\n"]


def test_stop_request_ends_the_group_with_its_reason(tmp_path):
    stop = StopRequest()
    # Asked to stop as soon as the child exists: the run must end it, not wait 60 s.
    outcome, _ = run(tmp_path, py("import time\ntime.sleep(60)"), stop=stop,
                     on_start=lambda pid: stop.set("cancelled"))
    assert outcome.stopped == "cancelled"
    assert not pid_alive(outcome.pid)


def test_a_child_ignoring_sigterm_is_killed(tmp_path):
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"
    outcome, _ = run(tmp_path, py(code), wall_timeout=0.5)
    assert outcome.stopped == "timeout" and not pid_alive(outcome.pid)


def test_leftover_background_process_does_not_hang_the_run(tmp_path):
    pidfile = tmp_path / "gc.pid"
    outcome, _ = run(tmp_path, py(SPAWN_GRANDCHILD) + [str(pidfile)])  # exits, child keeps stdout open
    assert outcome.exit_code == 0
    wait_for(lambda: not pid_alive(int(pidfile.read_text())), timeout=5, what="leftover to be stopped")


def test_missing_executable_is_reported_not_raised(tmp_path):
    outcome, _ = run(tmp_path, [str(tmp_path / "no-such-cli")])
    assert outcome.exit_code == 127 and "cannot start" in (tmp_path / "err.log").read_text()


MEMORY_PROBE = r"""
import json, os, resource, sys
from pathlib import Path
from backend.dispatcher.process import StopRequest, run_streaming
tmp = Path(sys.argv[1])
child = [sys.executable, "-c",
         "import sys\nline = b'{\"type\":\"assistant\",\"pad\":\"' + b'x' * 1000 + b'\"}\\n'\n"
         "w = sys.stdout.buffer.write\nfor _ in range(100_000): w(line)"]
count = [0]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run_streaming(child, cwd=tmp, env=dict(os.environ), stdin_text=None, stdout_log=tmp / "big.log",
              stderr_log=None, on_line=lambda line: count.__setitem__(0, count[0] + 1),
              wall_timeout=None, stall_timeout=None, stop=StopRequest())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "after_kb": after, "lines": count[0],
                  "log_bytes": (tmp / "big.log").stat().st_size}))
"""


def test_memory_stays_flat_for_a_100_mb_log(tmp_path):
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["lines"] == 100_000 and figures["log_bytes"] >= 100_000_000
    assert figures["after_kb"] - figures["before_kb"] < 20_000, figures  # < 20 MB for 100 MB streamed
