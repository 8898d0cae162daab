"""What baton-init proposes for a repository: its test command and its base branch."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

from ..agent.basebranch import detect_base_branch

_MAKE_TEST_RE = re.compile(r"^test\s*:(?!=)", re.MULTILINE)  # a `test:` rule, not `test := value`
# What `npm init` writes: a test script that only fails.
_NPM_PLACEHOLDER = "no test specified"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _pytest_reason(repo: Path) -> str | None:
    if (repo / "pytest.ini").is_file():
        return "pytest.ini"
    if re.search(r"^\[tool\.pytest", _read(repo / "pyproject.toml"), re.MULTILINE) or \
            re.search(r"\bpytest\b", _read(repo / "pyproject.toml")):
        return "pyproject.toml mentions pytest"
    for name, section in (("setup.cfg", "tool:pytest"), ("tox.ini", "pytest")):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(_read(repo / name))
        except configparser.Error:
            continue
        if parser.has_section(section):
            return f"{name} [{section}]"
    if (repo / "conftest.py").is_file():
        return "conftest.py"
    for folder in ("tests", "test"):
        if (repo / folder).is_dir() and any((repo / folder).rglob("*.py")):
            return f"{folder}/ holds Python files"
    return None


def _npm_reason(repo: Path) -> str | None:
    try:
        data = json.loads(_read(repo / "package.json") or "null")
    except ValueError:
        return None
    scripts = data.get("scripts") if isinstance(data, dict) else None
    test = scripts.get("test") if isinstance(scripts, dict) else None
    if isinstance(test, str) and test.strip() and _NPM_PLACEHOLDER not in test:
        return "package.json has a test script"
    return None


def test_commands(repo: Path) -> list[tuple[str, str]]:
    """Every test command the repository's files suggest, as (command, why), best first:
    pytest, npm test, go test, cargo test, make test. Empty when none is recognised."""
    found = []
    if reason := _pytest_reason(repo):
        found.append(("pytest", reason))
    if reason := _npm_reason(repo):
        found.append(("npm test", reason))
    if (repo / "go.mod").is_file():
        found.append(("go test ./...", "go.mod"))
    if (repo / "Cargo.toml").is_file():
        found.append(("cargo test", "Cargo.toml"))
    for name in ("Makefile", "makefile", "GNUmakefile"):
        if _MAKE_TEST_RE.search(_read(repo / name)):
            found.append(("make test", f"{name} has a test target"))
            break
    return found


def base_branch(repo: Path, remote: str = "origin") -> str:
    """The branch the agent would detect at start (the remote's HEAD, else the current one)."""
    return detect_base_branch(repo, remote)
