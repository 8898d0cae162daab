"""Which GitHub repository a project's pull requests go to: agent.yaml `github.repo`, else the
one its remote points at on github.com (Enterprise hosts must be named in agent.yaml)."""

from __future__ import annotations

import re
from pathlib import Path

from ..gitrepo import GitError, run_git

_NAME = r"(?P<owner>[A-Za-z0-9_.-]{1,100})/(?P<name>[A-Za-z0-9_.-]{1,100}?)(?:\.git)?/?"
_PATTERNS = [
    re.compile(rf"git@github\.com:{_NAME}", re.IGNORECASE),
    re.compile(rf"(?:ssh|git\+ssh)://git@github\.com(?::22)?/{_NAME}", re.IGNORECASE),
    re.compile(rf"(?:https?|git)://(?:[^@/\s]+@)?(?:www\.)?github\.com(?::443)?/{_NAME}", re.IGNORECASE),
]


def repo_from_remote_url(url: str) -> str | None:
    """"owner/name" for a github.com remote URL (scp-like, ssh:// or https://), else None."""
    url = url.strip()
    for pattern in _PATTERNS:
        match = pattern.fullmatch(url)
        if match and match["owner"] not in (".", "..") and match["name"] not in (".", ".."):
            return f"{match['owner']}/{match['name']}"
    return None


def resolve_repo(config, project_dir: Path, remote: str) -> str | None:
    """`config` is AgentConfig.github: its `repo` wins; else the remote's URL on github.com."""
    if config.repo:
        return config.repo
    try:
        url = run_git(["remote", "get-url", "--", remote], project_dir)
    except GitError:
        return None
    return repo_from_remote_url(url)
