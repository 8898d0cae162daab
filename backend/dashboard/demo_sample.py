"""What the demo's sample repository holds (`textkit`, a tiny library with real unittest tests)
and the tasks seeded into its store, each with a DEMO script for the demo runtime's agent.

Every task touches files of its own, so tasks running side by side never conflict; NOTES.md
(where tasks typed without a script append a line) merges by union for the same reason.
"""

from __future__ import annotations

import json

from ..models import NewTask

FILES: dict[str, str] = {
    "README.md": "# textkit\n\nA tiny text-helper library: the sample project of Baton's demo "
                 "(`baton-dashboard --demo`).\nIts tests run with `python -m unittest`.\n",
    ".gitattributes": "# Lines appended by tasks running side by side merge without a conflict.\n"
                      "NOTES.md merge=union\n",
    "NOTES.md": "# Notes\n\nTasks typed without a DEMO script add a line here.\n\n",
    "textkit/__init__.py": '"""textkit: small text helpers."""\n\nfrom .core import slugify, word_count\n\n'
                           '__all__ = ["slugify", "word_count"]\n',
    "textkit/core.py": '"""The first helpers."""\n\nimport re\n\n\n'
                       'def slugify(text: str) -> str:\n    """\'Hello, World!\' -> \'hello-world\'."""\n'
                       '    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")\n\n\n'
                       'def word_count(text: str) -> int:\n    return len(text.split())\n',
    "tests/__init__.py": "",
    "tests/test_core.py": "import unittest\n\nfrom textkit import slugify, word_count\n\n\n"
                          "class CoreTest(unittest.TestCase):\n"
                          "    def test_slugify(self):\n"
                          '        self.assertEqual(slugify("Hello, World!"), "hello-world")\n\n'
                          "    def test_word_count(self):\n"
                          '        self.assertEqual(word_count("one two  three"), 3)\n',
}

_TITLECASE = ('"""Title case that keeps short joining words lower case."""\n\n'
              'SMALL = {"a", "an", "and", "in", "of", "the", "to"}\n\n\n'
              "def title_case(text: str) -> str:\n"
              "    words = text.split()\n"
              "    return \" \".join(w.capitalize() if i == 0 or w.lower() not in SMALL else w.lower()\n"
              "                    for i, w in enumerate(words))\n")
_TITLECASE_TEST = ("import unittest\n\nfrom textkit.titlecase import title_case\n\n\n"
                   "class TitleCaseTest(unittest.TestCase):\n"
                   "    def test_small_words_stay_lower_case(self):\n"
                   '        self.assertEqual(title_case("the lord of the rings"), "The Lord of the Rings")\n')
_TRUNCATE = ('"""Shorten text to a width, marking the cut."""\n\n\n'
             'def truncate(text: str, width: int, ellipsis: str = "…") -> str:\n'
             "    if len(text) <= width:\n        return text\n"
             "    return text[:max(0, width - len(ellipsis))].rstrip() + ellipsis\n")
_TRUNCATE_TEST = ("import unittest\n\nfrom textkit.truncate import truncate\n\n\n"
                  "class TruncateTest(unittest.TestCase):\n"
                  "    def test_long_text_is_cut_to_the_width(self):\n"
                  '        self.assertEqual(truncate("hello world", 8), "hello w…")\n\n'
                  "    def test_short_text_is_kept(self):\n"
                  '        self.assertEqual(truncate("short", 10), "short")\n')
_SENTENCES_BUGGY = ('"""Count sentences."""\n\n\n'
                    "def sentence_count(text: str) -> int:\n"
                    '    return text.count(".")\n')
_SENTENCES_FIXED = ('"""Count sentences: a run of . ! or ? ends one."""\n\nimport re\n\n\n'
                    "def sentence_count(text: str) -> int:\n"
                    '    return len([part for part in re.split(r"[.!?]+", text) if part.strip()])\n')
