"""Files attached to a chat message: the chat's limits over the task attachments' rules.

Names, allowed types (by extension and content) and the streaming multipart receiver are
backend/attachments.py's, shared with task attachments so both refuse and accept the same
files. The chat's own limits follow what the Messages API takes, since every earlier file is
sent again with each question: 10 MiB per file, but an image at most 3.75 MiB (the API refuses
images over 5 MB of base64, and one refused image would break the conversation for good);
10 files per message (one upload), 200 and 20 MiB per conversation. The bytes are stored under
the attachment's id, not its name (a name is only shown, and named to the model), beside the
conversation: `<chat id>.files/<attachment id>`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from .. import attachments as shared

FILE_MAX_BYTES = 10 * shared.MIB
IMAGE_MAX_BYTES = 15 * shared.MIB // 4  # 3.75 MiB: 5 MiB once base64-encoded, the API's limit per image
FILES_PER_MESSAGE = 10
FILES_PER_CHAT = 200
CHAT_MAX_BYTES = 20 * shared.MIB  # all of a conversation's files together
UPLOAD_MAX_BYTES = CHAT_MAX_BYTES

# What one request to the model carries of the conversation's files (newest first; the rest are
# named to the model as left out): well under the API's 32 MB per request once base64-encoded.
REQUEST_MAX_IMAGES = 20
REQUEST_MAX_BYTES = 16 * shared.MIB

LIMITS = {"max_file_bytes": FILE_MAX_BYTES, "max_files": FILES_PER_MESSAGE, "max_total_bytes": UPLOAD_MAX_BYTES}


def _mib(size: int) -> str:
    return f"{size / shared.MIB:g} MiB"


class ChatReceiver(shared.Receiver):
    """The shared receiver, with the chat's smaller limit for images (refused at the byte that
    crosses it, like any file over its limit)."""

    def _data(self, data: bytes, start: int, end: int) -> None:
        upload = self._part.upload
        if upload is not None and upload.kind.image and upload.size + (end - start) > IMAGE_MAX_BYTES:
            raise shared.AttachmentError(413, "too_large", f"{upload.name}: an image in a chat may be at most "
                                         f"{_mib(IMAGE_MAX_BYTES)} (the Anthropic API's limit); make it smaller "
                                         "or send it as a task attachment")
        super()._data(data, start, end)


async def receive(chunks: AsyncIterator[bytes], content_type: str, folder: Path) -> tuple[ChatReceiver, list]:
    """backend/attachments.py's receive(), with the chat's receiver and limits."""
    return await shared.receive(chunks, content_type, folder, receiver_class=ChatReceiver, **LIMITS)


UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "additionalProperties": False, "required": [shared.FIELD],
    "properties": {shared.FIELD: {"type": "array", "minItems": 1, "maxItems": FILES_PER_MESSAGE,
                                  "items": {"type": "string", "format": "binary"}}}}}}}}
UPLOAD_SUMMARY = (f"Files for the next message (multipart/form-data, field `{shared.FIELD}`, one or more; all "
                  f"stored or none). Limits: {_mib(FILE_MAX_BYTES)} per file and {_mib(IMAGE_MAX_BYTES)} per "
                  f"image (413 too_large), {FILES_PER_MESSAGE} files at once (409 too_many_attachments), "
                  f"{FILES_PER_CHAT} files (409) and {_mib(CHAT_MAX_BYTES)} (413 too_large) per chat. "
                  f"Types: {shared.ALLOWED}, checked by extension and content (415 unsupported_type). Names are "
                  "cleaned to a plain file name (422 invalid_name when nothing is left). Images reach the model "
                  "as images, PDF as a document, text as text; each question sends the newest files up to "
                  f"{REQUEST_MAX_IMAGES} images and {_mib(REQUEST_MAX_BYTES)}, and names the older ones as "
                  "left out.")
