"""The dashboard's follow of an agent's change stream passes on no task before that stream's
own `state` named the project, and a refused stream (401/403) says to check the token. The
agents here are small real HTTP servers (uvicorn) that misbehave in exactly one way."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend.dashboard.config import ProjectConfig
from backend.dashboard.connectors.base import Unavailable
from backend.dashboard.connectors.http import HTTPConnector
from support import serve

HEALTH = {"status": "ok", "version": "test", "project": "p", "project_id": "p"}
CHANGES = 'event: changes\nid: e1.1\ndata: {"cursor": "e1.1", "revision": 1, "reset": true, "tasks": [], "removed": []}\n\n'


def _agent(stream_answer: Response) -> Starlette:
    async def health(request):
        return JSONResponse(HEALTH)

    async def changes_stream(request):
        return stream_answer

    return Starlette(routes=[Route("/agent/health", health), Route("/agent/changes/stream", changes_stream)])


def _follow(url: str) -> list:
    async def run() -> list:
        async with httpx.AsyncClient() as client:
            connector = HTTPConnector(ProjectConfig(id="p", agent_url=url), client, 5)
            return [item async for item in connector.follow_changes(None, 100)]
    return asyncio.run(run())


def test_changes_before_the_streams_own_state_are_refused():
    # Its health names the project, but the stream itself never says who it is before its tasks.
    with serve(_agent(Response(CHANGES, media_type="text/event-stream"))) as url:
        with pytest.raises(Unavailable, match="before saying which project it serves"):
            _follow(url)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_change_stream_says_to_check_the_token(status):
    refused = JSONResponse({"error": {"status": status, "code": "unauthorized", "message": "no"}}, status_code=status)
    with serve(_agent(refused)) as url:
        with pytest.raises(Unavailable, match="check the project's token"):
            _follow(url)


def test_a_change_event_whose_cursor_is_not_a_cursor_is_refused():
    # Passed on, it would break the page's relay (it compares cursors) and come back to this
    # agent as `since` on every reconnect; refused here, the project shows why.
    state = {"health": HEALTH, "dispatcher": {"state": "stopped"}, "usage": {"hours": []}}
    bad = ('event: state\ndata: ' + json.dumps(state) + '\n\n'
           'event: changes\ndata: {"cursor": "../../x", "revision": 1, "reset": true, "tasks": [], "removed": []}\n\n')
    with serve(_agent(Response(bad, media_type="text/event-stream"))) as url:
        with pytest.raises(Unavailable, match="not a change set"):
            _follow(url)
