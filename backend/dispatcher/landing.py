"""Landing one task branch: rebase onto the newest base, test, fast-forward the base, push.

The caller holds the project's landing lock, so landings happen one at a time while agents
keep working in parallel. The base moves only by fast-forward (a plain push is a
compare-and-swap) and only to the exact commit whose tests just passed: Baton's own rebase of
task/<id> onto the base sha it fetched, checked again after the tests (which are the agent's
code too) before it is published.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from ..config import AgentConfig
from ..models import ErrorReason
from .basetests import BaseVerdict
from .process import ProcessOutcome
from .prompts import conflict_prompt, tests_prompt
from .workspace import ProjectGit, Workspace


@dataclass
class LandResult:
    landed: bool
    sha: str | None = None
    reason: ErrorReason | None = None
    message: str = ""
    feedback: str | None = None  # what to tell the agent in a feedback turn
    note: str | None = None  # e.g. why the local base branch was left alone


FRESH_BASE_SECONDS = 2.0

TestRunner = Callable[[list[str]], tuple[ProcessOutcome, str]]  # -> (outcome, output tail)
BaseChecker = Callable[[list[str], str], BaseVerdict | None]  # (argv, base sha) -> verdict on the base


class LandingRefused(Exception):
    """What is about to be published is not the commit Baton rebased and tested."""


class Lander:
    def __init__(
        self,
        git: ProjectGit,
        config: AgentConfig,
        run_tests: TestRunner,
        say: Callable[[str], None],
        stopping: Callable[[], bool],
        follow_base: Callable[[str], None],
        check_base: BaseChecker | None = None,
    ) -> None:
        self.git = git
        self.config = config
        self.run_tests = run_tests
        self.say = say
        self.stopping = stopping
        self.follow_base = follow_base
        self.check_base = check_base

    def land(self, ws: Workspace, before_publish: Callable[[str], None]) -> LandResult:
        rejected_pushes = 0
        while True:
            # A view of the base refreshed moments ago (our own last push, say) is used as is:
            # the push is the compare-and-swap, so if the base moved meanwhile it is rejected
            # and the retry below fetches.
            self.git.fetch_base(max_age=0 if rejected_pushes else FRESH_BASE_SECONDS)
            # The sha, not the ref: a task starting meanwhile may fetch and move the ref.
            base = self.git.rev(self.git.base_ref)
            conflicts = ws.rebase(base)
            if conflicts is not None:
                self.say(f"rebase onto {self.git.base_ref} conflicts in: {', '.join(conflicts)}")
                return LandResult(
                    False, reason="conflict",
                    message=f"rebase onto {self.git.base_ref} conflicts in: {', '.join(conflicts)}",
                    feedback=conflict_prompt(self.git.base_ref, conflicts),
                )
            try:
                tip = self._tested_candidate(ws, base)
                failed = self._test(base)
                if failed is not None:
                    return failed
                if self.stopping():
                    return LandResult(False, reason="internal", message="stopped before publishing")
                if self._tested_candidate(ws, base) != tip:
                    raise LandingRefused(f"{ws.branch} moved away from the tested commit {tip[:12]} during the tests")
            except LandingRefused as exc:
                self.say(f"not landing: {exc}")
                return LandResult(False, reason="agent_moved_refs", message=str(exc))
            before_publish(tip)
            if self.git.has_remote:
                push = self.git.push_base(ws.path, tip, expected=base)
                if not push.ok:
                    if push.rejected and rejected_pushes < self.config.max_merge_retries:
                        rejected_pushes += 1
                        self.say(f"push rejected (the base moved); fetching and trying again ({rejected_pushes})")
                        continue
                    return LandResult(False, reason="push_failed", message=f"push failed: {push.message}")
                self.follow_base(tip)  # the local base catches up off the landing path
                note = None
            else:
                note = self.git.advance_local_base(tip)
                if note is not None:
                    # Without a remote the local branch is the only base there is.
                    return LandResult(False, reason="push_failed", message=note)
            self.say(f"landed {tip[:12]} on {self.config.base_branch}" + (f" ({note})" if note else ""))
            return LandResult(True, sha=tip, note=note)

    def _tested_candidate(self, ws: Workspace, base: str) -> str:
        """The tip of task/<id>, which the worktree must have checked out, and which must
        contain the base it was rebased onto. Anything else is not Baton's to publish."""
        tip = self.git.rev(f"refs/heads/{ws.branch}")
        if not ws.on_branch() or ws.head() != tip:
            raise LandingRefused(f"the worktree is no longer on {ws.branch} at {tip[:12]}")
        if not self.git.is_ancestor(base, tip):
            raise LandingRefused(f"{ws.branch} ({tip[:12]}) does not contain the base {base[:12]} it was rebased onto")
        return tip

    def _test(self, base: str) -> LandResult | None:
        command = self.config.test_command.strip()
        if not command:
            return None
        self.say(f"running tests: {command}")
        argv = shlex.split(command)
        outcome, output = self.run_tests(argv)
        if outcome.stopped == "timeout":
            message = f"tests timed out after {self.config.test_timeout}s"
        elif outcome.stopped:
            return LandResult(False, reason="internal", message=f"tests stopped ({outcome.stopped})")
        elif outcome.exit_code != 0:
            message = f"tests failed (exit status {outcome.exit_code})"
        else:
            self.say("tests passed")
            return None
        self.say(message)
        verdict = self.check_base(argv, base) if self.check_base is not None else None
        if verdict is not None and not verdict.passed:
            # Feedback turns cannot fix tests that fail without the task's changes.
            detail = verdict.output.strip()[-1500:]
            branch = self.config.base_branch
            return LandResult(False, reason="tests_broken_on_base", message=(
                f"the test command `{command}` fails on {branch} itself (base commit {base[:12]}, "
                f"{verdict.summary}), so no feedback turn was tried; fix the tests on {branch} or change "
                "test_command" + (f". Its output ends:\n{detail}" if detail else "")))
        return LandResult(False, reason="tests_failed", message=message, feedback=tests_prompt(command, output))
