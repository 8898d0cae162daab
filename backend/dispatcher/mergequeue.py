"""The merge queue: test in parallel, land in order, keep the base green.

Tasks whose agent is done enter in order [A, B, C, ...]. Candidate(A) is task/A rebased onto
the base sha the queue fetched, candidate(B) is task/B rebased onto candidate(A), and so on
(speculation, as in Zuul, bors or GitHub's merge queue). Up to `max_parallel_tests` candidates
are tested at once, each in its task's own worktree. The longest prefix of passing candidates
is published with one compare-and-swap push of its last commit, so the base only ever moves to
a commit whose exact tree passed the test command.

- A candidate that fails while everything ahead of it passed is ejected (feedback turn, then
  back at the tail); what was stacked on it is rebuilt. A failure behind an untested candidate
  waits for that one's verdict (it may be the one to blame).
- A conflict with a candidate ahead is no verdict: the task sits out (`blocked`) until that one
  has left the queue. A conflict with the base itself gets a fix turn, and the task keeps its
  place at the head meanwhile (`fixing`: nothing behind it lands), so contended lines all land.
- Trees that passed are remembered (per command): a candidate with such a tree is not re-run.
- A task's branch rebased onto a candidate that never landed is put back onto landed history
  (its last such rebase, `safe`) before the task leaves, so no foreign commit stays on it.
- A task that lands only after a person's review (landing review or pr, not yet approved) is
  tested alone on the base and never stacked on: it leaves with a `ready` verdict (its tested
  candidate, rebased onto landed history) instead of being published, and holds nothing up.

One coordinator thread does every rebase and push (so no two git operations meet in one
worktree); test runs have a thread each. The task's own thread waits for its verdict.
"""

from __future__ import annotations

import itertools
import logging
import shlex
import threading
from dataclasses import dataclass, field

from ..gitrepo import GitError
from .leftovers import LANDING_FLAG, mark_landing
from .process import StopRequest
from .prompts import conflict_prompt, tests_prompt

log = logging.getLogger(__name__)

FRESH_BASE_SECONDS = 2.0  # a view of the base this recent is used as is: the push is the CAS


@dataclass
class Verdict:
    landed: bool
    sha: str | None = None
    reason: str | None = None
    message: str = ""
    feedback: str | None = None  # what to tell the agent in a feedback turn
    charged: bool = True  # counts against max_merge_retries (a conflict the agent failed to fix)
    ready: bool = False  # tested and not published (the task waits for review): sha on base
    base: str | None = None  # ready: the base commit the candidate was rebased onto and tested on


@dataclass
class TestResult:
    passed: bool
    message: str = ""
    reason: str | None = None  # a failure that ends the task at once (no feedback turn)
    feedback: str | None = None
    at_head: bool = False  # tested directly on the base (not stacked on another candidate)


@dataclass
class Entry:
    run: object  # TaskRun (not imported: run.py imports this module)
    seq: int
    built_on: str  # task/<id> is built_on + the task's own commits
    safe: tuple[str, str]  # (tip, built_on) of the task's last rebase onto landed history
    state: str = "waiting"  # waiting | testing | passed | failed | landing | blocked | fixing
    candidate: str | None = None
    on_top_of: str | None = None
    blocked_by: str | None = None
    result: TestResult | None = None
    test_stop: StopRequest | None = None
    stale: bool = False  # the running test's candidate is being replaced
    withdrawn: bool = False
    left: bool = False
    verdict: Verdict | None = None
    last_conflict_base: str | None = None
    publish: bool = True  # False: test only, on the base alone (the task waits for review)
    wake: threading.Event = field(default_factory=threading.Event)

    @property
    def task_id(self) -> str:
        return self.run.task.id


