"""The socket Baton binds before serving (backend/web/serve.py listen) must give accepted
connections TCP_NODELAY under asyncio, as uvicorn's own sockets do: without it every answer
waited ~40 ms for Nagle's algorithm and the client's delayed ACK (found by the store benchmark:
POST /agent/tasks went from 4 ms to 48 ms)."""

from __future__ import annotations

import asyncio
import socket

from backend.web.serve import listen


def test_accepted_connections_get_tcp_nodelay():
    async def main() -> int:
        sock = listen("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname())
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value

    assert asyncio.run(main()) != 0
