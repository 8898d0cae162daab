"""The chat's moving parts in the dashboard: answers streamed from the Messages API, stopped on
request or when the page goes away, and plans made from a conversation.

An answer runs as its own asyncio task and hands its events to the response through a queue:
the stop route and a vanished client both cancel that task, which then stores what was said
(stopped=true) before it ends; once the answer is being stored a stop no longer cancels it, it
waits for it. The person's message is stored before the model is asked, the answer when it has
ended (done, stopped or failed with the partial text and the error; `usage_partial` when the
API's final token count never came). One answer (or plan) at a time per conversation. The API
key is read from the environment for each request and handed only to the SDK client.

The SDK wraps errors of the request itself, not those of reading the stream after it (a dropped
connection, a read timeout: httpx2 errors), so both are caught here; and a stream that ends
without the API's end of the message is a dropped answer too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx2

from .. import attachments as shared_files
from ..models import new_task_id, utcnow
from ..plans.model import PlanDraft
from . import files as chat_files
from . import planning
from .config import ChatConfig
from .context import system_prompt
from .convo import api_messages, with_final_user_turn
from .store import DEFAULT_TITLE, Attachment, ChatStore, Conversation, Message, Usage

log = logging.getLogger("baton.chat")

DROPPED = "the connection to the Anthropic API dropped mid-answer"
STOP_WAIT_SECONDS = 10.0  # how long the stop route waits for the stopped answer to be stored
TITLE_FROM_TEXT_MAX = 80

ContextSource = Callable[[], Awaitable[tuple[dict | None, str | None]]]  # () -> (context, why missing)


class ChatProblem(Exception):
    """A request the chat refuses: HTTP status, error code, message (the routes pass it on)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Answer:
    """One answer under way: its events, in order, end with None."""

    user: dict
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    stopping: bool = False
    storing: bool = False  # the answer has ended and is being stored: too late to stop it

    def stop(self) -> None:
        if self.task is not None and not self.task.done() and not self.stopping and not self.storing:
            self.stopping = True
            self.task.cancel()


