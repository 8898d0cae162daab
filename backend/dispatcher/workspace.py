"""Git work for the dispatcher: the project's base branch, and each task's worktree and branch.

Every command is an argument list run by backend.gitrepo. Baton never checks out, resets or
merges in the user's own checkout, with one exception the user asked for: when the base branch
is checked out there and clean, a landed commit fast-forwards it.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..attachments import WORKTREE_DIR, AttachmentStore
from ..config import AgentConfig
from ..gitrepo import GitError, Worktree, git_ok, run_git, worktree_list
from ..storeview import worktree_source

log = logging.getLogger(__name__)

BRANCH_PREFIX = "task/"
FALLBACK_IDENTITY = {"name": "Baton", "email": "baton@localhost"}


@dataclass
class PushResult:
    ok: bool
    rejected: bool = False  # the base moved: fetch, rebase, test and try again
    message: str = ""


FETCH_TRIES = 4


class ProjectGit:
    """The project repository as the dispatcher sees it."""

    def __init__(self, project: Path, config: AgentConfig) -> None:
        self.project = project
        self.config = config
        self.base = config.base_branch
        self.remote = config.remote
        self.worktrees_dir = project / "worktrees"
        self._fresh_at = float("-inf")  # when our view of the remote base was last refreshed
        # Worktree and branch administration, one at a time: `worktree add` writes
        # .git/worktrees/<id>/ in steps, and a concurrent prune, remove, `branch -D` or checkout
        # reading it half-made fails ("failed to read .git/worktrees/<id>/commondir"). Held only
        # around those commands, never around a fetch, a push or an agent run.
        self.admin_lock = threading.RLock()

    @cached_property
    def has_remote(self) -> bool:
        return self.remote_present()

    def remote_present(self) -> bool:
        """Asked now (has_remote is asked once per process)."""
        return self.remote in run_git(["remote"], self.project).split()

    @property
    def base_ref(self) -> str:
        if self.has_remote:
            return f"refs/remotes/{self.remote}/{self.base}"
        return f"refs/heads/{self.base}"

    @cached_property
    def identity_env(self) -> dict[str, str]:
        """Commits Baton makes need an identity; use the project's, else Baton's own."""
        env: dict[str, str] = {}
        for key in ("name", "email"):
            try:
                run_git(["config", f"user.{key}"], self.project)
            except GitError:
                env[f"GIT_AUTHOR_{key.upper()}"] = FALLBACK_IDENTITY[key]
                env[f"GIT_COMMITTER_{key.upper()}"] = FALLBACK_IDENTITY[key]
        return env

    def git(self, args: list[str], cwd: Path | None = None, **kw) -> str:
        return run_git(args, cwd or self.project, env={**self.identity_env, **kw.pop("env", {})}, **kw)

    def fetch_base(self, max_age: float = 0.0) -> None:
        """Update our view of the remote base, unless it was refreshed less than `max_age`
        seconds ago (several tasks starting together share one fetch)."""
        if not self.has_remote or time.monotonic() - self._fresh_at < max_age:
            return
        self.fetch(f"+refs/heads/{self.base}:refs/remotes/{self.remote}/{self.base}")
        self._fresh_at = time.monotonic()

    def fetch(self, refspec: str) -> None:
        """`git fetch` of one refspec from the remote. Not under admin_lock (a fetch may take long),
        so it may meet a worktree half made: `worktree add` writes a HEAD of zeros first, and the
        fetch's connectivity check, which reads every worktree's HEAD, dies on it ("bad object
        worktrees/<id>/HEAD"). That fetch is simply tried again."""
        for attempt in range(FETCH_TRIES):
            try:
                self.git(["fetch", "--quiet", "--no-tags", self.remote, refspec])
                return
            except GitError as exc:
                if attempt + 1 == FETCH_TRIES or "bad object worktrees/" not in exc.stderr:
                    raise
                time.sleep(0.05 * (attempt + 1))  # the `worktree add` is done in milliseconds

    def rev(self, ref: str) -> str:
        return self.git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"]).strip()

    def ref_exists(self, ref: str) -> bool:
        return git_ok(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], self.project)

    def is_ancestor(self, older: str, newer: str) -> bool:
        return git_ok(["merge-base", "--is-ancestor", older, newer], self.project)

    def push_base(self, cwd: Path, sha: str, expected: str | None = None) -> PushResult:
        """Move the remote base to `sha`, a descendant of `expected`. With `expected` the push is
        an exact compare-and-swap (`--force-with-lease`): it lands only if the remote base is
        still the very commit Baton rebased onto and tested on, whatever our remote-tracking ref
        says (a task's process may have moved that). Never a force push of anything else."""
        lease = [f"--force-with-lease=refs/heads/{self.base}:{expected}"] if expected else []
        try:
            self.git(["push", "--quiet", *lease, self.remote, f"{sha}:refs/heads/{self.base}"], cwd)
        except GitError as exc:
            text = exc.stderr
            # All of these mean "the base moved (or is moving) under us": fetch, rebase, retry.
            # "cannot lock ref" is what a push racing another push to the same ref gets.
            rejected = any(w in text for w in ("non-fast-forward", "fetch first", "[rejected]", "stale info",
                                               "cannot lock ref", "failed to update ref"))
            return PushResult(ok=False, rejected=rejected, message=text.strip()[-2000:])
        # git push also moved refs/remotes/<remote>/<base>: our view is current.
        self._fresh_at = time.monotonic()
        return PushResult(ok=True)

    def advance_local_base(self, sha: str) -> str | None:
        """Bring the local base branch to `sha` if that is a fast-forward and touches no one's
        uncommitted work. Returns why it was left alone, or None."""
        ref = f"refs/heads/{self.base}"
        holder = next((Path(w.path) for w in self.worktrees() if w.branch == self.base), None)
        if holder is not None:
            dirty = self.git(["status", "--porcelain", "--untracked-files=no"], holder).strip()
            if dirty:
                return f"{self.base} is checked out in {holder} with uncommitted changes; left it as it is"
            try:
                self.git(["merge", "--ff-only", "--quiet", sha], holder)
            except GitError as exc:
                return f"could not fast-forward {self.base} in {holder}: {exc.stderr.strip()[-500:]}"
            return None
        old = self.rev(ref) if self.ref_exists(ref) else None
        if old is not None and not self.is_ancestor(old, sha):
            return f"local {self.base} has commits that are not in the landed history; left it as it is"
        try:
            self.git(["update-ref", ref, sha, *([old] if old else [])])
        except GitError as exc:
            return f"could not move local {self.base}: {exc.stderr.strip()[-500:]}"
        return None

    def delete_branch(self, branch: str, *, maybe_pushed: bool = True) -> None:
        """Delete a landed task branch, locally and on the remote if it was ever pushed there.
        `maybe_pushed=False` (a first run that never failed) skips looking for remote copies."""
        local, tracking = f"refs/heads/{branch}", f"refs/remotes/{self.remote}/{branch}"
        if not maybe_pushed:
            with self.admin_lock:
                self.git(["branch", "-D", "--quiet", branch])
            return
        present = set(self.git(["for-each-ref", "--format=%(refname)", local, tracking]).split())
        if local in present:
            with self.admin_lock:
                self.git(["branch", "-D", "--quiet", branch])
        if self.has_remote and tracking in present:
            try:
                self.git(["push", "--quiet", self.remote, "--delete", branch])
            except GitError as exc:
                log.warning("could not delete remote branch %s: %s", branch, exc)
            with self.admin_lock:
                self.git(["update-ref", "-d", tracking])

    def push_branch(self, branch: str) -> str | None:
        """Publish a kept task branch (its own ref only; force is fine there, never on base)."""
        if not self.has_remote:
            return None
        try:
            self.git(["push", "--quiet", "--force", self.remote, f"refs/heads/{branch}:refs/heads/{branch}"])
            self.git(["update-ref", f"refs/remotes/{self.remote}/{branch}", f"refs/heads/{branch}"])
        except GitError as exc:
            return str(exc)
        return None

    def prune_worktrees(self) -> None:
        with self.admin_lock:
            self.git(["worktree", "prune"])

    def worktrees(self) -> list[Worktree]:
        # `worktree list` reads every .git/worktrees/<id>/ too.
        with self.admin_lock:
            return worktree_list(self.project)


