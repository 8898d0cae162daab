"""Typed wrappers over the git CLI: argument lists (never a shell), timeouts, clear errors."""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_TIMEOUT = 60.0


class GitError(Exception):
    def __init__(self, args: list[str], returncode: int | None, stderr: str, stdout: str = "") -> None:
        detail = stderr.strip() or f"exit status {returncode}"
        super().__init__(f"git {' '.join(args)}: {detail}")
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout


def run_git(
    args: list[str], cwd: Path, *, timeout: float = DEFAULT_TIMEOUT, env: dict[str, str] | None = None
) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise GitError(args, None, f"timed out after {timeout:g}s") from None
    except FileNotFoundError as exc:
        raise GitError(args, None, f"cannot run git: {exc}") from None
    if proc.returncode != 0:
        raise GitError(args, proc.returncode, proc.stderr, proc.stdout)
    return proc.stdout


def git_ok(args: list[str], cwd: Path, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True when the git command exits 0 (for questions such as "is X an ancestor of Y")."""
    try:
        run_git(args, cwd, timeout=timeout)
    except GitError as exc:
        if exc.returncode is None:
            raise
        return False
    return True


def toplevel(path: Path) -> Path:
    """The top folder of the work tree containing `path`. Raises GitError if not in one."""
    if not path.is_dir():
        raise GitError(["rev-parse"], None, f"{path} is not a directory")
    out = run_git(["rev-parse", "--show-toplevel"], path)
    return Path(out.strip()).resolve()


@dataclass(frozen=True)
class Worktree:
    path: str
    head: str | None
    branch: str | None
    bare: bool = False
    detached: bool = False
    locked: bool = False
    prunable: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def parse_worktree_porcelain(text: str) -> list[Worktree]:
    """Parse `git worktree list --porcelain`: blank-line separated records of `key [value]`."""
    result: list[Worktree] = []
    for block in text.strip().split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        if "worktree" not in fields:
            continue
        branch = fields.get("branch")
        result.append(
            Worktree(
                path=fields["worktree"],
                head=fields.get("HEAD"),
                branch=branch.removeprefix("refs/heads/") if branch else None,
                bare="bare" in fields,
                detached="detached" in fields,
                locked="locked" in fields,
                prunable="prunable" in fields,
            )
        )
    return result


def worktree_list(repo: Path) -> list[Worktree]:
    return parse_worktree_porcelain(run_git(["worktree", "list", "--porcelain"], repo))


@dataclass(frozen=True)
class Commit:
    sha: str
    message: str
    author: str
    date: str

    def to_dict(self) -> dict:
        return asdict(self)


_FIELD = "\x1f"
_RECORD = "\x1e"


def has_commits(repo: Path) -> bool:
    return git_ok(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], repo)


def recent_commits(repo: Path, count: int, ref: str = "HEAD") -> list[Commit]:
    """The newest `count` commits reachable from `ref` (subject line as message)."""
    if not has_commits(repo):
        return []
    out = run_git(
        ["log", f"--max-count={count}", f"--format=%H{_FIELD}%s{_FIELD}%an{_FIELD}%aI{_RECORD}", ref, "--"],
        repo,
    )
    commits = []
    for record in out.split(_RECORD):
        record = record.strip("\n")
        if not record:
            continue
        sha, message, author, date = record.split(_FIELD)
        commits.append(Commit(sha=sha, message=message, author=author, date=date))
    return commits


def ref_exists(repo: Path, ref: str) -> bool:
    return git_ok(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], repo)


def ensure_excluded(repo: Path, patterns: list[str], header: str) -> bool:
    """Make sure `.git/info/exclude` (shared by every worktree) lists `patterns`.
    Returns True when the file was changed."""
    git_dir = Path(run_git(["rev-parse", "--git-common-dir"], repo).strip())
    exclude = (repo / git_dir if not git_dir.is_absolute() else git_dir) / "info" / "exclude"
    try:
        current = exclude.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = ""
    missing = [p for p in patterns if p not in current.splitlines()]
    if not missing:
        return False
    exclude.parent.mkdir(parents=True, exist_ok=True)
    prefix = "" if not current or current.endswith("\n") else "\n"
    with open(exclude, "a", encoding="utf-8") as handle:
        handle.write(prefix + f"# {header}\n" + "".join(p + "\n" for p in missing))
    return True
