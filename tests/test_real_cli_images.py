"""An image attached to a task reaches the model as an image, with the real pinned CLIs: a PNG
is uploaded to a task, Baton places it at .baton/attachments/x.png and hands it to the runtime
(TurnRequest.images), and the local stand-in model API must receive it as an image content part
whose base64 data URL decodes to the very bytes uploaded, never as text.

What the pinned CLIs send (checked here):
- Codex 0.169 (`localImage` in turn/start): in the user message that carries the prompt, the
  Responses API parts `input_text` `<image name=[Image #1] path="…">`, `input_image`
  `{"image_url": "data:image/png;base64,…", "detail": "original"}`, `input_text` `</image>`.
- OpenCode 1.18.33 (`run -f PATH`): the type comes from the file's content, not text/plain; ahead
  of the prompt, the Chat Completions parts `text` "Called the Read tool with the following
  input: {"filePath": …}", `text` "Image read successfully", then `image_url`
  `{"url": "data:image/png;base64,…"}`, provided the model's config declares
  `modalities.input` with "image". Without that it sends no image part, only a text saying the
  model cannot read the file (the second OpenCode test: a notice, never the bytes as text)."""

from __future__ import annotations

import base64
import json
import struct
import zlib

from backend.models import TaskStatus
from fakes.openai_standin import StandInChatCompletionsAPI, StandInResponsesAPI
from realcli import recording_wrapper
from support import git, origin_of, submit_task, wait_task_done
# The real-CLI tests' own fixtures and settings (npm_cli: a loud skip, or a failure under CI=true).
from test_real_codex import codex_binary, codex_config, codex_env  # noqa: F401 - fixtures
from test_real_opencode import MODEL as OPENCODE_MODEL
from test_real_opencode import opencode_binary, opencode_config, opencode_env  # noqa: F401 - fixtures

IMAGE = "x.png"


def small_png() -> bytes:
    """A valid 2x2 RGBA PNG (signature, IHDR, IDAT, IEND with their CRCs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes([255, 0, 0, 255, 0, 0, 255, 255]) for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PNG = small_png()
PREFIX = "data:image/png;base64,"


def run_with_image(agent, title: str):
    """A task with x.png attached before the dispatcher starts, run to completion; returns it
    and the image's absolute path in the task's worktree."""
    task_id = submit_task(agent, {"title": title, "content": "Look at the attached screenshot, then write seen.txt.",
                                  "task_type": "feature"})
    upload = agent.client.post(f"/agent/tasks/{task_id}/attachments", files=[("files", (IMAGE, PNG, "image/png"))])
    assert upload.status_code == 201 and upload.json()["attachments"][0]["image"] is True, upload.text
    assert agent.client.post("/agent/dispatcher/start").status_code == 200
    task = wait_task_done(agent, task_id, timeout=120)
    stderr = agent.settings.logs_dir / f"{task_id}.stderr.log"
    said = stderr.read_text()[-3000:] if stderr.exists() else ""
    assert task.status is TaskStatus.completed, f"{task.error_reason}: {task.error_message}\n--- stderr ---\n{said}"
    origin = origin_of(agent.settings.project_dir)
    landed = git(origin, "ls-tree", "-r", "--name-only", "main").split()
    assert "seen.txt" in landed and not any(f.startswith(".baton") for f in landed), landed
    return task, agent.settings.project_dir / "worktrees" / task_id / ".baton" / "attachments" / IMAGE


def decoded(url: str) -> bytes:
    assert url.startswith(PREFIX), url[:80]
    return base64.b64decode(url[len(PREFIX):], validate=True)


def no_image_bytes_as_text(texts: list[str]) -> None:
    """The PNG (raw, or its base64) is in no text part."""
    encoded = base64.b64encode(PNG).decode()
    for text in texts:
        assert "IHDR" not in text and "\ufffd" not in text and encoded[:40] not in text, text[:200]


def test_real_codex_gets_the_attached_png_as_an_input_image(agent_factory, codex_binary, codex_env, tmp_path):
    command, argv_log = recording_wrapper(codex_binary, tmp_path / "bin")
    with StandInResponsesAPI("exec_command", {"cmd": "echo seen > seen.txt"}) as api:
        agent = agent_factory(config=codex_config(command, api))
        _, image = run_with_image(agent, "Codex looks at a screenshot")
        requests = api.model_requests()
    assert str(image).encode() not in argv_log.read_bytes()  # on the app-server's stdin, not argv
    assert requests
    for request in requests:  # each step carries the whole conversation, the image included
        (message,) = [i for i in request["body"]["input"] if i.get("role") == "user"
                      and any("Codex looks at a screenshot" in p.get("text", "") for p in i["content"])]
        parts = message["content"]
        images = [p for p in parts if p["type"] == "input_image"]
        assert len(images) == 1 and images[0]["detail"] == "original", parts
        assert decoded(images[0]["image_url"]) == PNG
        at = parts.index(images[0])
        assert parts[at - 1] == {"type": "input_text", "text": f'<image name=[Image #1] path="{image}">'}
        assert parts[at + 1] == {"type": "input_text", "text": "</image>"}
        assert {p["type"] for p in parts} == {"input_text", "input_image"}
        no_image_bytes_as_text([p["text"] for p in parts if p["type"] == "input_text"])


def opencode_image_config(command, api, image_input: bool):
    """The real OpenCode tests' config, its stand-in model declaring image input (or not)."""
    config = opencode_config(command, api)
    section = json.loads(json.dumps(config.opencode.config))
    if image_input:
        section["provider"]["standin"]["models"][OPENCODE_MODEL]["modalities"] = {
            "input": ["text", "image"], "output": ["text"]}
    return config.model_copy(update={"opencode": config.opencode.model_copy(update={"config": section})})


