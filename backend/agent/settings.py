"""Everything the agent process needs to know, decided once at start and injected."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import AgentConfig, project_slug
from ..models import STATUSES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9100

# What a running agent writes inside the project; kept out of the project's `git status`.
RUNTIME_PATTERNS = [
    "/data/dev-tasks.json",
    "/data/dev-tasks.json.lock",
    "/data/.dev-tasks.json.*.tmp",
    "/data/dev-tasks.json.damaged-*",
    "/data/dev-tasks.archive.jsonl",
    "/data/store-generations/",
    "/data/snapshot/",
    "/data/baton-agent.lock",
    "/data/baton-agent.json",
    "/data/guardrails-acknowledged.json",  # a local decision (backend/guardrails.py)
    "/data/tool-key",  # the tracker tools' key (backend/sources/tools.py; WORKFLOW.md agents hold one)
    "/data/.tool-key.*",
    "/data/tool-grants/",  # tasks' capability tokens (backend/toolgrants.py)
    "/data/attachments/",  # files attached to tasks (backend/attachments.py)
    "/.baton/attachments/",  # their copies in each worktree: never committed
    "/logs/",
    "/worktrees/",
    "/plans/",  # plan files (backend/plans/store.py): the board's, not the repository's
    *(f"/tasks/{status}/" for status in STATUSES),
]


@dataclass(frozen=True)
class AgentSettings:
    project_dir: Path
    config: AgentConfig
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    logs_root: Path | None = None  # --logs-root: the task logs and the agent's own log go there
    workflow_path: Path | None = None  # the WORKFLOW.md this agent runs (None: no workflow)

    @property
    def project_name(self) -> str:
        return self.project_dir.name

    @property
    def project_id(self) -> str:
        """What /agent/health names the project by: configured, else a slug of the folder name."""
        return self.config.project_id or project_slug(self.project_dir.name)

    @property
    def data_dir(self) -> Path:
        return self.project_dir / "data"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "dev-tasks.json"

    @property
    def tasks_dir(self) -> Path:
        return self.project_dir / "tasks"

    @property
    def logs_dir(self) -> Path:
        return self.logs_root if self.logs_root is not None else self.project_dir / "logs"
