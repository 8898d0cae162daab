"""The real coding-agent CLIs for the end-to-end tests, installed from npm at pinned versions.

Each CLI goes into its own folder of the test cache (BATON_NPM_CACHE, default
~/.cache/baton-tests/<name>-<version>) once, and is reused afterwards. Outside CI a machine
without npm or without the registry skips the test, loudly; under CI=true (where .ci/run
installs npm) the end-to-end tests with the real CLIs must run, so the same problem fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from backend.models import TaskStatus
from support import submit_task, wait_for, wait_task_done

INSTALL_TIMEOUT = 600  # seconds: the first install downloads the CLI's native binary


def cache_dir() -> Path:
    return Path(os.environ.get("BATON_NPM_CACHE", Path.home() / ".cache" / "baton-tests"))


def folder_name(package: str, version: str) -> str:
    """`@anthropic-ai/claude-code` -> claude-code-<version>, `opencode-ai` -> opencode-<version>."""
    return f"{package.rsplit('/', 1)[-1].removesuffix('-ai')}-{version}"


def unavailable(package: str, reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"the real {package} CLI is required under CI=true: {reason}")
    pytest.skip(f"SKIPPED LOUDLY: the real {package} CLI is not available here: {reason}")


def npm_cli(package: str, version: str, binary: str) -> Path:
    """The path of `binary` from `package`@`version`, installed into the test cache if needed
    (skips or fails the calling test, per the policy above, when it cannot be)."""
    prefix = cache_dir() / folder_name(package, version)
    path = prefix / "node_modules" / ".bin" / binary
    if not path.exists():
        npm = shutil.which("npm")
        if npm is None:
            unavailable(package, "npm is not installed")
        prefix.mkdir(parents=True, exist_ok=True)
        try:
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"{package}@{version}"],
                capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            unavailable(package, f"npm install did not finish within {INSTALL_TIMEOUT} s (offline?)")
        if result.returncode != 0 or not path.exists():
            unavailable(package, f"npm install failed (offline?):\n{(result.stdout + result.stderr)[-2000:]}")
    # An installed CLI must be the pinned one: a test against another version proves nothing.
    shown = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and version in shown.stdout, (shown.stdout, shown.stderr)
    return path


def recording_wrapper(real: Path, folder: Path) -> tuple[Path, Path]:
    """An executable that appends its arguments (NUL-separated, one invocation per line) to a
    log and then becomes `real`: what Baton really passed on the command line can be checked
    after the process is gone. Returns (wrapper, log)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "argv.log"
    wrapper = folder / real.name
    wrapper.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" >> '{log}'\necho >> '{log}'\nexec '{real}' \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper, log


def files_containing(needle: str, *roots: Path) -> list[Path]:
    """Every file under `roots` whose bytes contain `needle`."""
    data = needle.encode()
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink() and data in path.read_bytes():
                    found.append(path)
            except FileNotFoundError:
                pass  # removed meanwhile (e.g. a store's temporary file): nothing left to leak
    return found


def wait_for_cleanup(agent, task_id: str) -> None:
    """A landed task's runtime folder (generated configs, the CLI's isolated state) is removed
    right after the landing is recorded; wait for that before looking at what is left."""
    runtime_dir = agent.settings.logs_dir / f"{task_id}.runtime"
    wait_for(lambda: not runtime_dir.exists(), timeout=30, what=f"{runtime_dir} to be removed")


def run_task(agent, body: dict, timeout: float = 240):
    """Submit `body` and wait for it; a task that did not complete fails with its error and the
    tail of the CLI's stderr (what the real CLI said is the only clue on a failure)."""
    task = wait_task_done(agent, submit_task(agent, body), timeout=timeout)
    stderr = agent.settings.logs_dir / f"{task.id}.stderr.log"
    assert task.status is TaskStatus.completed, (
        f"{task.error_reason}: {task.error_message}\n--- stderr ---\n"
        f"{stderr.read_text()[-3000:] if stderr.exists() else ''}")
    return task
