"""backend/workflow/hooks.py: a WORKFLOW.md hook as a real `bash -lc` process in a folder, bounded
by its timeout, output appended to the task's hook log, never raising for a failing script."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from backend.dispatcher.policy import HookSpec
from backend.dispatcher.process import StopRequest, task_marker
from backend.workflow.hooks import run_hook
from support import pid_alive, wait_for


def hook(tmp_path: Path, script: str, timeout: float = 30, name: str = "before_run", **kw):
    folder = tmp_path / "ws"
    folder.mkdir(exist_ok=True)
    args = dict(cwd=folder, env=dict(os.environ), log_file=tmp_path / "logs" / "T1.hooks.log", stop=StopRequest(),
                marker=task_marker("T1", tmp_path))
    return run_hook(HookSpec(name=name, script=script, timeout=timeout), **{**args, **kw})


def test_output_goes_to_the_log_with_a_header_and_the_folder_and_marker_are_the_tasks(tmp_path):
    result = hook(tmp_path, 'echo "in $(pwd)"; echo "task $TASK_ID"; echo oops >&2', name="after_create")
    assert result.ok and result.exit_code == 0 and not result.timed_out and not result.stopped
    assert result.name == "after_create"
    text = (tmp_path / "logs" / "T1.hooks.log").read_text()
    header = text.index("=== hook after_create in ")
    assert header < text.index(f"in {tmp_path / 'ws'}") < text.index("task T1") < text.index("oops")
    assert "=== hook after_create: ok in" in text
    assert f"in {tmp_path / 'ws'}" in result.output_tail and "oops" in result.output_tail
    assert result.summary().startswith("ok in ")


def test_each_hook_appends_and_its_tail_is_its_own_output(tmp_path):
    hook(tmp_path, "echo first")
    second = hook(tmp_path, "echo second; exit 3")
    text = (tmp_path / "logs" / "T1.hooks.log").read_text()
    assert text.index("first") < text.index("second")
    assert not second.ok and second.exit_code == 3 and "second" in second.output_tail
    assert "first" not in second.output_tail
    assert second.summary().startswith("failed (exit 3)")


def test_the_tail_is_the_end_of_a_long_output(tmp_path):
    result = hook(tmp_path, "for i in $(seq 1 3000); do echo line-$i; done")
    assert result.ok and len(result.output_tail) <= 2000
    assert result.output_tail.rstrip().endswith("line-3000") and "line-1\n" not in result.output_tail


def test_a_timeout_kills_the_whole_group_and_says_so(tmp_path):
    pidfile = tmp_path / "child.pid"
    result = hook(tmp_path, f"sleep 600 & echo $! > {pidfile}; echo started; wait", timeout=1)
    assert result.timed_out and not result.ok and not result.stopped
    assert "started" in result.output_tail
    assert result.summary() == "timed out after 1 s"
    child = int(pidfile.read_text())
    wait_for(lambda: not pid_alive(child), timeout=10, what="the hook's background child to be gone")


def test_a_detached_process_with_the_tasks_marker_goes_too(tmp_path):
    pidfile = tmp_path / "escaped.pid"
    result = hook(tmp_path, f"setsid sleep 600 > /dev/null 2>&1 & echo $! > {pidfile}; exit 0")
    assert result.ok
    escaped = int(pidfile.read_text())
    wait_for(lambda: not pid_alive(escaped), timeout=10, what="the detached process to be gone")


def test_a_stop_request_ends_the_hook(tmp_path):
    started = tmp_path / "started"
    stop = StopRequest()

    def stop_once_started() -> None:
        wait_for(started.exists, timeout=20, what="the hook to start")
        stop.set("cancelled")

    helper = threading.Thread(target=stop_once_started)
    helper.start()
    result = hook(tmp_path, f"touch {started}; sleep 600", timeout=300, stop=stop)
    helper.join()
    assert result.stopped and not result.ok and not result.timed_out


def test_the_environment_is_the_one_given_plus_the_marker(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ONLY_THIS": "yes"}
    out = tmp_path / "env.txt"
    result = hook(tmp_path, f"env > {out}", env=env)
    assert result.ok
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert seen["ONLY_THIS"] == "yes" and seen["TASK_ID"] == "T1"
    assert seen["BATON_PROJECT"] == str(tmp_path.resolve())
    assert "ANTHROPIC_API_KEY" not in seen and "FAKE_CLAUDE_LOG" not in seen


def test_stdin_is_closed(tmp_path):
    result = hook(tmp_path, "if read -r line; then echo got-input; else echo no-input; fi")
    assert result.ok and "no-input" in result.output_tail


def test_bash_missing_or_no_folder_is_a_failure_with_the_reason(tmp_path):
    no_bash = hook(tmp_path, "true", env={"PATH": str(tmp_path / "empty")})
    assert not no_bash.ok and no_bash.exit_code is None and "bash" in no_bash.output_tail
    assert no_bash.summary().startswith("could not run: ")
    gone = hook(tmp_path, "true", cwd=tmp_path / "missing")
    assert not gone.ok and gone.exit_code is None and "missing" in gone.output_tail