_SENTENCES_TEST = ("import unittest\n\nfrom textkit.sentences import sentence_count\n\n\n"
                   "class SentenceCountTest(unittest.TestCase):\n"
                   "    def test_every_ending_counts(self):\n"
                   '        self.assertEqual(sentence_count("Hi. How are you? Fine!"), 3)\n\n'
                   "    def test_an_ellipsis_is_one_ending(self):\n"
                   '        self.assertEqual(sentence_count("Wait... what?"), 2)\n')
_FREQUENCY = ('"""Word frequencies."""\n\nfrom collections import Counter\n\n\n'
              "def top_words(text: str, n: int = 3) -> list[tuple[str, int]]:\n"
              "    words = [w.strip(\".,!?;:\").lower() for w in text.split()]\n"
              "    return Counter(w for w in words if w).most_common(n)\n")
_FREQUENCY_TEST = ("import unittest\n\nfrom textkit.frequency import top_words\n\n\n"
                   "class TopWordsTest(unittest.TestCase):\n"
                   "    def test_most_common_first(self):\n"
                   '        self.assertEqual(top_words("a b a c a b", 2), [("a", 3), ("b", 2)])\n')
_USAGE = ("\n## Usage\n\n```python\nfrom textkit import slugify, word_count\n\n"
          'slugify("Hello, World!")  # "hello-world"\nword_count("one two three")  # 3\n```\n')


def _task(title: str, description: str, steps: list[dict], fix: list[dict] | None = None, **fields) -> NewTask:
    script = {"steps": steps, **({"fix": fix} if fix else {})}
    content = f"{description}\n\nDEMO: {json.dumps(script)}\n"
    return NewTask(title=title, content=content, **fields)


def seed_tasks() -> list[NewTask]:
    return [
        _task("Add title_case()", "Add `textkit.titlecase.title_case(text)`: title case that keeps short "
              "joining words (of, the, and …) lower case, with tests.", [
                  {"say": "I'll add a title_case() helper in its own module, with a test."},
                  {"write": "textkit/titlecase.py", "text": _TITLECASE},
                  {"write": "tests/test_titlecase.py", "text": _TITLECASE_TEST},
                  {"test": True},
                  {"commit": True}]),
        _task("Count sentences", "Add `textkit.sentences.sentence_count(text)`, with tests.", [
            {"say": "Counting the full stops should do it."},
            {"write": "textkit/sentences.py", "text": _SENTENCES_BUGGY},
            {"write": "tests/test_sentences.py", "text": _SENTENCES_TEST},
            {"say": "Looks right to me; committing without running the tests (Baton runs them before landing)."},
            {"commit": True}], fix=[
            {"say": "The tests caught it: ? and ! end sentences too, and ... is one ending. Fixing."},
            {"write": "textkit/sentences.py", "text": _SENTENCES_FIXED},
            {"test": True},
            {"commit": "fix: a run of . ! or ? ends a sentence"}]),
        _task("Add truncate()", "Add `textkit.truncate.truncate(text, width)` that cuts long text and marks "
              "the cut with an ellipsis, with tests.", [
                  {"say": "A truncate() helper, in its own module."},
                  {"write": "textkit/truncate.py", "text": _TRUNCATE},
                  {"write": "tests/test_truncate.py", "text": _TRUNCATE_TEST},
                  {"test": True},
                  {"commit": True}]),
        _task("Add top_words()", "Add `textkit.frequency.top_words(text, n)`: the n most common words, "
              "with tests.", [
                  {"say": "collections.Counter does the counting."},
                  {"write": "textkit/frequency.py", "text": _FREQUENCY},
                  {"write": "tests/test_frequency.py", "text": _FREQUENCY_TEST},
                  {"test": True},
                  {"commit": True}]),
        _task("Document usage in the README", "Show how to use textkit in README.md.", [
            {"say": "A short usage section for the README."},
            {"append": "README.md", "text": _USAGE},
            {"test": True},
            {"commit": True}], task_type="docs", priority="low"),
    ]
