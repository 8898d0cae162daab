"""/agent/tasks/{id}/attachments: files a person attaches to a task (see backend/attachments.py
for the limits, the types and why the same name replaces the earlier file)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ... import attachments as files
from ...models import ATTACHMENT_NAME_MAX, Attachment, check_attachment_name
from ...web.errors import ERROR_RESPONSES, ApiError
from ...web.params import TaskIdPath
from ..deps import StoreDep
from .tasks import check_id

router = APIRouter(prefix="/agent/tasks", tags=["attachments"], responses=ERROR_RESPONSES)


class AttachmentList(BaseModel):
    attachments: list[Attachment]


class Uploaded(AttachmentList):
    """`attachments`: the files this request stored (each replaced an earlier file of that name if
    it is listed in `replaced`)."""

    replaced: list[str] = Field(default_factory=list,
                                description="Names that replaced a file of the same name already on the task.")


# The body is read as a stream (python-multipart's parser, each file capped as it arrives), so it
# is described here rather than declared as form fields FastAPI would read whole first.
UPLOAD_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "additionalProperties": False, "required": [files.FIELD],
    "properties": {files.FIELD: {"type": "array", "minItems": 1, "maxItems": files.MAX_FILES,
                                 "items": {"type": "string", "format": "binary"}}}}}}}}
UPLOAD_SUMMARY = (f"Attach files (multipart/form-data, field `{files.FIELD}`, one or more). Limits: "
                  f"{files.MAX_FILE_BYTES // files.MIB} MiB per file (413 too_large), {files.MAX_FILES} files per "
                  f"task (409 too_many_attachments), {files.MAX_TOTAL_BYTES // files.MIB} MiB per task in all (413). "
                  f"Types: {files.ALLOWED}, checked by extension and content (415 unsupported_type). Names are "
                  "cleaned to a plain file name (no folders, no leading dot, at most 100 characters; nothing left: "
                  "422 invalid_name); the same name again replaces the earlier file. An archived task: 409.")
# What GET …/{name} may answer with (Kind.served_type): never HTML.
DOWNLOAD_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "text/plain", "application/octet-stream"]
DOWNLOAD_DOC: dict[int | str, dict[str, Any]] = {200: {"description": "The file's bytes, as a download.", "content": {
    t: {"schema": {"type": "string", "format": "binary"}} for t in DOWNLOAD_TYPES}}}

NamePath = Annotated[str, Path(description="An attachment's name as listed.", min_length=1,
                               max_length=ATTACHMENT_NAME_MAX)]


def api_error(exc: files.AttachmentError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


def checked_name(task_id: str, name: str) -> str:
    """`name` if it can be an attachment's (models.check_attachment_name), else 404 not_found.
    The dashboard checks before relaying: `.` or `..` would be a dot segment in the agent's URL,
    which the HTTP client resolves (`…/attachments/..` is the task itself)."""
    try:
        return check_attachment_name(name)
    except ValueError:
        raise ApiError(404, "not_found", f"task {task_id} has no attachment {name[:120]!r}") from None


async def attachment_store(request: Request) -> files.AttachmentStore:
    """The project's AttachmentStore, made once per app (on the event loop: no two of them)."""
    state = request.app.state
    if getattr(state, "attachments", None) is None:
        state.attachments = files.AttachmentStore(state.settings.data_dir)
    return state.attachments


@router.post("/{task_id}/attachments", status_code=201, response_model=Uploaded, openapi_extra=UPLOAD_DOC,
             description=UPLOAD_SUMMARY)
async def upload(task_id: TaskIdPath, request: Request, store: StoreDep) -> dict:
    check_id(task_id)
    try:
        return await files.store_upload(store, await attachment_store(request), task_id, request.stream(),
                                        request.headers.get("content-type", ""), run_in_threadpool)
    except files.AttachmentError as exc:
        raise api_error(exc) from None


@router.get("/{task_id}/attachments", response_model=AttachmentList)
def list_attachments(task_id: TaskIdPath, store: StoreDep) -> dict:
    """The task's files (also in the task record as `attachments`)."""
    check_id(task_id)
    return {"attachments": store.get(task_id).attachments}


@router.get("/{task_id}/attachments/{name}", response_class=FileResponse, responses=DOWNLOAD_DOC)
async def download(task_id: TaskIdPath, name: NamePath, request: Request, store: StoreDep) -> FileResponse:
    """The file, always as a download (Content-Disposition: attachment, nosniff): images with
    their type, text as text/plain, anything else as application/octet-stream."""
    check_id(task_id)
    checked_name(task_id, name)
    task = await run_in_threadpool(store.get, task_id)
    try:
        found, path = (await attachment_store(request)).file(task, name)
    except files.AttachmentError as exc:
        raise api_error(exc) from None
    return FileResponse(path, media_type=files.served_type(found.name), headers=files.download_headers(found.name))
