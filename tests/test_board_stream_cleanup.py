"""A page that leaves /api/board/stream leaves nothing behind: the dashboard closes its follow of
each agent's change stream, so tabs opened and closed all day do not pile up open streams in the
agents (each polling every second) nor take the dashboard's pooled connections for good."""

from __future__ import annotations

from support import wait_for
from test_board_feed import BoardStream


def test_a_page_that_leaves_closes_its_agent_streams(agent_factory, dashboard_factory):
    agent = agent_factory()
    project_id = agent.client.get("/agent/health").json()["project_id"]
    client = dashboard_factory([{"id": "alpha", "agent_url": agent.url, "agent_project_id": project_id}], timeout=5)
    streams_in_agent = agent.app.state.change_feed._waiters  # one per open change stream
    pages = [BoardStream(str(client.base_url)) for _ in range(3)]
    try:
        for page in pages:
            page.project("alpha", lambda p: p["healthy"], "the project followed")
        assert len(streams_in_agent) == 1  # the pages share one follow of the project
    finally:
        for page in pages:
            page.close()
    # The follow lingers ~10 s for a reload before it is closed.
    wait_for(lambda: not streams_in_agent, timeout=40, what="the agent's change streams to be closed")
