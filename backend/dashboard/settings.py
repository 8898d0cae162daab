"""Everything baton-dashboard needs to know, decided once at start and injected."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from .config import DashboardConfig

SESSION_COOKIE = "baton_session"


def default_frontend_dir() -> Path:
    """The board's static files: the installed package `baton_frontend` (pyproject.toml maps the
    top-level frontend/ folder to it), so editable and built installs alike find them; a bare
    checkout on PYTHONPATH falls back to the folder beside backend/."""
    spec = importlib.util.find_spec("baton_frontend")
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parent
    return Path(__file__).resolve().parents[2] / "frontend"


@dataclass(frozen=True)
class DashboardSettings:
    config: DashboardConfig
    host: str = "127.0.0.1"
    port: int = 8888
    token: str | None = None
    frontend_dir: Path = field(default_factory=default_frontend_dir)
    # Where the dashboard keeps its own files (the tracker tools' key): `data/` beside the config
    # file's folder (config/projects.yaml -> data/). None (a config not read from a file, as in
    # tests): a temporary folder for the run.
    data_dir: Path | None = None
