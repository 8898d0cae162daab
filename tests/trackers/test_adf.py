"""Plain text <-> Atlassian Document Format (Jira descriptions and comments)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.trackers.jira.adf import adf_to_text, text_to_adf


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def paragraph(*content: dict) -> dict:
    return {"type": "paragraph", "content": list(content)}


def doc(*content) -> dict:
    return {"type": "doc", "version": 1, "content": list(content)}


def test_blank_lines_make_paragraphs_and_single_newlines_hard_breaks():
    assert text_to_adf("Landed abc123.\nCost $0.42\n\n\nDuration 3 min\r\n") == doc(
        paragraph(text("Landed abc123."), {"type": "hardBreak"}, text("Cost $0.42")),
        paragraph(text("Duration 3 min")))


@pytest.mark.parametrize("value", ["", "\n\n", "   \n \n"])
def test_empty_text_is_one_empty_paragraph_never_an_empty_text_node(value):
    assert text_to_adf(value) == doc({"type": "paragraph", "content": []})


def non_empty_text_nodes(node) -> bool:
    if isinstance(node, dict):
        if node.get("type") == "text" and not node.get("text"):
            return False
        return all(non_empty_text_nodes(child) for child in node.get("content", []))
    return True


def visible(value: str) -> str:
    return "".join(ch for ch in value if not ch.isspace())


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_any_text_survives_a_round_trip_as_jira_would_show_it(value):
    adf = text_to_adf(value)
    assert non_empty_text_nodes(adf)
    back = adf_to_text(adf)
    # Every visible character comes back in order; only blank lines and line endings are unified.
    assert visible(back) == visible(value)
    assert adf_to_text(text_to_adf(back)) == back


def test_simple_text_round_trips_exactly():
    value = "Fixed the login bug.\nSee https://github.com/acme/shop/pull/7\n\nCost: $0.42, 3 min"
    assert adf_to_text(text_to_adf(value)) == value


def test_rich_documents_read_as_markdown_ish_text():
    document = doc(
        {"type": "heading", "attrs": {"level": 2}, "content": [text("Steps")]},
        {"type": "orderedList", "attrs": {"order": 3}, "content": [
            {"type": "listItem", "content": [paragraph(text("open"))]},
            {"type": "listItem", "content": [paragraph(text("click")), {"type": "bulletList", "content": [
                {"type": "listItem", "content": [paragraph(text("twice"))]}]}]}]},
        {"type": "codeBlock", "attrs": {"language": "python"}, "content": [text("print(1)\nprint(2)")]},
        {"type": "blockquote", "content": [paragraph(text("quoted")), paragraph(text("more"))]},
        {"type": "rule"},
        paragraph({"type": "mention", "attrs": {"id": "abc", "text": "@Ann"}}, text(" see "),
                  {"type": "inlineCard", "attrs": {"url": "https://x.test/1"}}, text(" and "),
                  {"type": "text", "text": "docs", "marks": [{"type": "link", "attrs": {"href": "https://d.test"}}]},
                  {"type": "hardBreak"}, {"type": "mention", "attrs": {"id": "xyz"}}),
        {"type": "panel", "attrs": {"panelType": "info"}, "content": [paragraph(text("inside a panel"))]},
    )
    assert adf_to_text(document) == (
        "## Steps\n\n"
        "3. open\n4. click\n   - twice\n\n"
        "```python\nprint(1)\nprint(2)\n```\n\n"
        "> quoted\n>\n> more\n\n"
        "---\n\n"
        "@Ann see https://x.test/1 and [docs](https://d.test)\n@xyz\n\n"
        "inside a panel")


@pytest.mark.parametrize("garbage", [
    None, 42, "plain string from API v2", [], {}, {"type": "doc"}, {"type": "doc", "content": "x"},
    {"type": "doc", "content": [None, 5, "s", {"type": "paragraph", "content": [None, {"type": "text", "text": 7}]}]},
    {"type": "doc", "content": [{"type": "heading", "attrs": "no", "content": [{"type": "hardBreak"}]}]},
    {"type": "doc", "content": [{"type": "bulletList", "content": [{"no": "type"}, 3]}]},
])
def test_garbage_never_raises(garbage):
    assert isinstance(adf_to_text(garbage), str)


def test_a_hostile_deep_document_is_empty_text_not_a_crash():
    node: dict = text("deep")
    for _ in range(5000):
        node = {"type": "blockquote", "content": [node]}
    assert adf_to_text(doc(node)) == ""
