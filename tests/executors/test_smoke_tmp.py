import os, subprocess, sys, time
from pathlib import Path
import pytest
from backend.models import TaskStatus
from support import git, wait_for, free_port, submit_task, wait_task_done, origin_of
from conftest import fake_task
from test_dispatcher import baton_says

def test_smoke(agent_factory, fake_cli, tmp_path):
    port = free_port()
    env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL="5s", DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    bindir = Path(sys.executable).parent
    s = subprocess.Popen([str(bindir/"dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0"], env=env, stderr=open(tmp_path/"s.log","w"))
    wdir = tmp_path / "w1"; wdir.mkdir()
    w = subprocess.Popen([str(bindir/"dask"), "worker", f"tcp://127.0.0.1:{port}", "--host", "127.0.0.1", "--no-nanny", "--dashboard-address", "127.0.0.1:0", "--resources", "runner=2", "--name", "box-a", "--local-directory", str(wdir)], env={**env, "BATON_WORKER_DIR": str(wdir)}, cwd=wdir, stderr=open(tmp_path/"w.log","w"))
    try:
        cfg = fake_cli.config(executor="dask", dask={"scheduler": f"tcp://127.0.0.1:{port}"})
        agent = agent_factory(config=cfg, dispatch=True)
        task_id = submit_task(agent, fake_task("Add hello", {"steps": [{"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}]}))
        task = wait_task_done(agent, task_id)
        print(baton_says(agent, task_id))
        assert task.status is TaskStatus.completed, task.error_message
        assert task.worker == "box-a"
        origin = origin_of(agent.settings.project_dir)
        assert git(origin, "show", "main:hello.txt") == "hi\n"
        print(git(origin, "branch", "-a"))
    finally:
        w.kill(); s.kill()
        print((tmp_path/"w.log").read_text()[-3000:])
