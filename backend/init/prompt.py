"""Questions with defaults. Interactive: each shows its default in brackets, an empty answer
takes it, a refused answer is asked again with the reason. Otherwise (--yes) the value given
by a flag, else the default, is checked once and a refusal is a usage error."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UsageError(Exception):
    """Bad arguments or answers (exit status 2)."""


class NoAnswer(Exception):
    """stdin ended before every question was answered."""


class Prompter:
    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def _input(self, prompt: str) -> str:
        try:
            return input(prompt)  # works on a terminal and on piped answers alike
        except EOFError:
            print()
            raise NoAnswer from None

    def value(self, question: str, default: str, check: Callable[[str], T], *,
              given: str | None = None, flag: str | None = None) -> T:
        """A checked answer. `check` turns text into the value or raises ValueError(reason)."""
        if given is not None or not self.interactive:
            text = given if given is not None else default
            try:
                return check(text)
            except ValueError as exc:
                raise UsageError(f"{flag}: {exc}" if flag and given is not None else str(exc)) from None
        while True:
            answer = self._input(f"{question} [{default}]: ").strip()
            try:
                return check(answer or default)
            except ValueError as exc:
                print(f"  not accepted: {exc}")

    def confirm(self, question: str, default: bool, *, given: bool | None = None) -> bool:
        def check(text: str) -> bool:
            if text.lower() in ("y", "yes"):
                return True
            if text.lower() in ("n", "no"):
                return False
            raise ValueError("answer y or n")

        if given is not None:
            return given
        return self.value(question, "Y/n" if default else "y/N", lambda t: default if t in ("Y/n", "y/N") else check(t))

    def typed_yes(self, question: str) -> bool:
        """Only the word `yes` agrees (an empty answer or anything else does not)."""
        if not self.interactive:
            return False
        return self._input(f"{question}: ").strip().lower() == "yes"