class ChatService:
    def __init__(self, config: ChatConfig, root: Path | None) -> None:
        self.config = config
        self.store = ChatStore(root)
        self._busy: dict[tuple[str, str], Answer | None] = {}  # None: a plan is being made

    # ----- state ---------------------------------------------------------------------------

    def status(self) -> dict:
        enabled = self.config.api_key() is not None
        return {"enabled": enabled, "model": self.config.model, "hint": None if enabled else self.config.hint()}

    def _key(self) -> str:
        key = self.config.api_key()
        if key is None:
            raise ChatProblem(409, "chat_disabled", self.config.hint())
        return key

    def _client(self, key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(api_key=key, base_url=self.config.base_url,
                                        max_retries=self.config.max_retries, timeout=self.config.timeout_seconds)

    def _claim(self, project_id: str, chat_id: str, answer: Answer | None) -> None:
        if (project_id, chat_id) in self._busy:
            raise ChatProblem(409, "chat_busy", "this chat is answering already: wait for the answer or stop it")
        self._busy[(project_id, chat_id)] = answer

    def _release(self, project_id: str, chat_id: str) -> None:
        self._busy.pop((project_id, chat_id), None)

    async def load(self, project_id: str, chat_id: str) -> Conversation:
        return await asyncio.to_thread(self.store.load, project_id, chat_id)

    def _reader(self, project_id: str, chat_id: str) -> Callable[[str], bytes]:
        return lambda attachment_id: self.store.read_file(project_id, chat_id, attachment_id)

    # ----- conversations -------------------------------------------------------------------

    async def create(self, project_id: str, title: str | None) -> dict:
        return (await asyncio.to_thread(self.store.create, project_id, title)).summary()

    async def attach(self, project_id: str, chat_id: str, chunks: AsyncIterator[bytes],
                     content_type: str) -> list[dict]:
        """Receive a multipart upload (backend/attachments.py's rules, the chat's limits) and store
        every file, or none; their metadata, with the ids a message names."""
        await self.load(project_id, chat_id)  # an unknown chat: 404 before the body is read
        folder = await asyncio.to_thread(self.store.incoming, project_id, chat_id)
        try:
            receiver, uploads = await chat_files.receive(chunks, content_type, folder)
        except shared_files.AttachmentError as exc:
            raise ChatProblem(exc.status, exc.code, exc.message) from None
        try:
            files = [(Attachment(id=new_task_id(), name=upload.name, size=upload.size,
                                 content_type=upload.kind.content_type, image=upload.kind.image,
                                 sha256=upload.sha256, at=utcnow()), upload.path) for upload in uploads]

            def check(conversation: Conversation) -> None:  # the chat as it is now, under its lock
                if len(conversation.attachments) + len(files) > chat_files.FILES_PER_CHAT:
                    raise ChatProblem(409, "too_many_attachments",
                                      f"a chat holds at most {chat_files.FILES_PER_CHAT} files: start a new chat "
                                      "for more")
                held = sum(a.size for a in conversation.attachments.values())
                if held + sum(a.size for a, _ in files) > chat_files.CHAT_MAX_BYTES:
                    limit = chat_files.CHAT_MAX_BYTES / shared_files.MIB
                    raise ChatProblem(413, "too_large",
                                      f"this chat's files would be larger than {limit:g} MiB together (it holds "
                                      f"{held / shared_files.MIB:.1f} MiB; the limit per chat, since every question "
                                      "sends them again): start a new chat for more")

            await asyncio.to_thread(self.store.keep_files, project_id, chat_id, files, check)
            return [attachment.model_dump(mode="json") for attachment, _ in files]
        finally:
            receiver.close()

    # ----- answers -------------------------------------------------------------------------

    async def start_answer(self, project_id: str, chat_id: str, text: str, attachment_ids: list[str],
                           project_name: str, context: ContextSource) -> Answer:
        key = self._key()
        answer = Answer(user={})
        self._claim(project_id, chat_id, answer)
        try:
            conversation = await self.load(project_id, chat_id)
            unknown = [a for a in attachment_ids if a not in conversation.attachments]
            if unknown:
                raise ChatProblem(422, "unknown_attachment", f"no attachment {unknown[0]!r} in this chat "
                                  "(upload it first: POST …/attachments)")
            if not text.strip() and not attachment_ids:
                raise ChatProblem(422, "empty_message", "a message needs text or attachments")
            message = Message(id=new_task_id(), role="user", text=text, at=utcnow(), attachments=attachment_ids)
            await asyncio.to_thread(self.store.add_message, project_id, chat_id, message)
            conversation.messages.append(message)
            if conversation.title == DEFAULT_TITLE and text.strip():
                await asyncio.to_thread(self.store.append, project_id, chat_id,
                                        {"type": "title", "title": _title_from(text), "at": utcnow().isoformat()})
        except BaseException:
            self._release(project_id, chat_id)
            raise
        answer.user = conversation.message_out(message)
        answer.task = asyncio.create_task(self._answer(answer, project_id, chat_id, key, project_name, context))
        return answer

    async def stop(self, project_id: str, chat_id: str) -> bool:
        """Stop the answer under way, and wait (bounded) until what it said is stored."""
        answer = self._busy.get((project_id, chat_id))
        if answer is None or answer.task is None or answer.task.done():
            return False
        answer.stop()  # a no-op once the answer is being stored: then this waits for that
        try:
            async with asyncio.timeout(STOP_WAIT_SECONDS):
                await asyncio.shield(answer.task)
        except TimeoutError:
            log.warning("chat %s/%s: the stopped answer was not stored within %gs", project_id, chat_id,
                        STOP_WAIT_SECONDS)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this request itself is being cancelled
            # The answer's task ended cancelled (the app shutting down): it is over either way.
        return True

    async def _answer(self, answer: Answer, project_id: str, chat_id: str, key: str, project_name: str,
                      context: ContextSource) -> None:
        parts: list[str] = []
        usage = {"input": 0, "output": 0, "final": 0}
        stopped, error = False, None
        try:
            found, missing = await context()
            system = system_prompt(project_name, found, missing)
            conversation = await self.load(project_id, chat_id)
            turns = await asyncio.to_thread(api_messages, conversation, self._reader(project_id, chat_id))
            client = self._client(key)
            try:
                async with client.messages.stream(model=self.config.model, max_tokens=self.config.max_tokens,
                                                  system=system, messages=turns) as stream:
                    async for event in stream:
                        _count(event, usage)
                        if event.type == "content_block_delta" and event.delta.type == "text_delta":
                            parts.append(event.delta.text)
                            answer.queue.put_nowait(("delta", {"text": event.delta.text}))
                    final = await stream.get_final_message()
                    usage["input"] = max(usage["input"], final.usage.input_tokens or 0)
                    usage["output"] = max(usage["output"], final.usage.output_tokens or 0)
                    if final.stop_reason is None:  # the stream ended without the API's end of the answer
                        error = DROPPED
            finally:
                await asyncio.shield(client.close())
        except asyncio.CancelledError:
            stopped = True
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # this task's own stop, handled: what follows may await again
        except anthropic.APIError as exc:
            error = describe_api_error(exc, self.config, key)
        except httpx2.TransportError as exc:  # while the stream is read: the SDK does not wrap these
            error = self._transport_error(exc)
        except Exception:
            log.exception("chat %s/%s: the answer failed", project_id, chat_id)
            error = "internal error while answering; see the dashboard's log"
        answer.storing = True  # from here on a stop waits for the answer to be stored
        tokens = usage["input"] or usage["output"]
        message = Message(id=new_task_id(), role="assistant", text="".join(parts), at=utcnow(),
                          model=self.config.model, input_tokens=usage["input"], output_tokens=usage["output"],
                          cost_usd=self.config.cost(self.config.model, usage["input"], usage["output"]),
                          stopped=stopped, error=error, usage_partial=bool(tokens) and not usage["final"])
        release = True
        write = asyncio.ensure_future(asyncio.to_thread(self.store.add_message, project_id, chat_id, message))
        try:
            try:
                # Shielded: a cancel from outside (the app shutting down) must not lose what was said.
                await asyncio.shield(write)
            except asyncio.CancelledError:
                release = False  # the chat stays taken until the write in its thread has ended

                def written(done: asyncio.Future) -> None:
                    if not done.cancelled() and done.exception() is not None:
                        log.error("chat %s/%s: the answer could not be stored: %s", project_id, chat_id,
                                  done.exception())
                    self._release(project_id, chat_id)

                write.add_done_callback(written)
                raise
            conversation = await self.load(project_id, chat_id)
            body = {"message": conversation.message_out(message), "totals": conversation.totals()}
            if error is None:
                answer.queue.put_nowait(("done", body))
            else:
                answer.queue.put_nowait(("error", {"message": error, "stored": body["message"],
                                                   "totals": body["totals"]}))
        except Exception as exc:  # noqa: BLE001 - the page must hear that it was not stored
            log.exception("chat %s/%s: the answer could not be stored", project_id, chat_id)
            answer.queue.put_nowait(("error", {"message": f"the answer could not be stored: {exc}"}))
        finally:
            answer.queue.put_nowait(None)
            if release:
                self._release(project_id, chat_id)

    def _transport_error(self, exc: httpx2.TransportError) -> str:
        if isinstance(exc, httpx2.TimeoutException):
            return f"no answer from the Anthropic API within {self.config.timeout_seconds:g}s"
        return f"{DROPPED} ({exc})" if str(exc) else DROPPED

    # ----- plans ---------------------------------------------------------------------------

    async def make_plan(self, project_id: str, chat_id: str, project_name: str, context: ContextSource,
                        create_plan: Callable[[dict], Awaitable[dict]]) -> dict:
        key = self._key()
        self._claim(project_id, chat_id, None)
        try:
            conversation = await self.load(project_id, chat_id)
            if not conversation.messages:
                raise ChatProblem(409, "chat_empty", "there is nothing to plan yet: say what you want first")
            found, missing = await context()
            system = system_prompt(project_name, found, missing)
            turns = await asyncio.to_thread(api_messages, conversation, self._reader(project_id, chat_id))
            draft = await self._propose(project_id, chat_id, key, system, turns)
            plan = await create_plan({"plan": draft.model_dump(mode="json"), "chat_id": chat_id})
            plan_id = plan.get("id") if isinstance(plan, dict) else None
            if isinstance(plan_id, str):
                await asyncio.to_thread(self.store.append, project_id, chat_id,
                                        {"type": "plan", "plan_id": plan_id, "at": utcnow().isoformat()})
            return plan
        finally:
            self._release(project_id, chat_id)

    async def _propose(self, project_id: str, chat_id: str, key: str, system: str, turns: list[dict]) -> PlanDraft:
        messages = with_final_user_turn(turns, [{"type": "text", "text": planning.INSTRUCTION}])
        client = self._client(key)
        try:
            problems = ""
            for attempt in (1, 2):
                content = await self._plan_call(client, project_id, chat_id, key, system, messages)
                call, tool_input = planning.tool_call(content)
                if call is None:
                    problems = f"the model did not call {planning.TOOL_NAME}"
                    break
                draft, problems = planning.validate(tool_input)
                if draft is not None:
                    return draft
                if attempt == 1:  # once more, with what was wrong
                    messages = [*messages, {"role": "assistant", "content": [call]},
                                {"role": "user", "content": [{
                                    "type": "tool_result", "tool_use_id": call["id"], "is_error": True,
                                    "content": "The plan is not valid:\n" + problems
                                               + f"\nCall {planning.TOOL_NAME} again with a corrected plan."}]}]
            raise ChatProblem(422, "invalid_plan", "the model's plan is not valid, even when asked again: "
                              + problems.replace("\n", "; "))
        finally:
            await client.close()

    async def _plan_call(self, client: anthropic.AsyncAnthropic, project_id: str, chat_id: str, key: str,
                         system: str, messages: list[dict]) -> list[Any]:
        usage = {"input": 0, "output": 0, "final": 0}
        try:
            async with client.messages.stream(
                    model=self.config.model, max_tokens=self.config.plan_max_tokens, system=system,
                    messages=messages, tools=[planning.plan_tool()],
                    tool_choice={"type": "tool", "name": planning.TOOL_NAME}) as stream:
                async for event in stream:
                    _count(event, usage)
                final = await stream.get_final_message()
                usage["input"] = max(usage["input"], final.usage.input_tokens or 0)
                usage["output"] = max(usage["output"], final.usage.output_tokens or 0)
        except anthropic.APIError as exc:
            raise ChatProblem(502, "chat_api_error", describe_api_error(exc, self.config, key)) from None
        except httpx2.TransportError as exc:  # while the stream is read: the SDK does not wrap these
            raise ChatProblem(502, "chat_api_error", self._transport_error(exc)) from None
        finally:
            if usage["input"] or usage["output"]:
                record = Usage(purpose="plan", model=self.config.model, input_tokens=usage["input"],
                               output_tokens=usage["output"],
                               cost_usd=self.config.cost(self.config.model, usage["input"], usage["output"]),
                               at=utcnow())
                await asyncio.shield(asyncio.to_thread(self.store.append, project_id, chat_id,
                                                       {"type": "usage", **record.model_dump(mode="json")}))
        if final.stop_reason is None:
            raise ChatProblem(502, "chat_api_error", DROPPED)
        if final.stop_reason == "max_tokens":  # the SDK parses the cut-off JSON as far as it goes: never use it
            raise ChatProblem(422, "plan_too_long",
                              f"the model's plan was cut off at {self.config.plan_max_tokens} tokens: raise "
                              "chat.plan_max_tokens in projects.yaml, or ask for a smaller plan")
        return list(final.content)


def _count(event: Any, usage: dict[str, int]) -> None:
    """Tokens as the stream reports them: input at message_start, output (cumulative) after."""
    if event.type == "message_start":
        usage["input"] = max(usage["input"], event.message.usage.input_tokens or 0)
        usage["output"] = max(usage["output"], event.message.usage.output_tokens or 0)
    elif event.type == "message_delta" and event.usage is not None:
        usage["final"] = 1  # the answer's last count (output tokens are cumulative until here)
        usage["output"] = max(usage["output"], event.usage.output_tokens or 0)
        usage["input"] = max(usage["input"], getattr(event.usage, "input_tokens", None) or 0)


def _title_from(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), DEFAULT_TITLE)
    return line if len(line) <= TITLE_FROM_TEXT_MAX else line[:TITLE_FROM_TEXT_MAX - 1].rstrip() + "…"


