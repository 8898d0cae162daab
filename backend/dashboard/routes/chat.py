"""/api/projects/{project_id}/chats...: chat with a project (backend/chat/).

Conversations live in the dashboard (it holds the key and runs the model); the project's
context comes from its agent's GET /agent/context (or its folder, for a project without one),
and a plan made from a chat is created on the project like any other plan.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from ... import attachments as shared_files
from ...chat import files as chat_files
from ...chat.config import ChatConfig
from ...chat.service import Answer, ChatProblem, ChatService
from ...chat.store import ChatCorrupt, ChatNotFound
from ...models import TASK_ID_RE, TITLE_MAX_CHARS, TITLE_PATTERN, _check_title, _utf8_size
from ...web.errors import ERROR_RESPONSES, ApiError
from ...web.sse import sse_event
from ..connectors.base import AgentError, Connector, Unavailable, reason_of
from .api import connector_for

log = logging.getLogger("baton.chat")

router = APIRouter(prefix="/api/projects/{project_id}/chats", tags=["chat"], responses=ERROR_RESPONSES)

TEXT_MAX_CHARS = 100_000
KEEPALIVE_SECONDS = 15.0
_ID = {"pattern": TASK_ID_RE.pattern, "minLength": 1, "maxLength": 32}
ChatIdPath = Annotated[str, PathParam(description="A chat id (10 characters of a-z and 0-9).", json_schema_extra=_ID)]
AttachmentIdPath = Annotated[str, PathParam(description="An attachment id.", json_schema_extra=_ID)]
AttachmentId = Annotated[str, StringConstraints(pattern=TASK_ID_RE.pattern)]


class NewChat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str | None, Field(
        description="One line; default: the first line of the first message.",
        json_schema_extra={"minLength": 1, "maxLength": TITLE_MAX_CHARS, "pattern": TITLE_PATTERN})] = None

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        return None if value is None else _check_title(value)


class NewChatMessage(BaseModel):
    """Text, attachments (ids from POST …/attachments), or both."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["text"], "properties": {"text": {"pattern": r"\S"}}},
        {"required": ["attachments"], "properties": {"attachments": {"minItems": 1}}}]})

    text: Annotated[str, Field(json_schema_extra={"maxLength": TEXT_MAX_CHARS})] = ""
    attachments: Annotated[list[AttachmentId], Field(max_length=chat_files.FILES_PER_MESSAGE)] = []

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        if len(value) > TEXT_MAX_CHARS:
            raise ValueError(f"must be at most {TEXT_MAX_CHARS} characters")
        _utf8_size(value)
        return value

    @model_validator(mode="after")
    def _something(self) -> "NewChatMessage":
        if not self.text.strip() and not self.attachments:
            raise ValueError("a message needs text or attachments")
        return self


def build_chat(config: ChatConfig) -> ChatService:
    """The dashboard's chat. Without a folder (a config not read from a file, e.g. in tests)
    conversations go to a temporary folder, made when first needed."""
    return ChatService(config, Path(config.dir) if config.dir else None)


def _service(request: Request) -> ChatService:
    return request.app.state.chat


async def _call(coro):
    try:
        return await coro
    except ChatProblem as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    except ChatNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ChatCorrupt as exc:
        raise ApiError(409, "chat_corrupt", f"this conversation cannot be read: {exc}") from None
    except OSError as exc:
        log.warning("chat storage: %s", exc)
        raise ApiError(503, "chat_storage", f"the chat folder cannot be used: {exc.strerror or exc}") from None


def _context_source(connector: Connector):
    async def read() -> tuple[dict | None, str | None]:
        try:
            return await connector.context(), None
        except (Unavailable, AgentError) as exc:
            return None, reason_of(exc)
    return read


def _check(chat_id: str) -> None:
    if not TASK_ID_RE.fullmatch(chat_id):
        raise ApiError(404, "not_found", f"no chat {chat_id!r}")


@router.get("")
async def list_chats(project_id: str, request: Request) -> dict:
    """The project's conversations, newest first, and whether the chat is enabled (`hint`: how to
    enable it)."""
    connector_for(request, project_id)
    service = _service(request)
    chats = await _call(asyncio.to_thread(service.store.summaries, project_id))
    return {**service.status(), "chats": chats}


