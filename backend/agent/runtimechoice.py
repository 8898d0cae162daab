"""What a project offers a task to run on (its configured runtimes), and the check of a task's
choice. Shared by the agent's routes and the dashboard's store-only (local) connector, so both
answer alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..config import AgentConfig
from ..models import NewTask
from ..runtimes import RUNTIMES
from ..runtimes.base import Runtime


def describe(config: AgentConfig, runtimes: Mapping[str, Runtime]) -> dict[str, Any]:
    """GET /agent/runtimes: each configured runtime, the default first, with whether its CLI can
    start now (the same cheap check the dispatcher makes before claiming)."""
    listed = []
    for name, runtime in runtimes.items():
        problem = runtime.check()
        kind = RUNTIMES.get(name)
        listed.append({
            "name": name,
            "default": name == config.runtime,
            # The section the runtime was built from (a WORKFLOW.md's agent_runtime replaces agent.yaml's).
            "model": getattr(getattr(runtime, "config", None), "model", None) if kind else None,
            "available": problem is None,
            "problem": {"code": problem["code"], "message": problem["message"]} if problem else None,
            "cost": kind.cost if kind else "reported",
        })
    return {"default": config.runtime, "runtimes": listed}


def unconfigured(tasks: Sequence[NewTask], configured: Sequence[str], *, bulk: bool = False) -> str | None:
    """Why one of `tasks` cannot be created here (it names a runtime this project does not
    configure), or None. A dispatcher would only fail such a task later: refuse it now."""
    for index, task in enumerate(tasks):
        if task.runtime is not None and task.runtime not in configured:
            where = f"tasks[{index}]: " if bulk else ""
            return (f"{where}runtime {task.runtime!r} is not configured for this project; "
                    f"available: {', '.join(configured)}")
    return None


RUN_ON_NEEDS_DASK = "run_on_needs_dask"  # the error code of unpinnable()'s refusal (422)


def unpinnable(tasks: Sequence[NewTask], executor: str, *, bulk: bool = False) -> str | None:
    """Why one of `tasks` cannot be created here (it names a box to run on, and this project's
    agent turns run on this machine: executor local), or None. Never accepted to wait forever."""
    if executor != "local":
        return None
    for index, task in enumerate(tasks):
        if task.run_on is not None:
            where = f"tasks[{index}]: " if bulk else ""
            return (f"{where}run_on {task.run_on!r}: run_on needs executor: dask (agent.yaml); this project "
                    "runs its agents on its own host (executor: local)")
    return None
