"""The tracker tools gateway of baton-agent, for the tracker its WORKFLOW.md names (the agent
holds that tracker's secret, so its coding agents' tool calls come here, not to a dashboard).

Included only when the agent runs a workflow. Like the dashboard's (same path, same checks:
backend/sources/gateway.py), it is exempt from the agent's token and answers loopback clients
only; "is the issue's task running" is read from the agent's own store.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...models import TaskStatus
from ...sources.gateway import OPENAPI_EXTRA, WORKFLOW_STATES_HINT, call_tool
from ...sources.tools import CALL_PATH
from ...web.errors import ERROR_RESPONSES

router = APIRouter(tags=["workflow"], responses=ERROR_RESPONSES)


def _running(store, kind: str, issue_id: str) -> dict | None:
    for task in store.snapshot().tasks.values():
        if task.status is TaskStatus.in_progress and task.source is not None \
                and task.source.kind == kind and task.source.id == issue_id:
            return json.loads(task.model_dump_json())
    return None


@router.post(CALL_PATH, openapi_extra=OPENAPI_EXTRA)
async def tracker_tool_call(request: Request) -> JSONResponse:
    """A coding agent's tracker tool call, for the one issue its capability token names (the
    header `Authorization: Bearer <token>`; never the agent's token): {tool, arguments, issue?}
    -> {result}. Loopback clients only."""
    runner = request.app.state.workflow

    def source_for(project_id: str):
        return runner.source if project_id == runner.project_id else None

    async def running_task(project_id: str, issue_id: str) -> dict | None:
        return await asyncio.to_thread(_running, runner.store, runner.source.config.kind, issue_id)

    answer = await call_tool(
        client=request.client.host if request.client else "",
        authorization=request.headers.get("authorization", ""),
        body=await request.body(),
        gate=runner.gate,
        source_for=source_for,
        running_task=running_task,
        states_hint=WORKFLOW_STATES_HINT,
    )
    return JSONResponse(answer)
