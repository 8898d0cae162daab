"""/api/projects/{id}/tasks/{task_id}/attachments: the agent's attachment routes, relayed. An
upload's multipart body is passed through as it arrives (the agent, or the local connector with
the same code, checks and caps it); a download is answered with the same headers the agent uses."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ... import attachments as files
from ...agent.routes.attachments import (DOWNLOAD_DOC, UPLOAD_DOC, UPLOAD_SUMMARY, AttachmentList, NamePath,
                                         Uploaded, checked_name)
from ...agent.routes.tasks import check_id
from ...web.errors import ERROR_RESPONSES
from ...web.params import TaskIdPath
from .api import connector_for

router = APIRouter(prefix="/api", tags=["attachments"], responses=ERROR_RESPONSES)


@router.post("/projects/{project_id}/tasks/{task_id}/attachments", status_code=201, response_model=Uploaded,
             openapi_extra=UPLOAD_DOC, description=UPLOAD_SUMMARY)
async def upload(project_id: str, task_id: TaskIdPath, request: Request) -> dict:
    check_id(task_id)
    connector = connector_for(request, project_id)
    return await connector.upload_attachments(task_id, request.headers.get("content-type", ""), request.stream())


@router.get("/projects/{project_id}/tasks/{task_id}/attachments", response_model=AttachmentList)
async def listing(project_id: str, task_id: TaskIdPath, request: Request) -> dict:
    check_id(task_id)
    return await connector_for(request, project_id).attachments(task_id)


@router.get("/projects/{project_id}/tasks/{task_id}/attachments/{name}", response_class=Response,
            responses=DOWNLOAD_DOC)
async def download(project_id: str, task_id: TaskIdPath, name: NamePath, request: Request) -> Response:
    """The file as a download; its type decided here again from its name (never HTML). A name
    that cannot be an attachment's is refused here, never relayed (see checked_name)."""
    check_id(task_id)
    checked_name(task_id, name)
    data = await connector_for(request, project_id).attachment_file(task_id, name)
    return Response(data, media_type=files.served_type(name), headers=files.download_headers(name))
