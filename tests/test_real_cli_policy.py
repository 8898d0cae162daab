"""The end-to-end tests with the real CLIs (Claude Code, Codex, OpenCode) need npm and its
registry. Where they are missing each must skip loudly on a developer's machine, and fail under
CI=true (where .ci/run installs npm), never crash with an npm error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# Each real-CLI test file and the npm package it installs.
REAL_CLI_TESTS = [
    ("tests/test_real_claude_code.py", "@anthropic-ai/claude-code"),
    ("tests/test_real_codex.py", "@openai/codex"),
    ("tests/test_real_opencode.py", "opencode-ai"),
]
cli_tests = pytest.mark.parametrize(("test_file", "package"), REAL_CLI_TESTS, ids=[p for _, p in REAL_CLI_TESTS])


def run_real_cli_test(tmp_path: Path, ci: bool, test_file: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update({
        "BATON_NPM_CACHE": str(tmp_path / "empty-cache"),  # nothing installed yet
        # An npm that is present but cannot reach any registry, and says so quickly.
        "npm_config_registry": "http://127.0.0.1:9/",
        "npm_config_fetch_retries": "0",
        "npm_config_fetch_timeout": "2000",
        "npm_config_cache": str(tmp_path / "npm-cache"),
    })
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test_file],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm to play an offline npm")
@cli_tests
def test_offline_npm_skips_loudly_outside_ci(tmp_path, test_file, package):
    result = run_real_cli_test(tmp_path, ci=False, test_file=test_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b\d+ skipped\b", result.stdout) and "passed" not in result.stdout, result.stdout
    assert f"SKIPPED LOUDLY: the real {package} CLI" in result.stdout
    assert "npm install failed" in result.stdout


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm to play an offline npm")
@cli_tests
def test_offline_npm_fails_under_ci(tmp_path, test_file, package):
    result = run_real_cli_test(tmp_path, ci=True, test_file=test_file)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the real {package} CLI is required under CI=true" in result.stdout
    assert re.search(r"\b\d+ errors?\b", result.stdout) and "passed" not in result.stdout, result.stdout
