"""The base branch tasks start from and land on: configured (and checked), or detected.

It is resolved once, before anything that reads `config.base_branch` (ProjectGit, prompts,
/agent/commits, landing messages) is built, so they all see the same name. `git init` makes
`master` on some systems and `main` on others: guessing `main` broke a newcomer's first task.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import AgentConfig, ConfigError
from ..gitrepo import GitError, has_commits, ref_exists, run_git
from .settings import AgentSettings

FALLBACK = "main"


def _symbolic_ref(repo: Path, *args: str) -> str:
    try:
        return run_git(["symbolic-ref", "--quiet", *args], repo).strip()
    except GitError as exc:
        if exc.returncode is None:  # git itself could not run: not a question of the answer
            raise
        return ""


def _local_branches(repo: Path) -> list[str]:
    return run_git(["for-each-ref", "--format=%(refname:short)", "refs/heads"], repo).split()


def detect_base_branch(repo: Path, remote: str) -> str:
    """`<remote>/HEAD`'s branch if the clone recorded one that still exists, else the branch the
    project checkout is on (even one without commits yet); on a detached HEAD `main`, `master`
    or the only local branch, if there is one; else `main` (the CLI then refuses to start)."""
    prefix = f"refs/remotes/{remote}/"
    remote_head = _symbolic_ref(repo, f"{prefix}HEAD")
    # A default branch renamed upstream leaves `origin/HEAD` dangling after a prune: skip it.
    if remote_head.startswith(prefix) and len(remote_head) > len(prefix) and ref_exists(repo, remote_head):
        return remote_head[len(prefix):]
    current = _symbolic_ref(repo, "--short", "HEAD")
    if current:
        return current
    local = _local_branches(repo)
    return next((name for name in (FALLBACK, "master") if name in local), local[0] if len(local) == 1 else FALLBACK)


def resolve_settings(settings: AgentSettings) -> AgentSettings:
    """The same settings with `config.base_branch` filled in when it was left to detection."""
    if settings.config.base_branch is not None:
        return settings
    name = detect_base_branch(settings.project_dir, settings.config.remote)
    return replace(settings, config=settings.config.model_copy(update={"base_branch": name}))


def check_base_branch(repo: Path, config: AgentConfig, config_path: Path, detected: bool = False) -> None:
    """The base branch (configured, or `detected` when it was not) must exist as `<remote>/<name>`,
    or locally when the project has no such remote. A repository without commits is let through:
    the agent starts and health says `no_commits`."""
    name = config.base_branch
    if name is None or not has_commits(repo):
        return
    remote = config.remote
    on_remote = ref_exists(repo, f"refs/remotes/{remote}/{name}")
    if on_remote:
        return
    if ref_exists(repo, f"refs/heads/{name}"):
        if remote not in run_git(["remote"], repo).split():
            return
        # With a remote, tasks start from and land on `<remote>/<name>` (see ProjectGit.base_ref):
        # a branch not pushed yet (a new, empty remote) would fail every task at its first fetch.
        raise ConfigError(f"{config_path}: base_branch: branch {name!r} is not on remote {remote!r} "
                          f"(no refs/remotes/{remote}/{name}): push it first (`git push {remote} {name}`), "
                          f"or run `git fetch {remote}` if it is there already")
    refs = run_git(["for-each-ref", "--format=%(refname)", "refs/heads", f"refs/remotes/{config.remote}"], repo)
    listed = [ref.removeprefix("refs/heads/").removeprefix("refs/remotes/")
              for ref in refs.split() if not ref.endswith("/HEAD")]
    shown = ", ".join(listed[:20]) + (", …" if len(listed) > 20 else "") if listed else "none"
    if detected:
        raise ConfigError(f"{config_path}: base_branch: not set, and it cannot be detected (HEAD is detached; "
                          f"{name!r} does not exist in {repo}): set it (branches: {shown})")
    raise ConfigError(f"{config_path}: base_branch: branch {name!r} does not exist in {repo} (branches: {shown})")
