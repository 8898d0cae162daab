"""A real Dask cluster on loopback for the executor tests: one `dask scheduler` process and any
number of `dask worker` processes, each worker with a folder of its own (its cwd, its
--local-directory and its BATON_WORKER_DIR) under the test's tmp_path, never the project's.

    cluster = DaskCluster(tmp_path / "dask")       # nothing runs yet; cluster.address is fixed
    cluster.start()                                # the scheduler (worker-ttl 5s, allowed-failures 0)
    cluster.add_worker("box-a")                    # resources runner=2,box-a=2; waits until listed
    cluster.kill("box-a") / cluster.freeze("box-b") / cluster.thaw("box-b")
    cluster.close()                                # SIGKILL to everything it started, frozen or not

Every process is started in a session of its own so close() can kill its whole group (git
children of a worker included); the agent CLIs a worker runs are in their own groups and die
with the worker (PR_SET_PDEATHSIG, backend/executors/dask/remote.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from backend.models import TaskStatus
from support import free_port, task_events, wait_for, wait_task_done

DASK = str(Path(sys.executable).parent / "dask")
if TYPE_CHECKING:
    from backend.config import AgentConfig

START_TIMEOUT = 30.0  # seconds for a process to come up on a loaded 2-core machine


class DaskCluster:
    def __init__(self, root: Path, ttl: str = "5s", env: dict[str, str] | None = None, port: int | None = None,
                 allowed_failures: int = 0, host: str = "127.0.0.1") -> None:
        """`env`: extra variables for the scheduler (e.g. {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "3"});
        they win over `ttl` and `allowed_failures`. `host`: where the scheduler listens (0.0.0.0 only
        to test that Baton refuses it); the address clients dial stays loopback."""
        self.root = Path(root)
        self.host = host
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.scheduler_env = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": ttl,
                              "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(allowed_failures),
                              **(env or {})}
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self._client = None

    # ----- where things are -------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def dask_config(self, **settings) -> dict:
        """The agent.yaml `dask:` section for this cluster (keyword arguments add or override)."""
        return {"scheduler": self.address, **settings}

    def worker_dir(self, name: str) -> Path:
        return self.root / name

    def log(self, name: str = "scheduler") -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pid(self, name: str) -> int:
        return self.workers[name].pid

    # ----- starting ---------------------------------------------------------------------------

    def start(self) -> DaskCluster:
        assert self.scheduler is None or self.scheduler.poll() is not None, "the scheduler runs already"
        env = {**os.environ, **self.scheduler_env}
        with open(self.root / "scheduler.log", "ab") as log:
            self.scheduler = subprocess.Popen(
                [DASK, "scheduler", "--host", self.host, "--port", str(self.port),
                 "--dashboard-address", "127.0.0.1:0"],
                env=env, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for(lambda: self._alive("scheduler", self.scheduler) and self._listening(), timeout=START_TIMEOUT,
                 interval=0.05, what=f"the Dask scheduler on {self.address}")
        return self

    def add_worker(self, name: str, resources: str | None = None, env: dict[str, str] | None = None,
                   wait: bool = True) -> Path:
        """Start `dask worker` NAME (no nanny) in its own folder; returns the folder. Waits until
        the scheduler lists it. The worker inherits this process's environment (the fake CLI's
        FAKE_CLAUDE_* variables included) plus `env`."""
        assert name not in self.workers or self.workers[name].poll() is not None, f"{name} runs already"
        folder = self.worker_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "BATON_WORKER_DIR": str(folder), **(env or {})}
        with open(self.root / f"{name}.log", "ab") as log:
            self.workers[name] = subprocess.Popen(
                [DASK, "worker", self.address, "--no-nanny", "--host", "127.0.0.1",
                 "--dashboard-address", "127.0.0.1:0", "--resources", resources or f"runner=2,{name}=2", "--name", name,
                 "--local-directory", str(folder)],
                env=env, cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        if wait:
            self.wait_listed(name)
        return folder

    def wait_listed(self, *names: str, timeout: float = START_TIMEOUT) -> None:
        for name in names:
            wait_for(lambda: self._alive(name, self.workers[name]) and name in self.listed(), timeout=timeout,
                     interval=0.05, what=f"the scheduler to list the worker {name}")

    # ----- what the scheduler says --------------------------------------------------------------

    def client(self):
        from distributed import Client

        if self._client is None or self._client.status not in ("running", "connecting"):
            self._client = Client(self.address, timeout=START_TIMEOUT, set_as_default=False)
        return self._client

    def listed(self) -> set[str]:
        """The names of the workers the scheduler knows now."""
        info = self.client().scheduler_info(n_workers=-1)["workers"]
        return {str(w.get("name")) for w in info.values()}

    # ----- breaking things ------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL the worker (and its process group); returns once it is gone."""
        self._kill(self.workers[name])

    def freeze(self, name: str) -> None:
        self._signal(self.workers[name], signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self._signal(self.workers[name], signal.SIGCONT)

    def stop_scheduler(self) -> None:
        self.close_client()
        if self.scheduler is not None:
            self._kill(self.scheduler)

    def close(self) -> None:
        """Kill everything this cluster started (SIGKILL works on frozen processes too)."""
        self.close_client()  # first: a client whose scheduler died retries (and logs) for 30 s
        for proc in [*self.workers.values(), *([self.scheduler] if self.scheduler else [])]:
            self._kill(proc)

    def close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close(timeout=2)
            except Exception:  # noqa: BLE001 - the scheduler may be gone already
                pass

    # ----- helpers ------------------------------------------------------------------------------

    def _alive(self, what: str, proc: subprocess.Popen) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{self.log(what)[-3000:]}")
        return True

    def _listening(self) -> bool:
        import socket

        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    @classmethod
    def _kill(cls, proc: subprocess.Popen) -> None:
        cls._signal(proc, signal.SIGKILL)
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def dask_agent_config(fake_cli, cluster: DaskCluster | str, dask: dict | None = None, **overrides) -> AgentConfig:
    """The AgentConfig that runs the fake CLI with `executor: dask` against `cluster` (or a
    scheduler address); `dask` adds to the dask: section, other keywords to the config."""
    address = cluster if isinstance(cluster, str) else cluster.address
    return fake_cli.config(executor="dask", dask={"scheduler": address, **(dask or {})}, **overrides)


def processes_of(task_id: str) -> list[int]:
    """The pids of the live processes on this machine whose environment marks them as the
    task's (TASK_ID=<id>, as every agent process gets, on a worker too); zombies excepted."""
    wanted = f"TASK_ID={task_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


def says(agent, task_id: str) -> str:
    """What Baton told the task's transcript (its own lines), for assertions and failure messages."""
    return "\n".join(e.get("text", "") for e in task_events(agent, task_id) if e["kind"] == "baton")


def done(agent, task_id: str, timeout: float = 60):
    """The task once finished, which must be completed (else the failure says why)."""
    task = wait_task_done(agent, task_id, timeout=timeout)
    assert task.status is TaskStatus.completed, f"{task.status} {task.error_reason}: {task.error_message}\n" \
                                                f"{says(agent, task_id)}"
    return task
