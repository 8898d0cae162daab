"""Fixtures for the executor tests: real Dask clusters on loopback (cluster.py) and agent
configurations that send the fake CLI's turns to them.

tests/executors is a package (its __init__.py) so this conftest is `executors.conftest` and
never takes the place of tests/conftest.py as the module `conftest` that test files import."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend.config import AgentConfig

from .cluster import DaskCluster, dask_agent_config


@pytest.fixture
def dask_cluster(tmp_path: Path, fake_cli) -> Iterator[Callable[..., DaskCluster]]:
    """A factory of real Dask clusters: dask_cluster(workers=("box-a", "box-b"), ttl="5s",
    env={...}, port=None, start=True). Each gets its own folder under tmp_path; every process
    is killed at teardown. Depends on fake_cli so workers inherit its FAKE_CLAUDE_* variables.

    Ask for this fixture before agent_factory: fixtures end in reverse order, so the agents
    (and their dispatchers) stop before their scheduler and workers are killed."""
    made: list[DaskCluster] = []

    def make(workers: tuple[str, ...] | list[str] = (), ttl: str = "5s", env: dict[str, str] | None = None,
             port: int | None = None, start: bool = True) -> DaskCluster:
        cluster = DaskCluster(tmp_path / f"dask{len(made)}", ttl=ttl, env=env, port=port)
        made.append(cluster)
        if start:
            cluster.start()
            for name in workers:
                cluster.add_worker(name, wait=False)
            cluster.wait_listed(*workers)
        return cluster

    try:
        yield make
    finally:
        for cluster in reversed(made):
            cluster.close()


@pytest.fixture
def dask_config(fake_cli) -> Callable[..., AgentConfig]:
    """dask_config(cluster_or_address, dask={...}, **config): see cluster.dask_agent_config."""
    return lambda cluster, dask=None, **overrides: dask_agent_config(fake_cli, cluster, dask, **overrides)