class MergeQueue:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.git = ctx.git
        self._cond = threading.Condition()
        self._entries: list[Entry] = []
        self._seq = itertools.count()
        self._base: str | None = None  # the base sha candidates are built on (None: fetch first)
        self._rejections = 0
        self._proven: set[tuple[str, str]] = set()  # (test command, tree id) that passed
        self._dirty = False
        self._closed = False
        self._current: Entry | None = None  # the entry a round is changing: an error there is its
        self._thread: threading.Thread | None = None

    # ----- what task threads call ----------------------------------------------------------

    def land(self, run, on_enqueued=lambda: None, publish: bool = True) -> Verdict | None:
        """Enter the queue (or, after a conflict fix turn, take back the place kept) and wait
        for the verdict. None: the run was stopped and has left the queue without landing.
        `on_enqueued` runs once the place is taken (the worker is given back only then, so
        tasks enter in the order their agents finished). `publish` False: test only (see above)."""
        with self._cond:
            entry = next((e for e in self._entries if e.run is run), None)
            if entry is None:
                entry = Entry(run=run, seq=next(self._seq), built_on="", safe=("", ""))
                self._entries.append(entry)
            entry.state, entry.candidate, entry.verdict, entry.result = "waiting", None, None, None
            entry.publish = publish
            entry.built_on = ""  # computed by the coordinator from the branch as the agent left it
            entry.wake.clear()
            self._poke_locked()
        on_enqueued()
        self._ensure_thread()
        run.stop.listen(entry.wake.set)
        entry.wake.wait()
        if entry.verdict is None:  # woken by a stop
            self._withdraw(entry)
        verdict = entry.verdict
        if verdict is None or (not verdict.landed and run.stop.is_set()):
            return None  # stopped; a landing that was already under way counts
        return verdict

    def forget(self, run) -> None:
        """The run ends: drop a place it kept for a fix turn."""
        with self._cond:
            entry = next((e for e in self._entries if e.run is run), None)
        if entry is not None:
            self._withdraw(entry)

    def snapshot(self) -> list[dict]:
        with self._cond:
            return [{"task_id": e.task_id, "title": e.run.task.title,
                     "state": e.state if e.state in ("testing", "passed", "landing") else "waiting",
                     "on_top_of": e.on_top_of if e.candidate else None}
                    for e in self._entries if not e.left]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ----- internals ----------------------------------------------------------------------

    def _withdraw(self, entry: Entry) -> None:
        """Leave the queue; returns once the coordinator has let go of the entry (a landing in
        progress finishes first, and then counts: it is on the base)."""
        with self._cond:
            if entry.left:
                return
            entry.withdrawn = True
            if entry.test_stop is not None:
                entry.test_stop.set("withdrawn")
            self._poke_locked()
            while not entry.left:
                self._cond.wait()

    def _poke_locked(self) -> None:
        self._dirty = True
        self._cond.notify_all()
        self.ctx.on_change()  # an entry came or left (or its test reported)

    def _poke(self) -> None:
        with self._cond:
            self._poke_locked()

    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="baton-merge-queue", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._dirty = False
            self._current = None
            try:
                self._round()
            except Exception as exc:  # noqa: BLE001 - the queue must survive; the task in trouble is ejected
                log.exception("merge queue: round failed")
                self._eject_on_error(exc)
            self.ctx.on_change()  # a round moves entries (testing, passed, landing)

    def _eject_on_error(self, exc: Exception) -> None:
        """Fail the entry the round was changing when the error came (its rebase, its landing),
        whatever its place. An error in no entry's step (a fetch of the base) fails the first
        entry not being tested, as nothing else would wake a stuck queue."""
        culprit = self._current
        if culprit is None or culprit.left or culprit.state == "testing":
            with self._cond:
                culprit = next((e for e in self._entries if not e.left and e.state != "testing"), None)
        if culprit is not None:
            self._leave(culprit, Verdict(False, reason="internal",
                                         message=f"the merge queue failed on this task: {exc}"))
        self._current, self._base = None, None

    def _live(self) -> list[Entry]:
        with self._cond:
            return [e for e in self._entries if not e.left]

    def _round(self) -> None:
        for entry in self._live():
            if entry.withdrawn:
                if entry.state != "testing":
                    self._leave(entry, None)
                else:
                    with self._cond:  # test_stop goes None when its test thread reports
                        if entry.test_stop is not None:
                            entry.test_stop.set("withdrawn")  # it leaves once its test run has stopped
        self._current = None
        entries = [e for e in self._live() if not e.withdrawn]
        if not entries:
            self._base = None  # the next task fetches afresh
            return
        if self._base is None:
            self.git.fetch_base(max_age=FRESH_BASE_SECONDS)
            self._base = self.git.rev(self.git.base_ref)
        newer = [self._settle_entry(e) for e in entries if not e.built_on and e.state != "fixing"]
        self._current = None
        if any(newer):
            # A task started from a newer base than the queue's (someone else pushed): build on that.
            self._base = self.git.rev(self.git.base_ref)
        chain = self._build_chain(entries)
        self._current = None
        if chain is None:
            return  # an entry left or waits for its test to stop: a new round follows
        alone = [e for e in chain if not e.publish and e.state in ("passed", "failed")]
        for entry in alone:  # tested on the base itself: every verdict is final
            if entry.state == "passed":
                self._ready(entry)
            else:
                self._eject_failed(entry)
        if alone:
            return  # they left: a new round follows
        landing = [e for e in chain if e.publish]
        prefix = list(itertools.takewhile(lambda e: e.state == "passed", landing))
        if prefix:
            self._publish(prefix)  # what failed behind it is ejected next round, on top of it
            return
        if landing and landing[0].state == "failed":  # final: nothing ahead of it is left untested
            self._eject_failed(landing[0])
            return
        self._start_tests(chain)

    def _build_chain(self, entries: list[Entry]) -> list[Entry] | None:
        tip, ahead = self._base, None
        chain: list[Entry] = []
        ids = {e.task_id for e in entries}
        for entry in entries:
            if entry.state == "fixing":
                if not entry.publish:
                    continue  # it lands nothing: nobody waits for it
                break  # it keeps the head; nothing behind it can be built yet
            if not entry.publish:
                if not self._build_alone(entry, chain):
                    return None  # a conflict with the base: its fix turn follows, then a new round
                continue
            if entry.state == "blocked":
                if entry.blocked_by in ids:
                    continue
                entry.state, entry.blocked_by = "waiting", None
            if entry.candidate is not None and entry.built_on == tip:
                chain.append(entry)
                tip, ahead = entry.candidate, entry
                continue
            if entry.state == "testing":
                with self._cond:  # its test thread may report (and drop test_stop) at any moment
                    if entry.state == "testing":
                        entry.stale = True
                        entry.test_stop.set("rebuilding")
                break  # its test thread reports back (a new round), then it is rebuilt
            self._current = entry
            conflicts = self._rebuild(entry, tip)
            if conflicts is not None:
                if ahead is None:  # on the base itself: the agent resolves it, keeping the head
                    self._conflict(entry, conflicts)
                    return None
                entry.state, entry.blocked_by = "blocked", ahead.task_id
                entry.run.say(f"waits for {ahead.task_id} to land: rebasing onto it conflicts in {', '.join(conflicts)}")
                continue
            entry.on_top_of = ahead.task_id if ahead else None
            entry.state = "passed" if self._is_proven(entry.candidate) else "waiting"
            if entry.state == "passed":
                entry.result = TestResult(True)
                entry.run.say(f"tree of {entry.candidate[:12]} already passed the tests; not running them again")
            chain.append(entry)
            tip, ahead = entry.candidate, entry
        return chain

    def _build_alone(self, entry: Entry, chain: list[Entry]) -> bool:
        """A test-only entry: its candidate is the task rebased onto the base itself. False when
        that rebase conflicts (the entry is then fixing)."""
        # Tested on an older base is enough for review (approving rebases and tests again): a busy
        # queue does not restart its test at every landing.
        if entry.candidate is not None and (entry.built_on == self._base
                                            or self.git.is_ancestor(entry.built_on, self._base)):
            chain.append(entry)
            return True
        if entry.state == "testing":
            with self._cond:
                if entry.state == "testing":
                    entry.stale = True
                    entry.test_stop.set("rebuilding")
            return True  # its test thread reports back (a new round), then it is rebuilt
        self._current = entry
        conflicts = self._rebuild(entry, self._base)
        if conflicts is not None:
            self._conflict(entry, conflicts)
            return False
        entry.on_top_of = None
        entry.state = "passed" if self._is_proven(entry.candidate) else "waiting"
        if entry.state == "passed":
            entry.result = TestResult(True)
            entry.run.say(f"tree of {entry.candidate[:12]} already passed the tests; not running them again")
        chain.append(entry)
        return True

    def _ready(self, entry: Entry) -> None:
        """A test-only entry passed: it leaves with its candidate for a person to review."""
        self._current = entry
        problem = entry.run.tested_candidate_problem(entry.candidate, entry.built_on)
        if problem is not None:
            entry.run.say(f"not offering for review: {problem}")
            self._leave(entry, Verdict(False, reason="agent_moved_refs", message=problem))
            return
        self._leave(entry, Verdict(False, ready=True, sha=entry.candidate, base=entry.built_on))

    def _settle_entry(self, entry: Entry) -> bool:
        """A newly entered task: where its own commits start, and the landing flag (what is
        uncommitted from now on is the tests', for crash recovery). True when it starts from a
        newer base than the queue's."""
        self._current = entry
        ws = entry.run.ws
        head = self.git.rev(f"refs/heads/{ws.branch}")
        # Against our view of the base: a task starts from it, so it is never older than the fork.
        entry.built_on = self.git.git(["merge-base", head, self.git.rev(self.git.base_ref)]).strip()
        entry.safe = (head, entry.built_on)
        entry.candidate = None
        mark_landing(ws, head)
        return not self.git.is_ancestor(entry.built_on, self._base)

    def _rebuild(self, entry: Entry, onto: str) -> list[str] | None:
        ws = entry.run.ws
        conflicts = ws.rebase(onto, upstream=entry.built_on)
        if conflicts is not None:
            return conflicts
        entry.built_on = onto
        entry.candidate = ws.head()
        entry.result = None
        if onto == self._base:
            entry.safe = (entry.candidate, onto)
            mark_landing(ws, entry.candidate)
        return None

    def _conflict(self, entry: Entry, conflicts: list[str]) -> None:
        base = self._base
        charged = entry.last_conflict_base == base  # the same base again: the agent's fix did not hold
        entry.last_conflict_base = base
        message = f"rebase onto {self.git.base} ({base[:12]}) conflicts in: {', '.join(conflicts)}"
        entry.run.say(message + ("" if charged else " (caused by work that landed first; keeps its place)"))
        self._restore_safe(entry)
        (entry.run.ws.git_dir() / LANDING_FLAG).unlink(missing_ok=True)
        with self._cond:
            entry.state, entry.candidate = "fixing", None
            entry.verdict = Verdict(False, reason="conflict", message=message,
                                    feedback=conflict_prompt(base, conflicts), charged=charged)
            entry.wake.set()
            self._poke_locked()

    def _restore_safe(self, entry: Entry) -> None:
        """Put task/<id> back onto landed history if it sits on a candidate that never landed."""
        if not entry.built_on:
            return
        # With no view of the base (a round found only withdrawn entries), ask for the real one.
        if self.git.is_ancestor(entry.built_on, self._base or self.git.rev(self.git.base_ref)):
            return
        tip, on = entry.safe
        entry.run.ws.reset_branch(tip)
        entry.built_on, entry.candidate = on, None

    def _is_proven(self, sha: str) -> bool:
        return (self._command(), self._tree(sha)) in self._proven

    def _command(self) -> str:
        return self.ctx.config.test_command.strip()

    def _tree(self, sha: str) -> str:
        return self.git.git(["rev-parse", f"{sha}^{{tree}}"]).strip()

    # ----- tests --------------------------------------------------------------------------

    def _start_tests(self, chain: list[Entry]) -> None:
        with self._cond:
            running = sum(1 for e in self._entries if e.state == "testing" and not e.left)
            for entry in chain:
                if running >= self.ctx.config.test_slots:
                    break
                if entry.state != "waiting":
                    continue
                entry.state, entry.stale, entry.test_stop = "testing", False, StopRequest()
                running += 1
                at_head = entry.built_on == self._base or not entry.publish  # alone: on the base
                threading.Thread(target=self._test, args=(entry, entry.candidate, at_head),
                                 name=f"test-{entry.task_id}", daemon=True).start()

    def _test(self, entry: Entry, candidate: str, at_head: bool) -> None:
        run = entry.run
        try:
            if not self._command():
                result = TestResult(True)
            else:
                result = self._run_test(entry, candidate, at_head)
        except Exception as exc:  # noqa: BLE001 - reported as the task's failure
            log.exception("task %s: test run failed", run.task.id)
            result = TestResult(False, reason=getattr(exc, "reason", "internal"),
                                message=getattr(exc, "message", f"{type(exc).__name__}: {exc}"))
        if result is not None and result.passed:
            tree = self._tree(candidate)
            with self._cond:
                self._proven.add((self._command(), tree))
        with self._cond:
            if entry.stale or entry.withdrawn or result is None:
                entry.state = "waiting"
                if entry.stale:
                    entry.candidate = None
            else:
                entry.state, entry.result = ("passed" if result.passed else "failed"), result
            entry.test_stop = None
            self._poke_locked()

    def _run_test(self, entry: Entry, candidate: str, at_head: bool) -> TestResult | None:
        run, config = entry.run, self.ctx.config
        command = self._command()
        argv = shlex.split(command)
        stop = entry.test_stop
        port = self.ctx.ports.acquire_wait(f"tests:{run.task.id}", stop.is_set)
        if port is None:
            return None
        try:
            on = f"on top of {entry.on_top_of}" if entry.on_top_of else f"on {self.git.base} {entry.built_on[:12]}"
            for attempt in range(config.test_retries + 1):
                run.say(f"running tests on {candidate[:12]} ({on}): {command}"
                        + (f" (retry {attempt} of {config.test_retries})" if attempt else ""))
                outcome, output = run.run_tests(argv, port=port, stop=stop)
                if outcome.stopped and outcome.stopped != "timeout":
                    return None
                if outcome.exit_code == 0 and not outcome.stopped:
                    run.say("tests passed" + (f" after {attempt} retr{'y' if attempt == 1 else 'ies'}" if attempt else ""))
                    return TestResult(True)
                message = (f"tests timed out after {config.test_timeout}s" if outcome.stopped
                           else f"tests failed (exit status {outcome.exit_code})")
                run.say(message + ("; retrying" if attempt < config.test_retries else ""))
            if at_head:
                verdict = run.check_base(argv, entry.built_on, port=port, stop=stop)
                if verdict is not None and not verdict.passed:
                    detail = verdict.output.strip()[-1500:]
                    branch = config.base_branch
                    return TestResult(False, reason="tests_broken_on_base", message=(
                        f"the test command `{command}` fails on {branch} itself (base commit {entry.built_on[:12]}, "
                        f"{verdict.summary}), so no feedback turn was tried; fix the tests on {branch} or change "
                        "test_command" + (f". Its output ends:\n{detail}" if detail else "")))
            return TestResult(False, message=message, feedback=tests_prompt(command, output), at_head=at_head)
        finally:
            self.ctx.ports.release(port)

    # ----- verdicts -----------------------------------------------------------------------

    def _eject_failed(self, entry: Entry) -> None:
        result = entry.result
        if result.reason is None and not result.at_head:
            result.message += f" (on top of {entry.on_top_of}, which passed on its own)"
        self._leave(entry, Verdict(False, reason=result.reason or "tests_failed", message=result.message,
                                   feedback=result.feedback))

    def _leave(self, entry: Entry, verdict: Verdict | None) -> None:
        """Take the entry out: its branch back on landed history, the landing flag gone."""
        self._current = entry
        try:
            if entry.state != "fixing":
                self._restore_safe(entry)
        except GitError as exc:
            log.warning("task %s: could not put its branch back: %s", entry.task_id, exc)
        if entry.run.ws.path.exists():
            (entry.run.ws.git_dir() / LANDING_FLAG).unlink(missing_ok=True)
        with self._cond:
            if entry in self._entries:
                self._entries.remove(entry)
            entry.left = True
            if verdict is not None:
                entry.verdict = verdict
            entry.wake.set()
            self._poke_locked()

    def _publish(self, prefix: list[Entry]) -> None:
        base, tip = self._base, prefix[-1].candidate
        for entry in prefix:  # the agent's code ran in these worktrees: check before publishing
            self._current = entry
            problem = entry.run.tested_candidate_problem(entry.candidate, entry.built_on)
            if problem is not None:
                entry.run.say(f"not landing: {problem}")
                self._leave(entry, Verdict(False, reason="agent_moved_refs", message=problem))
                return
        with self._cond:
            for entry in prefix:
                entry.state = "landing"
        for entry in prefix:  # before the push: crash recovery then knows it may have landed
            self._current = entry
            entry.run.record_commit(entry.candidate, entry.built_on)
        self._current = prefix[0]  # a push that errors fails the head, as a rejected one does
        note = None
        if self.git.has_remote:
            push = self.git.push_base(prefix[-1].run.ws.path, tip, expected=base)
            if not push.ok:
                for entry in prefix:
                    entry.run.record_commit(None)
                self._push_failed(prefix, push.rejected, push.message)
                return
            self.ctx.follow_base(tip)
        else:
            note = self.git.advance_local_base(tip)
            if note is not None:
                for entry in prefix:
                    entry.run.record_commit(None)
                    self._leave(entry, Verdict(False, reason="push_failed", message=note))
                return
        self._base, self._rejections = tip, 0
        for entry in prefix:  # in order: the store sees them complete as they sit on the base
            self._current = entry
            entry.run.say(f"landed {entry.candidate[:12]} on {self.ctx.config.base_branch}"
                          + (f" together with {len(prefix) - 1} more" if len(prefix) > 1 else ""))
            entry.run.complete_landed(entry.candidate)
            self._leave(entry, Verdict(True, sha=entry.candidate))

    def _push_failed(self, prefix: list[Entry], rejected: bool, message: str) -> None:
        with self._cond:
            for entry in prefix:
                entry.state = "passed"
        if rejected and self._rejections < self.ctx.config.max_merge_retries:
            self._rejections += 1
            prefix[0].run.say(f"push rejected (the base moved); fetching and trying again ({self._rejections})")
            self.git.fetch_base()
            self._base = self.git.rev(self.git.base_ref)
            self._poke()  # every candidate is rebuilt on the new base
            return
        self._rejections = 0
        self._leave(prefix[0], Verdict(False, reason="push_failed", message=f"push failed: {message}"))
