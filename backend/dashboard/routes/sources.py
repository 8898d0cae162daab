"""A project's issue tracker as the dashboard serves it: its health, "sync now", and the
tracker tools gateway that coding agents call (through the MCP server, backend/sources/mcp_server.py).

The gateway (`POST /api/tracker-tools/call`) is the one dashboard route a coding agent reaches:
it is exempt from the dashboard's own token and sessions (the capability token in
`Authorization: Bearer` is its authentication, backend/sources/tools.py), and the security
middleware answers it only for loopback clients. Every call is checked, in this order: the token
is one the dashboard made (401 `invalid_token`); its project has a source with tools enabled; an
`issue` in the body is the token's; that issue's task is running right now, asked of the project's
agent at each call (so the token dies with its task); a state to move to is one the source names
(each 403 `out_of_scope`). Only then is the tracker called, with the dashboard's secret. The checks
themselves are backend/sources/gateway.py, shared with baton-agent's gateway (WORKFLOW.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...sources.gateway import OPENAPI_EXTRA, call_tool
from ...sources.tools import CALL_PATH
from ...web.errors import ERROR_RESPONSES, ApiError
from ..connectors.base import AgentError, Unavailable, reason_of, workflow_source
from .api import connector_for

router = APIRouter(tags=["sources"], responses=ERROR_RESPONSES)

_RUNNING_PAGE = 500  # in_progress summaries asked per page (as many as the agent's workers, in practice)


# ----- a project's source: health and "sync now" ----------------------------------------

def runner_for(request: Request, project_id: str):
    """The dashboard's sync of the project's `source:` (None: it has none); 404 for an unknown project."""
    connector_for(request, project_id)
    hub = getattr(request.app.state, "sources", None)
    return hub.get(project_id) if hub is not None else None


@router.get("/api/projects/{project_id}/source")
async def source_health(project_id: str, request: Request) -> dict:
    """The project's issue tracker as its sync sees it: {kind, state: starting|ok|error, healthy,
    reason, last_sync_at, next_sync_at, issues, tasks, calls, ...}; for a project whose agent runs
    a WORKFLOW.md (and that has no `source:`), its agent's sync with `origin: "workflow"` and
    `workflow` {path, state: ok|invalid, error, loaded_at}; 404 without either."""
    runner = runner_for(request, project_id)
    if runner is not None:
        return runner.health()
    why = ""
    try:
        source = workflow_source(await connector_for(request, project_id).health())
    except (Unavailable, AgentError) as exc:
        # Only the agent knows of a WORKFLOW.md: while it cannot say, there is no source to show.
        source, why = None, f"; its agent cannot say whether it runs a WORKFLOW.md: {reason_of(exc)}"
    if source is None:
        raise ApiError(404, "not_found", f"project {project_id!r} has no source (add `source:` to it in "
                                         f"projects.yaml, or a tracker to a WORKFLOW.md its agent runs){why}")
    return source


@router.post("/api/projects/{project_id}/source/sync", status_code=202)
async def source_sync(project_id: str, request: Request) -> dict:
    """Read the tracker now instead of at the next poll; answers the health at once (the sync runs
    on its own: its outcome shows in the health and on the board). A WORKFLOW.md's tracker is
    polled by its agent (its POST /api/v1/refresh); 409 when no agent runs it."""
    runner = runner_for(request, project_id)
    if runner is not None:
        runner.trigger()
        return runner.health()
    connector = connector_for(request, project_id)
    if connector.mode == "local":  # no agent: it refuses (409 with a WORKFLOW.md, else 404)
        await connector.workflow_refresh()
    source = await source_health(project_id, request)
    await connector.workflow_refresh()
    return source


# ----- the tracker tools gateway (its checks: backend/sources/gateway.py) -----------------

async def _running_task(connector, issue_id: str) -> dict | None:
    """The summary of the project's in_progress task made from this issue, if there is one."""
    after = None
    while True:
        page = await connector.summaries("in_progress", after, _RUNNING_PAGE, None)
        for summary in page["tasks"]:
            if (summary.get("source") or {}).get("id") == issue_id:
                return summary
        if not page.get("more") or not page["tasks"]:
            return None
        after = page["tasks"][-1]["sort"]


@router.post(CALL_PATH, openapi_extra=OPENAPI_EXTRA)
async def tracker_tool_call(request: Request) -> JSONResponse:
    """A coding agent's tracker tool call, for the one issue its capability token names (the
    header `Authorization: Bearer <token>`; never the dashboard's token): {tool, arguments,
    issue?} -> {result}. Loopback clients only."""
    hub = getattr(request.app.state, "sources", None)

    async def running(project_id: str, issue_id: str) -> dict | None:
        return await _running_task(request.app.state.connectors[project_id], issue_id)

    answer = await call_tool(
        client=request.client.host if request.client else "",
        authorization=request.headers.get("authorization", ""),
        body=await request.body(),
        gate=request.app.state.tool_gate,
        source_for=lambda project_id: hub.get(project_id) if hub is not None else None,
        running_task=running,
    )
    return JSONResponse(answer)