_ERROR_TYPES = {
    "overloaded_error": "the Anthropic API is overloaded right now; try again in a moment",
    "rate_limit_error": "the Anthropic API's rate limit was reached; try again in a moment",
    "authentication_error": "the Anthropic API refused the key in {env}; check it",
    "permission_error": "the key in {env} may not use this model or feature",
    "not_found_error": "the Anthropic API does not know the model {model!r} (chat.model in projects.yaml)",
    "request_too_large": "the conversation is too large for one request",
    "api_error": "the Anthropic API failed",
}
_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def describe_api_error(exc: anthropic.APIError, config: ChatConfig, key: str) -> str:
    """A sentence for the person: what happened and what to do; never the key."""
    if isinstance(exc, anthropic.APITimeoutError):
        text = f"no answer from the Anthropic API within {config.timeout_seconds:g}s"
    elif isinstance(exc, anthropic.APIConnectionError):
        where = config.base_url or "the Anthropic API"
        text = f"cannot reach {where}: {exc.__cause__ or exc}"
    else:
        body = getattr(exc, "body", None)
        detail = body.get("error") if isinstance(body, dict) else None
        kind = detail.get("type") if isinstance(detail, dict) else None
        said = detail.get("message") if isinstance(detail, dict) else None
        status = getattr(exc, "status_code", None)
        if kind not in _ERROR_TYPES and status in _STATUS_TYPES:
            kind = _STATUS_TYPES[status]
        base = _ERROR_TYPES.get(kind or "", "the Anthropic API refused the request")
        text = base.format(env=config.api_key_env, model=config.model)
        if status and status != 200:
            text += f" (HTTP {status})"
        if isinstance(said, str) and said:
            text += f": {said}"
    return text.replace(key, "[the key]") if key else text
