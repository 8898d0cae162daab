"""The two files baton-init writes: the project's agent.yaml (only what differs from the
defaults, each key commented) and its entry in config/projects.yaml, appended as text so the
person's comments and layout stay as they are."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ..config import AgentConfig, ConfigError
from ..dashboard.config import DashboardConfig, load_dashboard_config
from ..fsutil import atomic_write

AGENT_HEADER = ("# Baton agent configuration, written by baton-init. Only the settings that differ from the\n"
                "# defaults are here; README \"Configuration reference: agent.yaml\" lists every key.\n")
# Why each key baton-init may write is there (the value says what).
AGENT_COMMENTS = {
    "project_id": "the id the dashboard knows this project by (default: the folder name)",
    "runtime": "the coding agent for tasks that choose none",
    "test_command": "run before landing; \"\" = land without tests",
    "base_branch": "tasks start from and land on this branch (default: detected at start)",
}
PROJECTS_HEADER = ("# baton-dashboard's projects (config/projects.example.yaml shows every key).\n"
                   "agent_timeout_seconds: 2        # per request to an agent; a dead agent never costs more\n")
_PLAIN_RE = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./:@ +-]*")
_PROJECTS_RE = re.compile(r"^projects\s*:(?P<rest>.*?)(?P<comment>\s+#.*)?$")


def scalar(value: object) -> str:
    """`value` as YAML text: plain when it reads back as the same string, else double-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN_RE.fullmatch(text) and not text.endswith(" ") and yaml.safe_load(text) == text:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def _default(key: str) -> object:
    return AgentConfig.model_fields[key].get_default(call_default_factory=True)


def agent_yaml(values: dict[str, object]) -> str:
    """agent.yaml text with the keys of `values` (those in AGENT_COMMENTS) that differ from
    AgentConfig's defaults, each with its comment."""
    lines = [AGENT_HEADER]
    rows = [(f"{key}: {scalar(value)}", AGENT_COMMENTS[key]) for key, value in values.items()
            if value != _default(key)]
    width = max((len(row) for row, _ in rows), default=0)
    lines += [f"{row.ljust(width)}  # {comment}\n" for row, comment in rows]
    text = "".join(lines)
    AgentConfig.model_validate(yaml.safe_load(text) or {})  # never write a file the agent refuses
    return text


def _block(entry: dict[str, object], comments: dict[str, str], indent: int) -> str:
    pad = " " * indent
    out = []
    for i, (key, value) in enumerate(entry.items()):
        line = f"{pad}{'- ' if i == 0 else '  '}{key}: {scalar(value)}"
        if key in comments:
            line = f"{line.ljust(indent + 30)}  # {comments[key]}"
        out.append(line + "\n")
    return "".join(out)


def with_project(text: str, entry: dict[str, object], comments: dict[str, str]) -> str:
    """`text` (a projects.yaml, possibly empty) with `entry` appended to its `projects:` list.
    Only lines are added (and `projects: []` opened up): every other line stays as it was."""
    if text and not text.endswith("\n"):
        text += "\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _PROJECTS_RE.match(line.rstrip("\n"))), None)
    if start is None:
        return text + "projects:\n" + _block(entry, comments, 2)
    match = _PROJECTS_RE.match(lines[start].rstrip("\n"))
    rest = match.group("rest").strip()
    if rest in ("[]", "~", "null"):
        lines[start] = "projects:" + (match.group("comment") or "") + "\n"
        return "".join(lines[:start + 1]) + _block(entry, comments, 2) + "".join(lines[start + 1:])
    if rest:
        raise ConfigError("projects: is written on one line (flow style); baton-init only appends to a block list "
                          "(one `- id: …` entry per block): add the project by hand")
    last, indent = start, None
    for i in range(start + 1, len(lines)):
        line = lines[i].rstrip("\n")
        stripped = line.strip()
        if not stripped or line.startswith("#"):
            continue  # blank lines and column-0 comments may belong to what follows
        if not line[0].isspace() and not line.startswith("-"):
            break  # the next top-level key
        last = i  # an entry's line, or a comment indented under it
        if indent is None and stripped.startswith("-"):
            indent = len(line) - len(line.lstrip(" "))
    block = _block(entry, comments, 2 if indent is None else indent)
    return "".join(lines[:last + 1]) + block + "".join(lines[last + 1:])


def read_projects(path: Path) -> tuple[str | None, DashboardConfig]:
    """The file's text (None when missing) and its validated content. Raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, DashboardConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    return text, load_dashboard_config(path)


def register(path: Path, original: str | None, entry: dict[str, object], comments: dict[str, str]) -> None:
    """Append `entry` to projects.yaml at `path` (made from a short header when missing), then
    read it back as the dashboard would. On any problem the original text is put back and
    ConfigError says why."""
    text = with_project(original if original is not None else PROJECTS_HEADER, entry, comments)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))
    try:
        config = load_dashboard_config(path)
        found = next((p for p in config.projects if p.id == entry["id"]), None)
        if found is None or found.path != entry["path"] or found.agent_url != entry["agent_url"]:
            raise ConfigError(f"{path}: the appended entry {entry['id']!r} does not read back as written")
    except ConfigError as exc:
        if original is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, original.encode("utf-8"))
        raise ConfigError(f"{exc} (left {path} as it was)") from None
