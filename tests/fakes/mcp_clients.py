"""The MCP client side of the fake CLIs: the stdio servers a CLI was given, started with the
official `mcp` client SDK when the CLI starts and held open for its whole run (as the real CLIs
do), their tools listed, called from a scenario's `{"mcp": TOOL, "arguments": {...}}` step.

Each server runs in one task of a private event loop on its own thread (the SDK's context
managers must be entered and left by the same task); the fake's synchronous steps hand calls to
it. A server gets what the SDK gives a child, a short default list of the fake's environment
plus its configured `env` (Codex's behaviour, the strictest of the three): what the server needs
must be in its configuration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

START_TIMEOUT = 60.0
CALL_TIMEOUT = 120.0


@dataclass
class Spec:
    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    text: str
    is_error: bool
    content: list[dict]  # the result's content blocks, as JSON


class McpClients:
    def __init__(self, servers: dict[str, Spec]) -> None:
        self.servers = servers
        self.tools: dict[str, list[str]] = {}  # by server: its tools, once connected
        self.failed: dict[str, str] = {}  # by server: why it could not start
        self._queues: dict[str, asyncio.Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: list[concurrent.futures.Future] = []

    def start(self) -> None:
        if not self.servers:
            return
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        ready = {}
        for name, spec in self.servers.items():
            ready[name] = concurrent.futures.Future()
            self._done.append(asyncio.run_coroutine_threadsafe(self._serve(name, spec, ready[name]), self._loop))
        for name, future in ready.items():
            try:
                self.tools[name] = future.result(timeout=START_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - a server that fails to start is reported, as the CLIs do
                self.failed[name] = f"{type(exc).__name__}: {exc}"
                sys.stderr.write(f"fake cli: MCP server {name} failed to start: {self.failed[name]}\n")

    def status(self, name: str) -> str:
        return "connected" if name in self.tools else "failed"

    def has(self, server: str, tool: str) -> bool:
        return tool in self.tools.get(server, ())

    def call(self, server: str, tool: str, arguments: dict[str, Any]) -> Outcome:
        if not self.has(server, tool):
            raise LookupError(f"no tool {tool} on MCP server {server}")
        assert self._loop is not None
        answer: concurrent.futures.Future = concurrent.futures.Future()
        queue = self._queues[server]
        self._loop.call_soon_threadsafe(queue.put_nowait, (tool, arguments, answer))
        result = answer.result(timeout=CALL_TIMEOUT)
        content = [block.model_dump(mode="json", exclude_none=True) for block in result.content]
        text = "\n".join(block.get("text", "") for block in content if block.get("type") == "text")
        return Outcome(text=text, is_error=bool(result.is_error), content=content)

    def close(self) -> None:
        if self._loop is None:
            return
        for queue in self._queues.values():
            self._loop.call_soon_threadsafe(queue.put_nowait, None)
        for done in self._done:
            try:
                done.result(timeout=10)
            except Exception:  # noqa: BLE001 - closing: a server that died is gone anyway
                pass

    async def _serve(self, name: str, spec: Spec, ready: concurrent.futures.Future) -> None:
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        queue: asyncio.Queue = asyncio.Queue()
        self._queues[name] = queue
        try:
            params = StdioServerParameters(command=spec.command, args=spec.args, env=spec.env)
            async with stdio_client(params, errlog=sys.stderr) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    listed = await session.list_tools()
                    ready.set_result([tool.name for tool in listed.tools])
                    while (request := await queue.get()) is not None:
                        tool, arguments, answer = request
                        try:
                            answer.set_result(await session.call_tool(tool, arguments))
                        except Exception as exc:  # noqa: BLE001 - handed to the caller
                            answer.set_exception(exc)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
