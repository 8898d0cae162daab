"""README's two commands: what a newcomer types first must work as written and be safe."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx

from support import ROOT, free_port, wait_for_http


def readme_commands() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2, lines
    return lines[0], lines[1]


def test_ci_runs_the_readme_test_command_verbatim():
    _, test_command = readme_commands()
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_both_commands_install_into_a_venv_not_the_system_python():
    for command in readme_commands():
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install "), command
        assert "python3 -m pip" not in command and " pip install" not in command.replace(".venv/bin/pip", "")


def test_command_one_runs_the_demo_and_no_coding_agent_on_batons_own_clone():
    first, _ = readme_commands()
    assert "baton-agent" not in first and first.endswith(".venv/bin/baton-dashboard --demo")


def test_command_one_serves_the_board_of_the_demo_from_a_clone(tmp_path):
    # What command 1 ends with, run from the clone (its demo folder moved to tmp_path so the test
    # leaves the clone alone): the board answers, with the demo project, and prints its URL.
    first, _ = readme_commands()
    options = first.split(".venv/bin/baton-dashboard", 1)[1].split()
    port = free_port()
    with open(tmp_path / "out", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "backend.dashboard.cli", *options, "--demo-dir",
                                 str(tmp_path / "demo"), "--port", str(port)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/", proc).status_code == 200
        projects = httpx.get(f"http://127.0.0.1:{port}/api/projects", timeout=10).json()
        assert "demo" in json.dumps(projects)
        assert f"open http://127.0.0.1:{port}/" in (tmp_path / "out").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
