"""Serving an app under uvicorn the way both Baton servers need it."""

from __future__ import annotations

import logging
import signal

import uvicorn

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """SIGTERM arrived; unwinds to the caller's cleanup."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Stopped()


def serve(app, *, host: str, port: int, log_level: str, **options) -> None:
    """Run until SIGINT or SIGTERM; return normally either way.

    uvicorn shuts down gracefully on SIGTERM and then re-raises the signal with the handler it
    found; ours turns that into a normal return so the caller's cleanup runs. The graceful
    shutdown is bounded: open event streams must not keep the server alive."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3, **options)
    except _Stopped:
        log.info("stopped by SIGTERM")