def opencode_user_parts(api) -> list[list[dict]]:
    """Per agent step, the content parts of the user message that carries the prompt."""
    out = []
    for request in [r for r in api.model_requests() if r["body"].get("tools")]:
        (message,) = [m for m in request["body"]["messages"] if m.get("role") == "user"]
        assert isinstance(message["content"], list), message
        out.append(message["content"])
    assert out
    return out


def test_real_opencode_gets_the_attached_png_as_an_image_url(agent_factory, opencode_binary, opencode_env, tmp_path):
    command, argv_log = recording_wrapper(opencode_binary, tmp_path / "bin")
    with StandInChatCompletionsAPI("bash", {"command": "echo seen > seen.txt", "description": "write seen.txt"}) as api:
        agent = agent_factory(config=opencode_image_config(command, api, image_input=True))
        _, image = run_with_image(agent, "OpenCode looks at a screenshot")
        steps = opencode_user_parts(api)
    argv = argv_log.read_bytes().split(b"\0")
    assert argv[argv.index(b"-f") + 1] == str(image).encode()
    for parts in steps:
        images = [p for p in parts if p["type"] == "image_url"]
        assert len(images) == 1, parts
        assert decoded(images[0]["image_url"]["url"]) == PNG  # image/png from the content: not text/plain
        texts = [p["text"] for p in parts if p["type"] == "text"]
        assert {p["type"] for p in parts} == {"text", "image_url"}
        assert any(str(image) in t for t in texts[:parts.index(images[0])])  # OpenCode's "Read" of the -f file
        assert any("OpenCode looks at a screenshot" in t for t in texts)
        assert not any("Cannot read" in t for t in texts)
        no_image_bytes_as_text(texts)


def test_real_opencode_model_without_image_input_gets_a_notice_not_the_bytes(agent_factory, opencode_binary,
                                                                              opencode_env, tmp_path):
    """A provider model whose config does not declare image input: OpenCode drops the image and
    says so in text; the file's bytes never reach the model as text."""
    with StandInChatCompletionsAPI("bash", {"command": "echo seen > seen.txt", "description": "write seen.txt"}) as api:
        agent = agent_factory(config=opencode_image_config(opencode_binary, api, image_input=False))
        run_with_image(agent, "OpenCode cannot look")
        steps = opencode_user_parts(api)
    for parts in steps:
        assert {p["type"] for p in parts} == {"text"}, parts
        texts = [p["text"] for p in parts]
        assert f'ERROR: Cannot read "{IMAGE}" (this model does not support image input). Inform the user.' in texts
        no_image_bytes_as_text(texts)
