"""config/projects.yaml validation and `baton-dashboard` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.config import ConfigError
from backend.dashboard.config import PALETTE, load_dashboard_config
from support import ROOT, free_port, make_repo, wait_for_http


def load(tmp_path: Path, text: str):
    path = tmp_path / "projects.yaml"
    path.write_text(text)
    return load_dashboard_config(path)


def test_missing_file_means_no_projects(tmp_path):
    assert load_dashboard_config(tmp_path / "nope.yaml").projects == []


def test_defaults_for_name_and_colour(tmp_path):
    config = load(tmp_path, "projects:\n  - id: one\n    path: /x\n  - id: two\n    agent_url: http://127.0.0.1:9100/\n")
    assert [(p.name, p.color) for p in config.projects] == [("one", PALETTE[0]), ("two", PALETTE[1])]
    assert config.projects[1].agent_url == "http://127.0.0.1:9100"
    assert config.agent_timeout_seconds == 2.0


@pytest.mark.parametrize(("text", "expected"), [
    ("projects:\n  - id: a\n    path: /x\n  - id: a\n    path: /y\n", "projects[1] (id 'a'): id: duplicate id"),
    ("projects:\n  - id: a\n    agent_url: ftp://x\n", "projects[0] (id 'a'): agent_url: 'ftp://x' is not an http(s)"),
    ("projects:\n  - id: a\n    agent_url: http://h:99999\n", "projects[0] (id 'a'): agent_url: 'http://h:99999' has an invalid port"),
    ("projects:\n  - id: a\n    path: /x\n    color: blue\n", "projects[0] (id 'a'): color: 'blue' is not a colour"),
    ("projects:\n  - id: a\n    path: /x\n    colour: '#fff'\n", "projects[0] (id 'a'): colour: unknown key"),
    ("projects:\n  - id: Big\n    path: /x\n", "projects[0] (id 'Big'): id: must be 1-40 characters"),
    ("projects:\n  - id: a\n", "projects[0] (id 'a'): (entry): needs agent_url"),
    ("agent_timeout_seconds: 0\n", "agent_timeout_seconds: Input should be greater than 0"),
    ("projects: {a: 1}\n", "projects: Input should be a valid list"),
    ("refresh: 3\n", "refresh: unknown key"),
    ("projects:\n  - id: a\n    agent_url: http://u:pw@h:1\n", "projects[0] (id 'a'): agent_url: must not contain credentials"),
    ("projects:\n  - id: a\n    path: /x\n    token: $BATON_NO_SUCH_VARIABLE\n",
     "projects[0] (id 'a'): token: environment variable BATON_NO_SUCH_VARIABLE is not set"),
])
def test_problems_name_file_entry_and_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert str(info.value).startswith(str(tmp_path / "projects.yaml"))
    assert expected in str(info.value)


def test_token_values_are_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "projects:\n  - id: a\n    path: /x\n    token: 123456789\n")
    assert "123456789" not in str(info.value) and "token" in str(info.value)


def run_dashboard(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend.dashboard.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          stdin=subprocess.DEVNULL)


def test_invalid_config_exits_2_with_the_message(tmp_path):
    (tmp_path / "projects.yaml").write_text("projects:\n  - id: a\n    path: /x\n    color: nope\n")
    result = run_dashboard(["--config", "projects.yaml", "--port", str(free_port())], tmp_path)
    assert result.returncode == 2
    assert "projects[0] (id 'a'): color: 'nope' is not a colour" in result.stderr


def test_non_loopback_without_token_is_refused(tmp_path):
    result = run_dashboard(["--host", "0.0.0.0", "--config", "missing.yaml"], tmp_path)
    assert result.returncode == 2 and "without a token" in result.stderr


def test_serves_and_stops_cleanly(tmp_path):
    repo = make_repo(tmp_path, "p")
    (tmp_path / "projects.yaml").write_text(f"projects:\n  - id: p\n    path: {repo}\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml",
                             "--port", str(port)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/health", proc)
        projects = httpx.get(f"http://127.0.0.1:{port}/api/projects").json()["projects"]
        assert [p["id"] for p in projects] == ["p"] and projects[0]["healthy"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_reload_mode_serves_the_same_configuration(tmp_path):
    repo = make_repo(tmp_path, "r")
    (tmp_path / "projects.yaml").write_text(f"projects:\n  - id: r\n    path: {repo}\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "backend.dashboard.cli", "--reload", "--config", "projects.yaml",
                             "--port", str(port)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/health", proc)
        assert [p["id"] for p in httpx.get(f"http://127.0.0.1:{port}/api/projects").json()["projects"]] == ["r"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the reloader and the server it started
        proc.wait(timeout=30)
