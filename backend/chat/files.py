"""Files attached to a chat message: the chat's limits over the task attachments' rules.

Names, allowed types (by extension and content) and the streaming multipart receiver are
backend/attachments.py's, shared with task attachments so both refuse and accept the same
files. The chat's own limits: 10 MiB per file, 10 files per message (one upload), 200 per
conversation. The bytes are stored under the attachment's id, not its name (a name is only
shown, and named to the model), beside the conversation: `<chat id>.files/<attachment id>`.
"""

from __future__ import annotations

from .. import attachments as shared

FILE_MAX_BYTES = 10 * shared.MIB
FILES_PER_MESSAGE = 10
FILES_PER_CHAT = 200
UPLOAD_MAX_BYTES = FILES_PER_MESSAGE * FILE_MAX_BYTES

LIMITS = {"max_file_bytes": FILE_MAX_BYTES, "max_files": FILES_PER_MESSAGE, "max_total_bytes": UPLOAD_MAX_BYTES}

UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "additionalProperties": False, "required": [shared.FIELD],
    "properties": {shared.FIELD: {"type": "array", "minItems": 1, "maxItems": FILES_PER_MESSAGE,
                                  "items": {"type": "string", "format": "binary"}}}}}}}}
UPLOAD_SUMMARY = (f"Files for the next message (multipart/form-data, field `{shared.FIELD}`, one or more; all "
                  f"stored or none). Limits: {FILE_MAX_BYTES // shared.MIB} MiB per file (413 too_large), "
                  f"{FILES_PER_MESSAGE} files at once (409 too_many_attachments), {FILES_PER_CHAT} per chat. "
                  f"Types: {shared.ALLOWED}, checked by extension and content (415 unsupported_type). Names are "
                  "cleaned to a plain file name (422 invalid_name when nothing is left). Images reach the model "
                  "as images, PDF as a document, text as text.")
