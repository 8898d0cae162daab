"""Serving an app under uvicorn the way both Baton servers need it.

The listening socket is bound by the caller, before the app's lifespan runs: a busy port must
stop the process before the agent's dispatcher claims a task or starts a coding agent.
"""

from __future__ import annotations

import logging
import signal
import socket

import uvicorn

log = logging.getLogger(__name__)


# uvicorn by default believes X-Forwarded-For/-Proto from 127.0.0.1: any local process could then
# claim any client address (a fresh one per sign-in guess) or scheme. The peer address is the
# client's address.
_NO_PROXY = {"proxy_headers": False}


class _Stopped(Exception):
    """SIGTERM arrived; unwinds to the caller's cleanup."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Stopped()


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on host:port now. Raises OSError (e.g. the port is busy)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP (proto 0 does not), and without it every answer waits ~40 ms
    # for Nagle's algorithm and the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # As uvicorn does: a restart may reuse a port whose old connections are in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # listening now: another SO_REUSEADDR socket cannot bind it any more
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)  # --reload hands it to the reloaded process
    return sock


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"cannot listen on {shown}:{port}: {exc.strerror or exc} (choose another --port or --host)"


def serve(app, *, sock: socket.socket, log_level: str, **options) -> bool:
    """Run on the already bound `sock` until SIGINT or SIGTERM; return normally either way.
    Returns False when the app's start-up (lifespan) failed, True otherwise.

    uvicorn shuts down gracefully on SIGTERM and then re-raises the signal with the handler it
    found; ours turns that into a normal return so the caller's cleanup runs. The graceful
    shutdown is bounded: open event streams must not keep the server alive."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=3, **{**_NO_PROXY, **options})
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except _Stopped:
        log.info("stopped by SIGTERM")
    except KeyboardInterrupt:
        pass
    except SystemExit:
        # uvicorn exits this way when the lifespan start-up failed (it logged why).
        return False
    finally:
        sock.close()
    return True


def serve_reloading(factory: str, *, sock: socket.socket, log_level: str) -> None:
    """Development: serve the app `factory` builds (an import string) on the already bound `sock`,
    restarting it when the code changes."""
    from uvicorn.supervisors import ChangeReload

    config = uvicorn.Config(factory, factory=True, reload=True, log_level=log_level, timeout_graceful_shutdown=3,
                            **_NO_PROXY)
    try:
        ChangeReload(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
