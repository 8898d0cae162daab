"""A task's `runs` counts every start and survives reruns (which reset `attempts`); each start
writes one `attempt_started` baton event carrying that run's number, so a transcript that runs
on across reruns can mark where each run began."""

from __future__ import annotations

from conftest import fake_task
from support import submit_task, task_events, wait_for, wait_task_done


def test_runs_count_across_reruns_and_each_start_is_marked_in_the_events(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    task_id = submit_task(agent, fake_task("Always fails", {"steps": [], "result": "error_during_execution"}))
    for run in (1, 2, 3):
        task = wait_task_done(agent, task_id)
        assert task.status.value == "failed" and task.runs == run and task.attempts == 1
        if run < 3:
            rerun = agent.client.post(f"/agent/tasks/{task_id}/rerun")
            assert rerun.status_code == 200 and rerun.json()["runs"] == run and rerun.json()["attempts"] == 0
            # Else wait_task_done could still see this run's failure: wait for the next start.
            wait_for(lambda: agent.store.get(task_id).runs > run, timeout=60, what=f"run {run + 1} to start")

    starts = [e for e in task_events(agent, task_id) if e.get("subtype") == "attempt_started"]
    assert [(e["kind"], e["attempt"]) for e in starts] == [("baton", 1), ("baton", 2), ("baton", 3)]
    # The mirror for people says it too.
    mirror = (agent.settings.tasks_dir / "failed" / f"{task_id}.md").read_text()
    assert "- runs: 3\n" in mirror and "- attempts: 1\n" in mirror
    # And the board's summary.
    card = agent.client.get("/agent/summaries", params={"status": "failed"}).json()["tasks"][0]
    assert card["runs"] == 3 and card["attempts"] == 1

