"""Issue #7 (review): an archived task reads the same through an agent-less dashboard project as
through the agent's API."""

from __future__ import annotations

from backend.archive import archive_finished
from backend.mirrors import MirrorWriter
from backend.models import TaskStatus
from backend.store import TaskStore
from support import make_repo
from test_archive import finished


def test_a_local_project_serves_its_archived_tasks(dashboard_factory, tmp_path):
    project = make_repo(tmp_path, "archivedlocal")
    store = TaskStore(project / "data" / "dev-tasks.json", mirrors=MirrorWriter(project / "tasks"))
    store.initialize()
    done = finished(store, "done long ago", TaskStatus.completed, 30)
    failed = finished(store, "failed long ago", TaskStatus.failed, 30)
    assert {t.id for t in archive_finished(store, 7)} == {done, failed}
    client = dashboard_factory([{"id": "local", "path": str(project)}])

    detail = client.get(f"/api/projects/local/tasks/completed/{done}.md")
    assert detail.status_code == 200, detail.text
    assert detail.json()["title"] == "done long ago" and detail.json()["markdown"].startswith("# done long ago")
    assert client.get(f"/api/projects/local/tasks/failed/{done}.md").status_code == 404  # status must match
    rerun = client.post(f"/api/projects/local/tasks/{failed}/rerun")
    assert rerun.status_code == 200 and rerun.json()["status"] == "pending"
    assert client.post(f"/api/projects/local/tasks/{done}/cancel").status_code == 409
