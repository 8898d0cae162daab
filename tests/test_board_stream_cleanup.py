"""A page that leaves /api/board/stream leaves nothing behind: the dashboard closes its follow of
every project (the agent's change stream, or the local store's feed), so tabs opened and closed
all day do not pile up upstream connections, tasks or store listeners."""

from __future__ import annotations

from support import make_repo, wait_for
from backend.store import TaskStore
from test_board_feed import BoardStream


def test_a_page_that_leaves_closes_every_upstream_follow(tmp_path, agent_factory, dashboard_factory):
    agent = agent_factory()
    project_id = agent.client.get("/agent/health").json()["project_id"]
    repo = make_repo(tmp_path, "local")
    TaskStore(repo / "data" / "dev-tasks.json").initialize()
    client = dashboard_factory([{"id": "alpha", "agent_url": agent.url, "agent_project_id": project_id},
                                {"id": "loc", "path": str(repo)}], timeout=5)
    agent_waiters = agent.app.state.change_feed._waiters
    pages = [BoardStream(str(client.base_url)) for _ in range(3)]
    for page in pages:
        page.project("alpha", lambda p: p["healthy"], "alpha followed")
        page.project("loc", lambda p: p["healthy"], "loc followed")
    assert len(agent_waiters) == 3
    for page in pages:
        page.close()
    wait_for(lambda: not agent_waiters, timeout=30, what="the agent's change streams to be closed")
