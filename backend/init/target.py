"""TARGET -> the project's work tree: a path is adopted as it is, a URL is cloned first."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..gitrepo import GitError, has_commits, run_git, toplevel

_SCP_RE = re.compile(r"^[\w.-]+@[\w.-]+:")  # git@host:owner/repo (no scheme)
CLONE_TIMEOUT = 1800.0  # a big repository over a slow link; git itself reports network trouble


class TargetError(Exception):
    """A target that cannot be a project; `status` is the exit code (2: the person's input)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _bare_repository(path: Path) -> bool:
    if not path.is_dir():
        return False
    try:
        return run_git(["rev-parse", "--is-bare-repository"], path).strip() == "true"
    except GitError:
        return False


def is_url(target: str) -> bool:
    """A URL git clones (scheme://…, user@host:path), or a bare repository's folder (no work tree
    to adopt: it can only be cloned)."""
    if "://" in target or _SCP_RE.match(target):
        return True
    return _bare_repository(Path(target).expanduser())


def clone_name(url: str) -> str:
    """The folder `git clone URL` would make: the last path part without `.git`."""
    last = re.split(r"[/:]", url.rstrip("/"))[-1]
    return last.removesuffix(".git") or "project"


def adopt(path: Path) -> Path:
    """The top of the git work tree at `path`, which must have at least one commit."""
    path = path.expanduser()
    if not path.exists():
        raise TargetError(f"{path}: no such directory (give a repository path or a git URL)")
    if not path.is_dir():
        raise TargetError(f"{path}: not a directory")
    try:
        top = toplevel(path.resolve())
    except GitError:
        raise TargetError(f"{path}: not a git repository (run `git init` and commit something first)") from None
    if not has_commits(top):
        raise TargetError(f"{top}: the repository has no commits yet (commit something first: "
                          "tasks start from the base branch)")
    return top


def _origin_url(repo: Path) -> str | None:
    try:
        return run_git(["remote", "get-url", "origin"], repo).strip()
    except GitError:
        return None


def _same_source(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        url = url.rstrip("/").removesuffix(".git").removeprefix("file://")
        return str(Path(url).expanduser().resolve()) if "://" not in url and not _SCP_RE.match(url) else url
    return norm(a) == norm(b)


def clone(url: str, dest: Path) -> tuple[Path, bool]:
    """`dest` as a clone of `url`: cloned now (True), or already there from an earlier run
    (False). A folder holding anything else is refused, never overwritten."""
    dest = dest.expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        origin = _origin_url(dest) if (dest / ".git").exists() else None
        if origin is not None and _same_source(origin, url):
            return adopt(dest), False
        raise TargetError(f"{dest}: already exists and is not a clone of {url} (choose another --dir)")
    existed = dest.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)

    def undo() -> None:
        # A half-made or empty clone would block the next try; an empty folder the person made stays.
        shutil.rmtree(dest, ignore_errors=True)
        if existed:
            dest.mkdir(exist_ok=True)

    try:
        run_git(["clone", "--", url, str(dest)], dest.parent, timeout=CLONE_TIMEOUT)
    except GitError as exc:
        undo()
        raise TargetError(f"cannot clone {url}: {' '.join(exc.stderr.split()) or exc}", status=1) from None
    if not has_commits(dest):
        undo()
        raise TargetError(f"{url}: the repository is empty (push a first commit to it, then run baton-init again)")
    return adopt(dest), True
