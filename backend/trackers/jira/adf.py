"""Atlassian Document Format <-> plain text, for Jira descriptions and comments.

Jira v3 takes and gives rich text only as ADF. Baton writes plain text (paragraphs on blank
lines, hard breaks on single newlines) and reads ADF back as Markdown-ish text. Reading never
raises: a document from the wire may be anything.
"""

from __future__ import annotations

import re
from typing import Any

_PARAGRAPH_SPLIT = re.compile(r"\n[ \t]*\n")


def text_to_adf(text: str) -> dict:
    """Paragraphs on blank lines, hardBreak for single newlines; never an empty text node
    (Jira refuses one)."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = []
    for block in _PARAGRAPH_SPLIT.split(text.strip("\n")):
        block = block.strip("\n")
        if not block.strip():
            continue
        content: list[dict] = []
        for i, line in enumerate(block.split("\n")):
            if i:
                content.append({"type": "hardBreak"})
            if line:
                content.append({"type": "text", "text": line})
        paragraphs.append({"type": "paragraph", "content": content})
    if not paragraphs:
        paragraphs = [{"type": "paragraph", "content": []}]  # an empty paragraph is valid ADF
    return {"type": "doc", "version": 1, "content": paragraphs}


def adf_to_text(doc: Any) -> str:
    """Plain (Markdown-ish) text of an ADF document; "" for anything that is not one."""
    try:
        if isinstance(doc, str):
            return doc
        return _blocks(_children(doc)).strip("\n")
    except RecursionError:  # a hostile, absurdly deep document
        return ""


def _children(node: Any) -> list:
    content = node.get("content") if isinstance(node, dict) else None
    return content if isinstance(content, list) else []


def _attr(node: dict, key: str) -> Any:
    attrs = node.get("attrs")
    return attrs.get(key) if isinstance(attrs, dict) else None


def _blocks(nodes: list, sep: str = "\n\n") -> str:
    """Block nodes, one after another, separated by a blank line."""
    parts = [_block(node) for node in nodes]
    return sep.join(part for part in parts if part)


def _block(node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    kind = node.get("type")
    if kind == "heading":
        level = _attr(node, "level")
        level = level if isinstance(level, int) and 1 <= level <= 6 else 1
        return "#" * level + " " + _inline(_children(node))
    if kind in ("bulletList", "orderedList"):
        start = _attr(node, "order") if kind == "orderedList" else None
        number = start if isinstance(start, int) else 1
        lines = []
        for item in _children(node):
            marker = f"{number}. " if kind == "orderedList" else "- "
            number += 1
            body = _blocks(_children(item), sep="\n") if isinstance(item, dict) and item.get("type") == "listItem" \
                else _block(item)
            indent = " " * len(marker)
            lines.append(marker + body.replace("\n", "\n" + indent))
        return "\n".join(lines)
    if kind == "codeBlock":
        language = _attr(node, "language")
        fence = "```" + (language if isinstance(language, str) else "")
        return f"{fence}\n{_inline(_children(node))}\n```"
    if kind == "blockquote":
        return "\n".join("> " + line if line else ">" for line in _blocks(_children(node)).split("\n"))
    if kind == "rule":
        return "---"
    if kind == "paragraph":
        return _inline(_children(node))
    if kind in _INLINE:
        return _inline([node])
    if kind in ("blockCard", "embedCard"):
        url = _attr(node, "url")
        return url if isinstance(url, str) else ""
    # Unknown blocks (panels, tables, media…): their children's text.
    children = _children(node)
    if children and all(isinstance(c, dict) and c.get("type") in _INLINE for c in children):
        return _inline(children)
    return _blocks(children)


_INLINE = {"text", "hardBreak", "mention", "inlineCard", "emoji", "status"}


def _inline(nodes: list) -> str:
    out = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "text":
            text = node.get("text")
            out.append(_linked(text, node.get("marks")) if isinstance(text, str) else "")
        elif kind == "hardBreak":
            out.append("\n")
        elif kind == "mention":
            text = _attr(node, "text")
            ident = _attr(node, "id")
            out.append(text if isinstance(text, str) and text else f"@{ident}" if isinstance(ident, str) else "@")
        elif kind == "inlineCard":
            url = _attr(node, "url")
            out.append(url if isinstance(url, str) else "")
        elif kind == "emoji":
            text = _attr(node, "text") or _attr(node, "shortName")
            out.append(text if isinstance(text, str) else "")
        elif kind == "status":
            text = _attr(node, "text")
            out.append(text if isinstance(text, str) else "")
        else:  # unknown inline nodes: their children's text, if any
            out.append(_inline(_children(node)))
    return "".join(out)


def _linked(text: str, marks: Any) -> str:
    """A link keeps its target: [text](href), or the bare URL when they are the same."""
    for mark in marks if isinstance(marks, list) else []:
        if isinstance(mark, dict) and mark.get("type") == "link":
            href = _attr(mark, "href")
            if isinstance(href, str) and href and href != text:
                return f"[{text}]({href})"
    return text
