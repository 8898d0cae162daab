"""Reading WORKFLOW.md (Symphony SPEC 5.2): YAML front matter between `---` lines, then the
prompt template. Every problem is a `WorkflowError` with Symphony's error code and one line per
problem, "<path>: <key>: <problem>", so a person can fix the file without reading code.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ..dispatcher.policy import HookName, HookSpec
from .schema import WorkflowConfig, validate_config

MAX_BYTES = 1024 * 1024  # a prompt and its settings; anything bigger is a mistake (or an attack)
CODES = ("missing_workflow_file", "workflow_parse_error", "workflow_front_matter_not_a_map", "template_parse_error",
         "invalid_config")


class WorkflowError(Exception):
    """str(exc) == message: one problem per line, each naming the file, the key and the problem."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Workflow:
    path: Path
    config: WorkflowConfig
    template: str  # the body, trimmed ("" when empty: the default prompt is used)
    digest: str  # sha256 hex of the file's bytes
    loaded_at: datetime  # aware UTC
    template_line: int = field(default=1, compare=False)  # the file's line of the template's first line
    stat_key: tuple | None = field(default=None, compare=False, repr=False)  # (ino, mtime_ns, size) read

    def hook(self, name: HookName) -> HookSpec | None:
        return self.config.hook(name)


def default_workflow_path(project_dir: Path) -> Path:
    return Path(project_dir) / "WORKFLOW.md"


def load_workflow(path: Path, *, project_dir: Path, environ: Mapping[str, str] = os.environ,
                  hidden: Collection[str] = ()) -> Workflow:
    """Read and validate the file; raises WorkflowError. No non-secret key may read a variable
    of `hidden` (schema.ALWAYS_HIDDEN always)."""
    path = Path(path)
    key, data = read_file(path)
    return parse_workflow(data, path=path, project_dir=project_dir, environ=environ, stat_key=key, hidden=hidden)


def read_file(path: Path) -> tuple[tuple, bytes]:
    """The file's bytes and the (ino, mtime_ns, size) of what was read (fstat of the same open
    file, so an edit landing while it is read is seen as a change next time). Only a regular
    file: a symlink could point the agent's reload at any file this user can read, and a FIFO
    or a device would block or never end (O_NONBLOCK: refused without waiting for a writer)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise WorkflowError("missing_workflow_file", f"{path}: no such file") from None
    except OSError as exc:
        if os.path.islink(path):
            raise WorkflowError("missing_workflow_file", f"{path}: is a symlink; Baton reads the file itself "
                                                         "(give the file's own path)") from None
        raise WorkflowError("missing_workflow_file", f"{path}: cannot be read: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise WorkflowError("missing_workflow_file", f"{path}: is not a regular file")
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise WorkflowError("missing_workflow_file", f"{path}: cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise WorkflowError("workflow_parse_error", f"{path}: larger than {MAX_BYTES // 1024} KiB: not a workflow file")
    return (st.st_ino, st.st_mtime_ns, st.st_size), data


class _NoAliases(yaml.SafeLoader):
    """Aliases (*name) refused: a few nested ones expand into billions of items when the
    settings are walked, and a workflow file needs none."""

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here", event.start_mark)
        return super().compose_node(parent, index)

    def construct_object(self, node, deep=False):  # noqa: ANN001 (PyYAML's signature)
        # A scalar PyYAML matches but cannot build (2020-13-45, an int past Python's digit
        # limit) raises ValueError and the like: the file's problem, with its line.
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise yaml.constructor.ConstructorError(None, None, f"this value cannot be read ({_short(exc)})",
                                                    node.start_mark) from None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def parse_workflow(data: bytes, *, path: Path, project_dir: Path, environ: Mapping[str, str] = os.environ,
                   stat_key: tuple | None = None, hidden: Collection[str] = ()) -> Workflow:
    from .template import check_template  # template.py refers back to Workflow

    path = Path(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError("workflow_parse_error", f"{path}: not UTF-8 text (byte {exc.start})") from None
    text = text.removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    front: object = None
    body, body_line = text, 1
    if lines and lines[0].rstrip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
        if end is None:
            raise WorkflowError("workflow_parse_error",
                                f"{path}: front matter: the `---` on line 1 is not closed by another `---` line")
        body, body_line = "".join(lines[end + 1:]), end + 2
        try:
            front = yaml.load("".join(lines[1:end]), Loader=_NoAliases)  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 2} column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise WorkflowError("workflow_parse_error", f"{path}: front matter: {where}invalid YAML: {problem}") from None
        except RecursionError:
            raise WorkflowError("workflow_parse_error", f"{path}: front matter: nested too deeply") from None
        except Exception as exc:  # noqa: BLE001 — whatever PyYAML raises, the file is at fault
            raise WorkflowError("workflow_parse_error",
                                f"{path}: front matter: invalid YAML: {type(exc).__name__}: {_short(exc)}") from None
    elif any(line.rstrip() == "---" for line in lines) or text.lstrip().startswith("tracker:"):
        # Settings were meant (a `---` further down, or no `---` at all): say what is wrong
        # rather than "tracker: required".
        raise WorkflowError("workflow_parse_error", f"{path}: no front matter: the file must start with a line `---`")
    if front is None:
        front = {}
    if not isinstance(front, dict):
        raise WorkflowError("workflow_front_matter_not_a_map",
                            f"{path}: front matter: must be a mapping of keys to values, got {type(front).__name__}")
    try:
        config = validate_config(front, path=path, project_dir=Path(project_dir), environ=environ, hidden=hidden)
    except ValueError as exc:
        raise WorkflowError("invalid_config", "\n".join(f"{path}: {key}: {problem}" for key, problem in exc.args[0])) from None
    template = body.strip()
    leading = body[:len(body) - len(body.lstrip())]
    first_line = body_line + leading.count("\n")
    problems = []
    for key, source, offset in (("template", template, first_line),
                                ("agent.continuation_prompt", config.agent.continuation_prompt, 1)):
        if source:
            problem = check_template(source)
            if problem is not None:
                line, message = problem
                problems.append(f"{path}: {key}: line {line + offset - 1}: {message}")
    if problems:
        raise WorkflowError("template_parse_error", "\n".join(problems))
    return Workflow(path=path, config=config, template=template, digest=hashlib.sha256(data).hexdigest(),
                    loaded_at=datetime.now(timezone.utc), template_line=first_line, stat_key=stat_key)
