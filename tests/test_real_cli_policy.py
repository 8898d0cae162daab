"""The end-to-end test with the real Claude Code CLI needs npm and its registry. Where they are
missing it must skip loudly on a developer's machine, and fail under CI=true (where .ci/run
installs npm), never crash with an npm error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run_real_cli_test(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
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
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_real_claude_code.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm to play an offline npm")
def test_offline_npm_skips_loudly_outside_ci(tmp_path):
    result = run_real_cli_test(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "SKIPPED LOUDLY" in result.stdout
    assert "npm install failed" in result.stdout


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm to play an offline npm")
def test_offline_npm_fails_under_ci(tmp_path):
    result = run_real_cli_test(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "required under CI=true" in result.stdout and "1 error" in result.stdout
