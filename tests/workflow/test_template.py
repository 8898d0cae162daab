"""The body as a strict, sandboxed template; the continuation prompt; the issue's variables."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from backend.dispatcher.policy import PromptError
from backend.models import Task
from backend.sources.engine import task_content
from backend.trackers.base import Issue
from backend.workflow.loader import load_workflow
from backend.workflow.template import (DEFAULT_PROMPT, MAX_PROMPT_CHARS, issue_vars, render_continuation,
                                       render_first)

ENV = {"LINEAR_API_KEY": "lin-secret-value"}
FRONT = "---\ntracker:\n  kind: linear\n  project_slug: abc123\n{extra}---\n"
ISSUE = {"id": "u-1", "identifier": "ABC-12", "title": "Fix the login", "description": "It fails.", "priority": 2,
         "state": "In Progress", "url": "https://linear.app/x/issue/ABC-12", "labels": ["bug", "baton"],
         "branch_name": None, "blocked_by": [], "created_at": None, "updated_at": None}
PROJECT = {"id": "shop", "name": "shop", "base_branch": "main"}
TASK = {"id": "t1", "branch": "task/t1"}


def workflow(tmp_path: Path, body: str, extra: str = ""):
    path = tmp_path / "WORKFLOW.md"
    path.write_text(FRONT.format(extra=extra) + body, encoding="utf-8")
    return load_workflow(path, project_dir=tmp_path, environ=ENV)


def first(wf, *, issue=None, attempt=None) -> str:
    return render_first(wf, issue=ISSUE if issue is None else issue, attempt=attempt, project=PROJECT, task=TASK)


def test_renders_every_variable(tmp_path):
    wf = workflow(tmp_path, (
        "{{ issue.identifier }} {{ issue.title }} ({{ issue.state }}, p{{ issue.priority }}) {{ issue.url }}\n"
        "{{ issue.description }}\n"
        "{% for label in issue.labels %}[{{ label }}]{% endfor %}\n"
        "{{ project.name }}@{{ project.base_branch }} {{ task.id }} on {{ task.branch }}\n"
        "{% if attempt %}retry {{ attempt }}{% else %}first run{% endif %}\n"))
    assert first(wf) == ("ABC-12 Fix the login (In Progress, p2) https://linear.app/x/issue/ABC-12\n"
                         "It fails.\n[bug][baton]\nshop@main t1 on task/t1\nfirst run")
    assert first(wf, attempt=2).endswith("retry 2")


def test_attempt_none_is_defined(tmp_path):
    wf = workflow(tmp_path, "attempt={{ attempt }} is none: {{ attempt is none }}")
    assert first(wf) == "attempt=None is none: True"
    assert first(wf, attempt=1) == "attempt=1 is none: False"


def test_empty_body_is_the_default_prompt(tmp_path):
    assert first(workflow(tmp_path, "\n\n  \n")) == DEFAULT_PROMPT == \
        "You are working on an issue from the configured tracker."


def test_unknown_variable_fails_with_the_files_line(tmp_path):
    wf = workflow(tmp_path, "line one\n{{ issue.identifier }}\n{{ issue.assignee }}\n")
    with pytest.raises(PromptError) as caught:
        first(wf)
    assert str(caught.value) == "WORKFLOW.md line 8: 'dict object' has no attribute 'assignee'"
    with pytest.raises(PromptError, match=r"^WORKFLOW.md line 6: 'ticket' is undefined$"):
        first(workflow(tmp_path, "{{ ticket }}"))


def test_undefined_is_strict_even_in_tests_and_loops(tmp_path):
    with pytest.raises(PromptError, match="'nothing' is undefined"):
        first(workflow(tmp_path, "{% for x in nothing %}{{ x }}{% endfor %}"))
    with pytest.raises(PromptError, match="has no attribute 'missing'"):
        first(workflow(tmp_path, "{{ issue.missing | upper }}"))


def test_unknown_filter_reached_at_render_fails(tmp_path):
    # Inside a branch jinja defers the unknown filter to rendering (outside one it fails the load).
    wf = workflow(tmp_path, "{% if issue.priority %}\n{{ issue.title | shout }}\n{% endif %}")
    with pytest.raises(PromptError) as caught:
        first(wf)
    assert str(caught.value) == "WORKFLOW.md line 7: No filter named 'shout' found."
    assert first(wf, issue={**ISSUE, "priority": None}) == ""


@pytest.mark.parametrize("body", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ issue.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
])
def test_the_sandbox_refuses_attribute_tricks(tmp_path, body):
    with pytest.raises(PromptError) as caught:
        first(workflow(tmp_path, body))
    assert str(caught.value).startswith("WORKFLOW.md line 6: ")
    assert "unsafe" in str(caught.value) or "undefined" in str(caught.value)


@pytest.mark.parametrize("body", ["{{ 'x' * 100000000 }}", "{{ [1] * 10000000 }}", "{{ 7 ** 10000000 }}",
                                  "{{ range(100000000) | list }}"])
def test_the_sandbox_refuses_building_huge_values(tmp_path, body):
    with pytest.raises(PromptError, match=r"^WORKFLOW.md line 6: "):
        first(workflow(tmp_path, body))


def test_a_huge_prompt_is_refused(tmp_path):
    wf = workflow(tmp_path, "{% for i in range(99999) %}{% for j in range(99) %}xxxxxxxxxxxx{% endfor %}{% endfor %}")
    with pytest.raises(PromptError, match=f"longer than {MAX_PROMPT_CHARS} characters"):
        first(wf)


def test_python_errors_in_the_template_are_prompt_errors(tmp_path):
    with pytest.raises(PromptError, match=r"^WORKFLOW.md line 6: ZeroDivisionError: "):
        first(workflow(tmp_path, "{{ 1 // 0 }}"))


def test_untrusted_values_are_text_not_template(tmp_path):
    wf = workflow(tmp_path, "{{ issue.title }}")
    assert first(wf, issue={**ISSUE, "title": "{{ 7 * 7 }} <b>&</b>"}) == "{{ 7 * 7 }} <b>&</b>"  # no autoescape


def test_continuation_default(tmp_path):
    wf = workflow(tmp_path, "body", extra="  handoff_states: [Human Review, QA]\n")
    text = render_continuation(wf, issue=ISSUE, attempt=None, project=PROJECT, task=TASK, turn=3, max_turns=20)
    assert 'ABC-12 is still in state "In Progress"' in text
    assert "turn 3 of 20" in text
    assert "Resume from the current workspace" in text
    assert 'move the issue to "Human Review" with the tracker_update_state tool' in text
    no_tools = workflow(tmp_path, "body", extra="  handoff_states: [Human Review]\n  tools: false\n")
    text = render_continuation(no_tools, issue=ISSUE, attempt=None, project=PROJECT, task=TASK, turn=2, max_turns=5)
    assert 'move the issue to "Human Review";' in text and "tracker_update_state" not in text
    plain = render_continuation(workflow(tmp_path, "body"), issue={**ISSUE, "state": None}, attempt=1,
                                project=PROJECT, task=TASK, turn=2, max_turns=5)
    assert "ABC-12 is still active" in plain and "turn 2 of 5" in plain
    assert "tracker_update_state" not in plain and "move the issue" not in plain


def test_continuation_prompt_template(tmp_path):
    extra = "agent:\n  continuation_prompt: 'Turn {{ turn }}/{{ max_turns }} on {{ issue.identifier }} ({{ attempt }})'\n"
    wf = workflow(tmp_path, "body", extra=extra)
    assert render_continuation(wf, issue=ISSUE, attempt=None, project=PROJECT, task=TASK, turn=2, max_turns=9) == \
        "Turn 2/9 on ABC-12 (None)"
    strict = workflow(tmp_path, "body", extra="agent:\n  continuation_prompt: |\n    ok\n    {{ nope }}\n")
    with pytest.raises(PromptError) as caught:
        render_continuation(strict, issue=ISSUE, attempt=None, project=PROJECT, task=TASK, turn=2, max_turns=9)
    assert str(caught.value) == "agent.continuation_prompt line 2: 'nope' is undefined"


def _task(**fields) -> Task:
    now = datetime(2025, 1, 2, tzinfo=timezone.utc)
    return Task.model_validate({"id": "t1", "title": "Fix the login", "created_at": now, "updated_at": now, **fields})


def test_issue_vars_from_the_issue():
    issue = Issue(id="u-1", identifier="ABC-12", title="Fix the login", description="It fails.", url=None,
                  state="Rework", priority=1, labels=(" Bug ", "Baton"),
                  updated_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc))
    assert issue_vars(issue, _task()) == {
        "id": "u-1", "identifier": "ABC-12", "title": "Fix the login", "description": "It fails.", "priority": 1,
        "state": "Rework", "url": None, "labels": ["bug", "baton"], "branch_name": None, "blocked_by": [],
        "created_at": None, "updated_at": "2025-03-04T05:06:07+00:00"}


def test_issue_vars_from_the_task_when_the_tracker_cannot_say():
    issue = Issue(id="u-1", identifier="ABC-12", title="x", description="Line one.\n\nLine two.",
                  url="https://linear.app/x/issue/ABC-12", state="Todo")
    source = {"kind": "linear", "id": "u-1", "identifier": "ABC-12", "url": issue.url}
    task = _task(content=task_content(issue), source=source, priority="high")
    assert issue_vars(None, task) == {
        "id": "u-1", "identifier": "ABC-12", "title": "Fix the login", "description": "Line one.\n\nLine two.",
        "priority": 2, "state": None, "url": "https://linear.app/x/issue/ABC-12", "labels": [], "branch_name": None,
        "blocked_by": [], "created_at": None, "updated_at": None}
    bare = _task(content="ABC-12", source={**source, "url": None})
    assert issue_vars(None, bare)["description"] == ""
    assert issue_vars(None, _task(content="hand written"))["identifier"] == "t1"


# ----- resource limits (R1 L2): refused before they allocate -------------------------------------

@pytest.mark.parametrize("body", [
    "{{ '%*s' % (300000000, '') }}",
    "{{ '%300000000s' % '' }}",
    "{{ '%.300000000f' % 1.5 }}",
    "{{ 'a'|center(300000000) }}",
    "{{ 'a'|indent(300000000) }}",
    "{{ 'a\\nb'|indent('x' * 1000000) }}",
    "{{ '%*s'|format(300000000, '') }}",
    "{{ ('a' * 1000000)|replace('a', 'bb') }}",
    "{{ ('a ' * 500000)|wordwrap(1, wrapstring='x' * 1000) }}",
    "{{ ['a' * 1000000, 'b' * 1000000]|join }}",
    "{{ [1]|batch(300000000, 0)|list }}",
    "{{ [1]|slice(300000000)|list }}",
    "{{ 'a'.center(300000000) }}",
    "{{ 'a'.ljust(300000000) }}",
    "{{ '{:>300000000}'.format('') }}",
    "{{ '{:>{w}}'.format('', w=300000000) }}",
    "{{ ('a' * 1000000).replace('a', 'bb') }}",
    "{{ 9 ** (9 ** 9) }}",
    "{{ 10 ** 100000 }}",
    "{{ 'x' * 2000000 }}",
    "{{ ['x'] * 2000000 }}",
    "{{ lipsum(1000000) }}",
    "{% set ns = namespace(n=3) %}{% for i in range(100) %}{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n > 0 }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
    "{{ ns.l|string|length }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
    "{{ (ns.l ~ '')|length }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
    "{{ ('%s' % (ns.l,))|length }}",
    "{% set l = [1] %}{% for i in range(60) %}{{ l.extend(l) }}{% endfor %}",
], ids=lambda body: body[:60])
def test_a_template_that_would_take_all_memory_is_refused(tmp_path, body):
    wf = workflow(tmp_path, body)
    with pytest.raises(PromptError) as caught:
        first(wf)
    assert caught.value.args[0].startswith("WORKFLOW.md line 6: ")


@pytest.mark.parametrize(("body", "expected"), [
    ("{{ '%5s|%-3d|%.2f' % ('ab', 7, 1.5) }}", "   ab|7  |1.50"),
    ("{{ '%*s' % (4, 'x') }}", "   x"),
    ("{{ 'a'|center(5) }}|{{ 'x\\ny'|indent(2, true) }}", "  a  |  x\n  y"),
    ("{{ '%s-%s'|format(1, 2) }} {{ 'aXa'|replace('X', 'yy') }}", "1-2 ayya"),
    ("{{ ['a', 'b']|join(', ') }} {{ [[1], [2]]|sum(start=[]) }}", "a, b [1, 2]"),
    ("{{ '{:>4}|{}'.format('x', 2) }} {{ 'ab'.ljust(4) }}|", "   x|2 ab  |"),
    ("{{ 9**9**9 }}", str((9 ** 9) ** 9)),  # jinja's ** groups from the left: 9**81, harmless
    ("{{ 2 ** 10 }} {{ 12 * 12 }} {{ 'ab' * 3 }} {{ [0] * 2 }} {{ 7 % 3 }}", "1024 144 ababab [0, 0] 1"),
    ("{% set ns = namespace(s='a') %}{% for i in range(3) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
     "aaaaaaaa"),
    ("{{ {'k': [1, 2]} }} {{ (1, 'x') ~ '!' }}", "{'k': [1, 2]} (1, 'x')!"),
], ids=lambda v: v[:40])
def test_ordinary_uses_of_the_checked_operations_still_work(tmp_path, body, expected):
    assert first(workflow(tmp_path, body)) == expected


def test_labels_render_as_a_comma_separated_list_and_still_iterate(tmp_path):
    wf = workflow(tmp_path, "{{ issue.labels }}|{% for l in issue.labels %}[{{ l }}]{% endfor %}|"
                            "{{ issue.labels|length }}|{{ issue.labels|join('+') }}|{{ issue.labels[0] }}")
    assert first(wf) == "bug, baton|[bug][baton]|2|bug+baton|bug"
    issue = Issue(id="u-1", identifier="ABC-1", title="t", description="", state="Todo", url=None,
                  labels=["Bug", " Baton "], priority=None, updated_at=None)
    labels = issue_vars(issue, _task())["labels"]
    assert list(labels) == ["bug", "baton"] and str(labels) == "bug, baton" and labels == ["bug", "baton"]
