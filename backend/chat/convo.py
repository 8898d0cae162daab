"""A stored conversation as the Messages API takes it.

The API wants turns that alternate, starting with the person, each with some content. So an
assistant message with no text (it failed before saying anything) is left out, and turns of
one role that end up next to each other are joined. Attached images go as base64 image
blocks, PDF files as document blocks, text files as text blocks naming the file.

Every question sends the whole conversation again, files included, and the API refuses a
request that is too large (or has too many images, or an image over its limit) — which would
break the conversation for good. So the files sent are budgeted (backend/chat/files.py), newest
first, by their recorded sizes before any is read; one that does not fit is replaced by a line
naming it as left out.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from . import files as chat_files
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


def left_out(attachment: Attachment, why: str) -> dict:
    return {"type": "text", "text": f"(The attached file {attachment.name!r} was left out: {why}.)"}


def sent_files(conversation: Conversation) -> dict[tuple[int, str], str | None]:
    """(message index, attachment id) -> None (sent) or why it is left out, for every file a
    message names: the newest first, while the request's budget of images and bytes lasts."""
    images, size = 0, 0
    verdicts: dict[tuple[int, str], str | None] = {}
    for index in range(len(conversation.messages) - 1, -1, -1):
        message = conversation.messages[index]
        if message.role != "user":
            continue
        for attachment_id in reversed(message.attachments):
            attachment = conversation.attachments.get(attachment_id)
            if attachment is None or (index, attachment_id) in verdicts:
                continue
            if attachment.image and attachment.size > chat_files.IMAGE_MAX_BYTES:
                why = "the image is larger than the API takes"  # stored before the chat's limit
            elif (size + attachment.size > chat_files.REQUEST_MAX_BYTES
                  or (attachment.image and images >= chat_files.REQUEST_MAX_IMAGES)):
                why = "too much for one request"
            else:
                why = None
                size += attachment.size
                images += attachment.image
            verdicts[(index, attachment_id)] = why
    return verdicts


def api_messages(conversation: Conversation, read: ReadFile) -> list[dict]:
    verdicts = sent_files(conversation)
    turns: list[dict] = []
    for index, message in enumerate(conversation.messages):
        blocks: list[dict] = []
        if message.text.strip():
            blocks.append({"type": "text", "text": message.text})
        if message.role == "user":
            for attachment_id in message.attachments:
                attachment = conversation.attachments.get(attachment_id)
                if attachment is None:
                    continue
                why = verdicts.get((index, attachment_id))
                blocks.append(attachment_block(attachment, read) if why is None else left_out(attachment, why))
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
