"""Which refs a task's own processes moved, and putting back the ones they must not touch.

The coding agent and the test command run with a git hooks folder of Baton's, given through
the environment (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` = core.hooksPath,
git >= 2.31). Its `reference-transaction` hook appends `<old> <new> <ref>` to
`logs/<id>.refs.log` for every ref of this project those processes update (the real old value,
read while the transaction is prepared: git passes zeros for forced updates). Every hook then
runs the repository's own hook of the same name, so the project's hooks keep working.

Baton's own git commands and the user's shell never carry that environment, so a line in the
log is the task's doing: refs the user moves meanwhile are never touched (invariant 5).

Protected: every ref but the task's own `refs/heads/task/<id>` and per-worktree refs
(bisect, rewritten, worktree). Pseudo-refs such as HEAD are not refs/ and not logged. The
`pre-push` hook refuses a push from this project of anything but `task/<id>`, so the agent
cannot put a commit on the remote base (or a tag) itself.

Limits: a process that strips its environment, overrides core.hooksPath itself, pushes with
--no-verify or writes ref files (or the shared .git/hooks and .git/config) directly is not
seen. Landing still publishes only the commit Baton rebased and tested (mergequeue.py), but such
a process is not contained: this guards against confused agents, not hostile ones.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..gitrepo import GitError, git_ok, run_git

log = logging.getLogger(__name__)

HOOKS_DIRNAME = ".git-hooks"  # inside the logs folder, next to the per-task logs

# Every hook git may run on the client or (for a push to a local path) the receiving side,
# except those whose mere presence changes git's behaviour: push-to-checkout (replaces the
# updateInstead check), proc-receive (a protocol), fsmonitor-watchman (configured by path).
FORWARDED_HOOKS = (
    "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
    "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout", "post-merge",
    "pre-push", "pre-receive", "update", "post-receive", "post-update", "pre-auto-gc", "post-rewrite",
    "sendemail-validate", "post-index-change", "p4-changelist", "p4-prepare-changelist",
    "p4-post-changelist", "p4-pre-submit", "reference-transaction",
)

# POSIX sh: it runs on every ref update the task's processes make, so it must be quick. It
# never fails a transaction on its own account; only the repository's hook may.
HOOK_SCRIPT = r"""#!/bin/sh
# Written by Baton (backend/dispatcher/refguard.py); restored whenever a task starts.
name=${0##*/}
own=$(cd "${0%/*}" && pwd -P)
hooks=$(GIT_CONFIG_COUNT="${BATON_HOOKS_PREV_COUNT:-0}" git rev-parse --git-path hooks 2>/dev/null)
real=""
if [ -n "$hooks" ] && [ -d "$hooks" ] && [ "$(cd "$hooks" && pwd -P)" != "$own" ] && [ -x "$hooks/$name" ]; then
    real="$hooks/$name"
fi
if [ "$name" != reference-transaction ] && [ "$name" != pre-push ]; then
    [ -n "$real" ] && exec "$real" "$@"
    exit 0
fi
input=$(mktemp 2>/dev/null) || input=""
if [ -z "$input" ]; then
    [ -n "$real" ] && exec "$real" "$@"
    cat >/dev/null
    exit 0
fi
trap 'rm -f "$input"' EXIT
cat >"$input"
if [ -n "$BATON_REFS_LOG" ] && [ -n "$BATON_REFS_REPO" ]; then
    common=$(git rev-parse --git-common-dir 2>/dev/null) && common=$(cd "$common" 2>/dev/null && pwd -P)
    if [ "$common" = "$BATON_REFS_REPO" ] && [ "$name" = pre-push ]; then
        # The base moves only by Baton's landing: a task may push its own branch, nothing else.
        while read -r lref lsha rref rsha; do
            case "$rref" in
            ""|"$BATON_REFS_OWN") ;;
            *) echo "Baton: this task may push only ${BATON_REFS_OWN#refs/heads/}; refused to push $rref" >&2
               exit 1 ;;
            esac
        done <"$input"
    elif [ "$common" = "$BATON_REFS_REPO" ]; then
        pending="$BATON_REFS_LOG.$PPID"
        case "$1" in
        prepared)
            : >"$pending"
            while read -r old new ref; do
                case "$ref" in
                "$BATON_REFS_OWN"|refs/bisect/*|refs/rewritten/*|refs/worktree/*) ;;
                refs/*)
                    cur=$(git rev-parse --verify -q "$ref" 2>/dev/null) || cur=0
                    [ "$cur" = "$new" ] || echo "$cur $new $ref" >>"$pending" ;;
                esac
            done <"$input" ;;
        committed)
            [ -f "$pending" ] && cat "$pending" >>"$BATON_REFS_LOG"
            rm -f "$pending" ;;
        *)
            rm -f "$pending" ;;
        esac
    fi
fi
[ -z "$real" ] && exit 0
"$real" "$@" <"$input"
"""

_write_lock = threading.Lock()


def install_hooks(logs_dir: Path) -> Path:
    """(Re)write Baton's hooks folder and return it. Checked at every task start and rewritten
    atomically where it differs, so a task that tampered with it does not decide what the next
    one runs."""
    hooks = logs_dir / HOOKS_DIRNAME
    with _write_lock:
        hooks.mkdir(parents=True, exist_ok=True)
        for name in FORWARDED_HOOKS:
            target = hooks / name
            try:
                if target.read_text(encoding="utf-8") == HOOK_SCRIPT and os.access(target, os.X_OK):
                    continue  # unchanged: rewriting a hook that may be running right now gains nothing
            except (OSError, UnicodeDecodeError):
                pass
            tmp = hooks / f".{name}.{os.getpid()}.tmp"
            tmp.write_text(HOOK_SCRIPT, encoding="utf-8")
            tmp.chmod(0o755)
            os.replace(tmp, target)
    return hooks


def _missing(value: str) -> bool:
    return not value.strip("0")


@dataclass
class RefMove:
    ref: str
    old: str  # before the task's first update; "" = it did not exist
    new: str  # after the task's last update; "" = deleted

    def describe(self) -> str:
        return f"{self.ref} ({self.old[:12] or 'absent'} -> {self.new[:12] or 'deleted'})"


class RefGuard:
    """One task's view of the refs its processes moved."""

    def __init__(self, project: Path, logs_dir: Path, task_id: str, own_branch: str) -> None:
        self.project = project
        self.logs_dir = logs_dir
        self.log_path = logs_dir / f"{task_id}.refs.log"
        self.own_ref = f"refs/heads/{own_branch}"
        self._hooks: Path | None = None
        self._repo: str | None = None
        self._remote_heads: dict[str, dict[str, str]] = {}

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """`env` plus what makes git in the task's processes report their ref updates. Our
        core.hooksPath comes after any GIT_CONFIG_* entries already there (the later wins)."""
        if self._hooks is None:
            self._hooks = install_hooks(self.logs_dir)
            common = run_git(["rev-parse", "--git-common-dir"], self.project).strip()
            self._repo = str((self.project / common).resolve())
        env = dict(env)
        try:
            count = max(0, int(env.get("GIT_CONFIG_COUNT", "0") or "0"))
        except ValueError:
            count = 0
        slot = count
        outer = env.get("BATON_HOOKS_PREV_COUNT", "")
        if outer.isdigit() and int(outer) < count and env.get(f"GIT_CONFIG_KEY_{outer}") == "core.hooksPath":
            # Baton started by a task of another Baton (its test suite as test command): take
            # the outer guard's place, or our hook would forward to the outer one, which finds
            # itself and never runs the project's own hook. (Its BATON_REFS_* are replaced anyway.)
            slot = int(outer)
        env.update({
            "GIT_CONFIG_COUNT": str(max(count, slot + 1)),
            f"GIT_CONFIG_KEY_{slot}": "core.hooksPath",
            f"GIT_CONFIG_VALUE_{slot}": str(self._hooks),
            "BATON_HOOKS_PREV_COUNT": str(slot),
            "BATON_REFS_LOG": str(self.log_path),
            "BATON_REFS_REPO": self._repo or "",
            "BATON_REFS_OWN": self.own_ref,
        })
        return env

    def take(self) -> list[RefMove]:
        """Protected refs the task's processes left changed since the last call. The log is
        consumed (renamed away first, so updates made meanwhile start a new one). Call only
        when none of the task's processes runs."""
        self._remote_heads = {}  # what remotes hold is asked afresh each time
        taken = self.log_path.with_name(self.log_path.name + ".taking")
        try:
            os.replace(self.log_path, taken)
        except FileNotFoundError:
            return []
        try:
            text = taken.read_text(encoding="utf-8", errors="replace")
        finally:
            taken.unlink(missing_ok=True)
        first: dict[str, str] = {}
        last: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3 or not parts[2].startswith("refs/") or parts[2] == self.own_ref:
                continue
            old, new, ref = parts
            first.setdefault(ref, "" if _missing(old) else old)
            last[ref] = "" if _missing(new) else new
        moves = []
        for ref, old in first.items():
            if self._current(ref) != old:  # moved and back again (a stash pushed and popped) is fine
                moves.append(RefMove(ref, old, last[ref]))
        return [m for m in moves if not self._fetched(m, moves)]

    def _fetched(self, move: RefMove, moves: list[RefMove]) -> bool:
        """A remote-tracking ref the task moved to exactly what the remote holds now (an agent's
        plain `git fetch`) tells the truth: it is not put back and does not fail the task.
        Landing never trusts these refs anyway (its push is a compare-and-swap on the sha it
        fetched itself). Asked of the remote only when such a move was seen."""
        if not move.ref.startswith("refs/remotes/") or move.ref.count("/") < 3:
            return False
        remote, branch = move.ref.split("/", 3)[2:]
        if remote not in self._remote_heads:
            try:
                out = run_git(["ls-remote", "--heads", remote], self.project, timeout=30)
                self._remote_heads[remote] = dict(
                    reversed(line.split("\t", 1)) for line in out.splitlines() if "\t" in line)
            except GitError as exc:
                log.warning("could not ask %s what it holds: %s", remote, exc)
                self._remote_heads[remote] = {}
        truthful = self._remote_heads[remote].get(f"refs/heads/{branch}", "") == move.new != ""
        if truthful:
            log.info("%s: moved by the task to what %s holds (a fetch); left as it is", move.ref, remote)
        return truthful

    def _current(self, ref: str) -> str:
        try:
            return run_git(["rev-parse", "--verify", "--quiet", ref], self.project).strip()
        except GitError:
            return ""

    def _keep(self, move: RefMove, lock: threading.RLock) -> str | None:
        """Before a ref is put back: commits the task left only there (a side branch, a stash)
        go to branch task/<id>-saved-<sha>, so undoing the ref loses none of its work."""
        if not move.new:
            return None
        commit = self._current(f"{move.new}^{{commit}}")  # "" for a tag of a tree or blob: nothing to keep
        own = self._current(self.own_ref)
        if not commit or (own and git_ok(["merge-base", "--is-ancestor", commit, own], self.project)):
            return None
        branch = f"{self.own_ref.removeprefix('refs/heads/')}-saved-{commit[:8]}"
        try:
            with lock:
                run_git(["update-ref", "-m", "baton: keep a task's commits", f"refs/heads/{branch}", commit],
                        self.project)
        except GitError as exc:
            log.warning("could not keep %s on %s: %s", commit, branch, exc)
            return None
        return branch

    def take_and_restore(self, lock: threading.RLock) -> list[str]:
        return self.restore(self.take(), lock)

    def restore(self, moves: list[RefMove], lock: threading.RLock) -> list[str]:
        """Put each ref back where it was, as a compare-and-swap against the value the task gave
        it: a ref someone else moved since is left alone. Returns one line per ref."""
        lines = []
        for move in moves:
            kept = self._keep(move, lock)
            if kept:
                lines.append(f"{move.ref}: its commits not on {self.own_ref.removeprefix('refs/heads/')} "
                             f"kept on {kept}")
            undo = ["update-ref", "--no-deref", "-m", "baton: undo a task's ref update"]
            if move.old:
                args = [*undo, move.ref, move.old, move.new]  # new "" = recreate only if still absent
            elif move.new:
                args = [*undo, "-d", move.ref, move.new]
            else:  # deleted by the task, created again by someone else since
                lines.append(f"{move.describe()}: left as it is, it changed again since")
                continue
            try:
                with lock:
                    run_git(args, self.project)
                lines.append(f"{move.describe()}: restored")
            except GitError as exc:
                log.warning("could not restore %s: %s", move.ref, exc)
                lines.append(f"{move.describe()}: left as it is, it changed again since ({exc.stderr.strip()[-200:]})")
        return lines