class WorkspaceInTheWay(Exception):
    """A WORKFLOW.md task's workspace path holds something that is not its kept worktree: Baton
    never deletes what it did not make (a person's folder, another branch's worktree, a file)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is in the way: a folder Baton did not make; move it away")
        self.path = path


class Workspace:
    """One task's worktree on branch `task/<id>`: `worktrees/<id>`, or `path` (a WORKFLOW.md
    task's, `<workspace.root>/<workspace key>`, kept between the task's runs)."""

    def __init__(self, git: ProjectGit, task_id: str, path: Path | None = None) -> None:
        self.git = git
        self.task_id = task_id
        self.path = path if path is not None else git.worktrees_dir / task_id
        self.branch = BRANCH_PREFIX + task_id
        self.placed: list[str] | None = None  # known once place_files ran in this process
        self.created_now = False  # create() made the folder (False: it reused the one there)

    def _g(self, args: list[str], **kw) -> str:
        return self.git.git(args, self.path, **kw)

    # ----- creation -----------------------------------------------------------------------

    def create(self, earlier_branch: bool, reuse: bool = False) -> bool:
        """Make the worktree. `earlier_branch`: an earlier run may have left task/<id> (locally
        or on the remote) to continue from. Returns True when continuing such a branch.
        `reuse`: a worktree of this task already there, on task/<id>, is kept as it is
        (`created_now` False); anything else in its place raises WorkspaceInTheWay. Without
        `reuse` (worktrees/<id>, Baton's own folder) whatever is there is removed and made anew."""
        if reuse:
            if self._reusable() or self._moved_here():
                self.created_now = False
                return True
            if os.path.lexists(self.path):
                raise WorkspaceInTheWay(self.path)
        self.created_now = True
        if not earlier_branch and not self.path.exists():
            try:
                self._add_new()
                return False
            except GitError:
                pass  # a stale registration or branch: take the careful path below
        if self.path.exists() or self.registered():
            self.remove()
        self.git.prune_worktrees()
        local = f"refs/heads/{self.branch}"
        if not self.git.ref_exists(local) and self.git.has_remote:
            # A failed run's branch may survive only on the remote.
            with self.git.admin_lock:  # a fetch into a branch reads every worktree's folder too
                git_ok(["fetch", "--quiet", "--no-tags", self.git.remote, f"+{local}:{local}"], self.git.project)
        if self.git.ref_exists(local):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.git.admin_lock:
                self.git.git(["worktree", "add", "--quiet", str(self.path), self.branch])
            return True
        self._add_new()
        return False

    def _reusable(self) -> bool:
        """A worktree git knows at this path with task/<id> checked out. (Detached or on another
        branch it may be another task's of the same issue: not this one's to take over.)"""
        if not self.path.is_dir():
            return False
        here = self.path.resolve()
        found = next((w for w in self.git.worktrees() if Path(w.path).resolve() == here), None)
        if found is None or found.prunable:
            return False
        return found.branch == self.branch or (found.detached and self._rebasing_own_branch())

    def _rebasing_own_branch(self) -> bool:
        """Detached because a rebase of task/<id> stopped half way (a landing interrupted):
        still this task's worktree (the next run's settling aborts the rebase)."""
        try:
            git_dir = self.git_dir()
        except GitError:
            return False
        for folder in ("rebase-merge", "rebase-apply"):
            try:
                name = (git_dir / folder / "head-name").read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                continue
            if name == f"refs/heads/{self.branch}":
                return True
        return False

    @staticmethod
    def kept_at(git: ProjectGit, task_id: str, recorded: str | None) -> Path | None:
        """The task's recorded worktree when it is a kept WORKFLOW.md workspace (outside
        worktrees/): git registers it, on task/<id>. A run without the workflow reuses it, since
        the branch cannot be checked out a second time in worktrees/<id>."""
        if not recorded or not Path(recorded).is_absolute():
            return None
        path = Path(recorded)
        if path.parent == git.worktrees_dir or not path.is_dir():
            return None
        here = path.resolve()
        branch = BRANCH_PREFIX + task_id
        found = any(Path(w.path).resolve() == here and w.branch == branch and not w.prunable for w in git.worktrees())
        return path if found else None

    def has_own_commits(self) -> bool:
        """Whether task/<id> has commits that are not on the base."""
        return self._g(["rev-list", "--count", f"{self.git.base_ref}..refs/heads/{self.branch}"]).strip() != "0"

    def _moved_here(self) -> bool:
        """This task's worktree kept somewhere else (WORKFLOW.md's workspace.root was edited since
        its last run) is moved here, as it is: its branch cannot be checked out twice, and what
        after_create made in it stays. False when there is none, or it cannot be moved."""
        if os.path.lexists(self.path):
            return False  # something is in its place: the careful path in create() deals with it
        here = self.path.resolve()
        found = next((w for w in self.git.worktrees() if w.branch == self.branch and not w.prunable
                      and Path(w.path).resolve() != here and Path(w.path).is_dir()), None)
        if found is None:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.git.admin_lock:
                self.git.git(["worktree", "move", found.path, str(self.path)])
        except GitError as exc:
            log.warning("task %s: could not move its worktree %s to %s: %s", self.task_id, found.path, self.path, exc)
            return False
        log.info("task %s: moved its worktree %s to %s", self.task_id, found.path, self.path)
        return True

    def _add_new(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.git.admin_lock:
            self.git.git(["worktree", "add", "--quiet", "--no-track", "-b", self.branch, str(self.path),
                          self.git.base_ref])

    def registered(self) -> bool:
        return any(Path(w.path) == self.path for w in self.git.worktrees())

    def place_files(self) -> None:
        """Link `symlink_files` and copy `copy_files` from the project into the worktree."""
        project = self.git.project
        placed = list(self.git.config.symlink_files)
        for rel in self.git.config.symlink_files:
            # The live task store is never linked: the agent gets its read-only, fresh copy.
            source, target = worktree_source(project, rel), self.path / rel
            if not source.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(source)
        for rel in self.git.config.copy_files:
            source, target = project / rel, self.path / rel
            # A tracked file is already there at its committed version; the user's copy may
            # hold uncommitted edits that must not travel into a task.
            if source.is_file() and not target.exists() and not target.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                placed.append(rel)
        self.placed = placed
        self.place_attachments()

    def attachment_paths(self) -> list[str]:
        """Where the task's attached files go in the worktree (data/attachments/<id>/ as it is now)."""
        names = AttachmentStore(self.git.project / "data").stored_names(self.task_id)
        return [f"{WORKTREE_DIR}/{name}" for name in names]

    def place_attachments(self) -> list[str]:
        """Copy the task's attached files to .baton/attachments/ (those missing or changed since:
        an upload while the task runs reaches its next turn) and count them among the placed
        paths. Returns their paths. Written through folder descriptors that never follow a link:
        whatever the agent made of .baton/, Baton writes nothing outside the worktree."""
        rels = self.attachment_paths()
        if rels:
            source = AttachmentStore(self.git.project / "data").folder(self.task_id)
            _copy_into(self.path, WORKTREE_DIR.split("/"), source, [r.rsplit("/", 1)[1] for r in rels])
        if self.placed is not None:
            self.placed += [r for r in rels if r not in self.placed]
        return rels

    def _placed(self, fork: str | None = None) -> list[str]:
        if self.placed is not None:
            return self.placed
        return self.placed_paths(fork or self.fork_point())

    def placed_paths(self, fork: str) -> list[str]:
        """What Baton puts in a worktree: every linked path, and copies of project files that
        the task's starting commit does not track. None of it may reach a landed commit.
        (Recomputed this way after a restart; place_files records the same list.)"""
        copies = self.git.config.copy_files
        tracked = set(self._g(["ls-tree", "-r", "--name-only", fork, "--", *copies]).split("\n")) if copies else set()
        copied = [p for p in copies if p not in tracked and (self.git.project / p).is_file()]
        return [*self.git.config.symlink_files, *copied, *self.attachment_paths()]

    # ----- after the agent ----------------------------------------------------------------

    def fork_point(self) -> str:
        return self._g(["merge-base", "HEAD", self.git.base_ref]).strip()

    def head(self) -> str:
        return self._g(["rev-parse", "HEAD"]).strip()

    def git_dir(self) -> Path:
        """The worktree's own git folder. A linked worktree's `.git` is a file saying
        `gitdir: <path>` (gitrepository-layout); read it rather than start a git process."""
        try:
            text = (self.path / ".git").read_text(encoding="utf-8").strip()
            if text.startswith("gitdir: "):
                return (self.path / text.removeprefix("gitdir: ")).resolve()
        except (OSError, UnicodeDecodeError):
            pass
        return Path(self._g(["rev-parse", "--absolute-git-dir"]).strip())

    def _head_ref(self, git_dir: Path) -> str:
        """What HEAD points at ("" when detached), from the HEAD file when it is plain."""
        try:
            text = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
            if text.startswith("ref: "):
                return text.removeprefix("ref: ")
            if len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text):
                return ""
        except (OSError, UnicodeDecodeError):
            pass
        try:
            return self._g(["symbolic-ref", "-q", "HEAD"]).strip()
        except GitError:
            return ""

    def remove_stale_index_lock(self) -> bool:
        """Remove this worktree's index.lock. Only call when no process of the task runs."""
        lock = self.git_dir() / "index.lock"
        if lock.exists():
            lock.unlink()
            return True
        return False

    def _settle_head(self) -> None:
        """Leave the worktree on task/<id> with no operation half done, keeping every commit.

        An agent stopped in the middle of a rebase or merge has its half-done state aborted
        (the branch still holds everything from before it). Commits made on a detached HEAD
        or another branch are brought onto task/<id> when they extend it, and otherwise kept
        on a branch of their own so nothing is lost."""
        git_dir = self.git_dir()
        if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
            self._g(["rebase", "--abort"])
        for marker, command in (("MERGE_HEAD", "merge"), ("CHERRY_PICK_HEAD", "cherry-pick"), ("REVERT_HEAD", "revert")):
            if (git_dir / marker).exists():
                self._g([command, "--abort"])
        ref = f"refs/heads/{self.branch}"
        head_ref = self._head_ref(git_dir)
        if head_ref == ref:
            return
        if head_ref:
            # On another branch (the base, say): Baton never commits to it or moves it; carry
            # on from a detached HEAD (same commit, files untouched). A ref guard puts the
            # branch itself back if the agent moved it.
            self._g(["checkout", "-q", "--detach"])
        self.commit_leftovers(f"wip({self.task_id}): work left outside {self.branch}", self._placed())
        head, tip = self.head(), self.git.rev(ref)
        if self.git.is_ancestor(tip, head):
            self._g(["update-ref", ref, head, tip])
        else:
            aside = f"{self.branch}-saved-{head[:8]}"
            with self.git.admin_lock:
                self._g(["branch", "-f", aside, head])
            log.warning("task %s: commits outside %s kept on %s", self.task_id, self.branch, aside)
        with self.git.admin_lock:  # checking a branch out reads every worktree's folder
            self._g(["checkout", "-q", self.branch])

    def status_text(self) -> str:
        """Everything `git status` sees in the worktree (tracked changes and untracked files, not
        ignored ones): equal before and after a turn means the turn changed no file."""
        return self._g(["status", "--porcelain=v1", "-z", "--untracked-files=all"])

    def on_branch(self) -> bool:
        """True when the worktree has task/<id> checked out (not another branch, not detached)."""
        return self._head_ref(self.git_dir()) == f"refs/heads/{self.branch}"

    def settle_head(self) -> None:
        """Public form of _settle_head: bring commits the agent made elsewhere onto task/<id>."""
        self._settle_head()

    def save_work(self, message: str) -> tuple[bool, bool, bool]:
        """Commit what the worktree holds and keep Baton's files out of the branch's history.
        Returns (committed leftovers, rewrote history, branch has commits of its own)."""
        self._settle_head()
        placed = self._placed()
        committed = self.commit_leftovers(message, placed)
        # One walk over the task's commits (those not on the base) answers both questions. Names as
        # they are (no octal quoting of non-ASCII): an attached file may be called résumé.pdf.
        touched = self._g(["-c", "core.quotePath=false", "log", "--format=%x00", "--name-only",
                           f"{self.git.base_ref}..HEAD"])
        has_commits = "\x00" in touched
        stripped = bool(set(placed) & set(touched.split("\n"))) and self.strip_placed(self.fork_point(), placed)
        if stripped:
            has_commits = self._g(["rev-list", "--count", f"{self.git.base_ref}..HEAD"]).strip() != "0"
        return committed, stripped, has_commits

    def commit_leftovers(self, message: str, placed: list[str]) -> bool:
        """Commit whatever the agent left uncommitted, minus Baton's own files."""
        self._g(["add", "-A"])
        if placed:
            # Back to their state in HEAD: staged only if the branch already tracks them.
            self._g(["reset", "-q", "HEAD", "--", *placed])
        try:
            self._g(["commit", "--quiet", "--no-verify", "-m", message])
        except GitError as exc:
            if "nothing to commit" in exc.stdout or "nothing added to commit" in exc.stdout:
                return False
            raise
        return True

    def strip_placed(self, fork: str, placed: list[str]) -> bool:
        """Rewrite the task's commits so that no placed path differs from the starting commit,
        even if the agent committed them itself (`git add -A`, `-f`, or a .gitignore that lets
        them through). Returns True when history was rewritten."""
        # Paths as they are: literal pathspecs (a name may hold `[`), NUL-separated unquoted
        # listings (a name may be résumé.pdf).
        literal = ["--literal-pathspecs", "-c", "core.quotePath=false"]
        if not placed or not self._g([*literal, "log", "--format=%H", f"{fork}..HEAD", "--", *placed]).strip():
            return False
        originals = {}
        for record in self._g([*literal, "ls-tree", "-r", "-z", fork, "--", *placed]).split("\0"):
            if not record:
                continue
            meta, path = record.split("\t", 1)
            mode, _kind, blob = meta.split()
            originals[path] = f"{mode},{blob},{path}"
        old_head = self.head()
        commits = self._g(["rev-list", "--reverse", "--topo-order", f"{fork}..HEAD"]).split()
        parent, parent_tree = fork, self._g(["rev-parse", f"{fork}^{{tree}}"]).strip()
        with tempfile.TemporaryDirectory(prefix="baton-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            for sha in commits:
                self._g(["read-tree", sha], env=env)
                for path in placed:
                    if path in originals:
                        self._g(["update-index", "--add", "--cacheinfo", originals[path]], env=env)
                    else:
                        self._g(["update-index", "--force-remove", "--", path], env=env)
                tree = self._g(["write-tree"], env=env).strip()
                if tree == parent_tree:
                    continue  # the commit only touched Baton's files
                name, email, date, message = self._g(
                    ["log", "-1", "--format=%an%x00%ae%x00%aI%x00%B", sha]).split("\x00", 3)
                author = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
                parent = self._g(["commit-tree", tree, "-p", parent, "-m", message.rstrip("\n") or "(no message)"],
                                 env=author).strip()
                parent_tree = tree
        self._g(["update-ref", f"refs/heads/{self.branch}", parent, old_head])
        self._g(["reset", "-q"])  # index follows the new HEAD; files in the worktree stay as they are
        return True

    def rebase(self, onto: str, upstream: str | None = None) -> list[str] | None:
        """Rebase the task branch onto `onto` (with `upstream`: only the commits after it, i.e.
        `git rebase --onto <onto> <upstream>`). Returns None on success, else the conflicting
        files (the rebase is aborted, leaving the branch as it was). Any other failure raises."""
        # Baton's links and copies step aside: the base may have started tracking one of those
        # paths, and an untracked file in the way stops a rebase.
        self._unplace()
        try:
            try:
                args = ["--onto", onto, upstream] if upstream else [onto]
                self._g(["rebase", "--quiet", "--no-autostash", *args])
                return None
            except GitError:
                conflicts = self._g(["diff", "--name-only", "--diff-filter=U"]).split()
                git_ok(["rebase", "--abort"], self.path)
                if not conflicts:
                    raise
                return conflicts
        finally:
            self.place_files()

    def reset_branch(self, sha: str) -> None:
        """Move task/<id> (checked out here, nothing of the agent's uncommitted) back to `sha`."""
        self._g(["reset", "-q", "--hard", sha])
        self._g(["clean", "-fdq"])
        self.place_files()

    def _unplace(self) -> None:
        """Remove Baton's links and copies. Each path is reached through folder descriptors
        opened without following links (as _copy_into writes them): an agent that swaps a folder
        on the way (.baton/attachments) for a link, even between a check and the unlink, makes
        Baton remove nothing outside the worktree."""
        links = set(self.git.config.symlink_files)
        for rel in self.placed or []:
            *folders, name = Path(rel).parts
            fds: list[int] = []
            try:
                fds.append(os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                for folder in folders:
                    fds.append(os.open(folder, _DIR_FLAGS, dir_fd=fds[-1]))
                mode = os.stat(name, dir_fd=fds[-1], follow_symlinks=False).st_mode
                # A link Baton made; an untracked copy it made (or whatever file or link the agent
                # put in its place: unlink removes the entry in this folder, never a link's target).
                if stat.S_ISLNK(mode) if rel in links else not stat.S_ISDIR(mode):
                    os.unlink(name, dir_fd=fds[-1])
            except OSError:
                pass  # gone, or a folder on the way is not a real folder: nothing of Baton's there
            finally:
                for fd in reversed(fds):
                    os.close(fd)

    # ----- cleanup ------------------------------------------------------------------------

    def remove(self) -> None:
        try:
            with self.git.admin_lock:
                self.git.git(["worktree", "remove", "--force", "--force", str(self.path)])
        except GitError:
            if self.path.exists():
                # rmtree unlinks symlinks, it does not follow them into the project.
                shutil.rmtree(self.path, ignore_errors=True)
            self.git.prune_worktrees()


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(parent: int, name: str) -> int:
    """The folder `name` in `parent`, made if missing; whatever else stands there (a file, a
    link the agent made) is removed first."""
    for _ in range(3):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(name, 0o755, dir_fd=parent)
        except OSError:  # ENOTDIR or ELOOP: not a real folder
            os.unlink(name, dir_fd=parent)
    raise OSError(f"cannot make the folder {name}")


def _copy_into(root: Path, folders: list[str], source: Path, names: list[str]) -> None:
    """Copy source/<name> to root/<folders...>/<name> for each name, skipping copies that are
    already the same (size and modification time, which the copy keeps)."""
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for folder in folders:
            fds.append(_open_dir(fds[-1], folder))
        target = fds[-1]
        for name in names:
            original = os.stat(source / name)
            try:
                there = os.stat(name, dir_fd=target, follow_symlinks=False)
                if (stat.S_ISREG(there.st_mode) and there.st_size == original.st_size
                        and there.st_mtime_ns == original.st_mtime_ns):
                    continue
                if stat.S_ISDIR(there.st_mode):
                    shutil.rmtree(name, dir_fd=target)
            except FileNotFoundError:
                pass
            temporary = f".{name}.baton-tmp"
            try:
                os.unlink(temporary, dir_fd=target)
            except FileNotFoundError:
                pass
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                          dir_fd=target)
            with os.fdopen(out, "wb") as writer, open(source / name, "rb") as reader:
                shutil.copyfileobj(reader, writer, 1 << 20)
                writer.flush()
                os.utime(writer.fileno(), ns=(original.st_atime_ns, original.st_mtime_ns))
            # rename() replaces a link in the way, never what it points to.
            os.replace(temporary, name, src_dir_fd=target, dst_dir_fd=target)
    finally:
        for fd in reversed(fds):
            os.close(fd)
