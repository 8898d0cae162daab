"""A stored conversation as the Messages API takes it.

The API wants turns that alternate, starting with the person, each with some content. So an
assistant message with no text (it failed before saying anything) is left out, and turns of
one role that end up next to each other are joined. Attached images go as base64 image
blocks, PDF files as document blocks, text files as text blocks naming the file.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from .store import Attachment, Conversation

ReadFile = Callable[[str], bytes]  # attachment id -> bytes


def attachment_block(attachment: Attachment, read: ReadFile) -> dict:
    try:
        data = read(attachment.id)
    except OSError:
        return {"type": "text", "text": f"(The attached file {attachment.name!r} is no longer available.)"}
    if attachment.image or attachment.content_type == "application/pdf":
        return {"type": "image" if attachment.image else "document",
                "source": {"type": "base64", "media_type": attachment.content_type,
                           "data": base64.b64encode(data).decode("ascii")}}
    text = data.decode("utf-8", errors="replace")
    return {"type": "text", "text": f"<attached_file name={attachment.name!r}>\n{text}\n</attached_file>"}


def api_messages(conversation: Conversation, read: ReadFile) -> list[dict]:
    turns: list[dict] = []
    for message in conversation.messages:
        blocks: list[dict] = []
        if message.text.strip():
            blocks.append({"type": "text", "text": message.text})
        if message.role == "user":
            blocks += [attachment_block(conversation.attachments[a], read)
                       for a in message.attachments if a in conversation.attachments]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == message.role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": message.role, "content": blocks})
    if turns and turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "(conversation start)"}]})
    return turns


def with_final_user_turn(turns: list[dict], blocks: list[dict]) -> list[dict]:
    """`turns` plus the person's `blocks` (joined to a last user turn, if that is where it ends)."""
    out = [{"role": t["role"], "content": list(t["content"])} for t in turns]
    if out and out[-1]["role"] == "user":
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": "user", "content": list(blocks)})
    return out