@router.post("", status_code=201)
async def create_chat(project_id: str, request: Request, body: NewChat | None = None) -> dict:
    connector_for(request, project_id)
    return await _call(_service(request).create(project_id, (body or NewChat()).title))


@router.get("/{chat_id}")
async def get_chat(project_id: str, chat_id: ChatIdPath, request: Request) -> dict:
    """Its messages (with attachments, tokens and cost), totals and the plans made from it."""
    connector_for(request, project_id)
    _check(chat_id)
    return (await _call(_service(request).load(project_id, chat_id))).detail()


@router.post("/{chat_id}/messages", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "`user` (the stored message), `delta` {text}…, then `done` "
                                             "{message, totals} or `error` {message, stored, totals}."}})
async def send_message(project_id: str, chat_id: ChatIdPath, body: NewChatMessage,
                       request: Request) -> StreamingResponse:
    """Send a message; the answer streams back as Server-Sent Events. Leaving (closing the
    connection) stops the answer, as POST …/stop does; what was said is kept."""
    connector = connector_for(request, project_id)
    _check(chat_id)
    answer = await _call(_service(request).start_answer(
        project_id, chat_id, body.text, body.attachments, connector.project.name or project_id,
        _context_source(connector)))
    return StreamingResponse(_events(answer), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(answer: Answer):
    try:
        yield sse_event("user", answer.user)
        while True:
            try:
                item = await asyncio.wait_for(answer.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                return
            yield sse_event(*item)
    finally:
        answer.stop()  # the page went away before the end: stop (a no-op once it has ended)


@router.post("/{chat_id}/stop")
async def stop(project_id: str, chat_id: ChatIdPath, request: Request) -> dict:
    """Stop the answer under way; its partial text is kept (stopped: true). `stopped`: whether
    one was under way."""
    connector_for(request, project_id)
    _check(chat_id)
    return {"stopped": await _service(request).stop(project_id, chat_id)}


@router.post("/{chat_id}/plan", status_code=201)
async def make_plan(project_id: str, chat_id: ChatIdPath, request: Request) -> dict:
    """Ask the model for a plan of this conversation (tool `propose_plan`, validated, asked once
    more if invalid) and create it as a draft on the project: the plan, as the agent answered.
    A plan cut off at `chat.plan_max_tokens` is refused (422 plan_too_long), never used in part.
    Making a plan cannot be stopped: POST …/stop answers `stopped: false` meanwhile, and a client
    that leaves does not end it (it ends within the API's timeout, `chat.timeout_seconds`, per
    attempt; the chat is busy until then)."""
    connector = connector_for(request, project_id)
    _check(chat_id)
    return await _call(_service(request).make_plan(
        project_id, chat_id, connector.project.name or project_id, _context_source(connector),
        connector.create_plan))


@router.post("/{chat_id}/attachments", status_code=201, openapi_extra=chat_files.UPLOAD_DOC,
             description=chat_files.UPLOAD_SUMMARY)
async def attach(project_id: str, chat_id: ChatIdPath, request: Request) -> dict:
    connector_for(request, project_id)
    _check(chat_id)
    return {"attachments": await _call(_service(request).attach(
        project_id, chat_id, request.stream(), request.headers.get("content-type", "")))}


_DOWNLOAD_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "text/plain", "application/octet-stream"]


@router.get("/{chat_id}/attachments/{attachment_id}", response_class=Response,
            responses={200: {"description": "The file's bytes, as a download.", "content": {
                t: {"schema": {"type": "string", "format": "binary"}} for t in _DOWNLOAD_TYPES}}})
async def attachment(project_id: str, chat_id: ChatIdPath, attachment_id: AttachmentIdPath,
                     request: Request) -> Response:
    """An attached file, as task attachments are served: always a download, images with their
    type, text as text/plain, anything else as application/octet-stream."""
    connector_for(request, project_id)
    _check(chat_id)
    service = _service(request)
    conversation = await _call(service.load(project_id, chat_id))
    meta = conversation.attachments.get(attachment_id)
    if meta is None:
        raise ApiError(404, "not_found", f"no attachment {attachment_id!r} in this chat")
    data = await _call(asyncio.to_thread(service.store.read_file, project_id, chat_id, attachment_id))
    return Response(data, media_type=shared_files.served_type(meta.name),
                    headers=shared_files.download_headers(meta.name))
