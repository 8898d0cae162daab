"""Where agent turns run, in one place.

Adding one: a folder here with its Executor (see base.py) and its agent.yaml section, an entry
in EXECUTORS, and tests/executors/ runs it through the same contract tests as the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .base import Executor


class ExecutorUnavailable(Exception):
    """The configured executor cannot be used at all (e.g. its optional extra is missing)."""


@dataclass(frozen=True)
class ExecutorKind:
    name: str
    build: Callable[..., Executor]  # (AgentConfig, ProjectGit) -> Executor


def _local(config, git) -> Executor:
    from .local import LocalExecutor

    return LocalExecutor()


def _dask(config, git) -> Executor:
    try:
        from .dask.executor import DaskExecutor
    except ImportError as exc:
        raise ExecutorUnavailable(f"executor: dask needs Dask distributed on this host ({exc}); install it with "
                                  "pip install '.[distributed]' in Baton's folder") from None
    return DaskExecutor(config.dask, git)


EXECUTORS: dict[str, ExecutorKind] = {kind.name: kind for kind in (ExecutorKind("local", _local),
                                                                   ExecutorKind("dask", _dask))}


def build_executor(config, git) -> Executor:
    return EXECUTORS[config.executor].build(config, git)
