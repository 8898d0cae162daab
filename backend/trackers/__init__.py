"""Issue trackers Baton takes tasks from: the one list of them, and how one is made from a
project's `source:` configuration. The contract every tracker keeps is in base.py."""

from __future__ import annotations

import os

import httpx

from ..sources.config import SourceConfig
from .base import Tracker
from .jira import JiraTracker
from .linear import LinearTracker

TRACKERS: dict[str, type] = {"linear": LinearTracker, "jira": JiraTracker}


def make_tracker(config: SourceConfig, *, environ: dict[str, str] | os._Environ = os.environ,
                 transport: httpx.AsyncBaseTransport | None = None, max_wait: float = 60.0) -> Tracker:
    """The tracker for `config`, its credential read from `environ` now. A credential that is not
    set does not fail here: every call of the tracker fails with AuthError naming the variable."""
    return TRACKERS[config.kind](config, config.credential(environ), transport=transport, max_wait=max_wait)
