"""WORKFLOW.md's front matter as a typed, validated view (Symphony's schema, Baton's extensions).

    tracker:        kind linear|jira; adapter keys flat or under `provider:`; states, labels,
                    Baton's handoff_states / on_start / on_review / on_complete / tools
    polling:        interval_ms
    workspace:      root (~ and $VAR expanded, relative to WORKFLOW.md's folder)
    hooks:          after_create, before_run, after_run, before_remove (a script, or
                    {script, timeout_ms}), timeout_ms
    agent:          max_concurrent_agents, max_turns, max_retry_backoff_ms,
                    max_concurrent_agents_by_state, max_attempts, continuation_prompt
    agent_runtime:  kind codex|opencode|claudecode and its settings (Symphony's top-level
                    `codex:` is read as agent_runtime with kind codex), mapped onto the
                    runtime's own section by runtimemap.py

Unknown top-level keys are ignored (Symphony's forward compatibility); an unknown key inside a
known section is an error. Validation runs with a context (`validate_config`): the file's
path, the project folder and the environment, because `$VAR` values and paths are resolved
while validating, so that a problem is reported under the key that caused it.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from ..dispatcher.policy import HookName, HookSpec
from ..runtimes.section import RuntimeSection
from ..sources.config import SourceConfig
from .runtimemap import RUNTIME_KINDS, RuntimeMapError, build_section, section_class

_ENV_REF_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]{0,99})")  # a whole value naming a variable (fullmatch)
_PATH_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
HOOK_NAMES: tuple[HookName, ...] = ("after_create", "before_run", "after_run", "before_remove")
# Symphony's Linear defaults (a superset of Baton's dashboard defaults: both spellings of Cancelled).
LINEAR_ACTIVE = ["Todo", "In Progress"]
LINEAR_TERMINAL = ["Closed", "Cancelled", "Canceled", "Duplicate", "Done"]
PROBLEMS = "workflow_problems"  # the error type carrying (key, problem) pairs in its ctx


def problems_error(problems: list[tuple[str, str]]) -> PydanticCustomError:
    """One validation error carrying several `(key, problem)` pairs, keys relative to where it is
    raised (pydantic gives a validator's error the loc of its model, not of a chosen key)."""
    return PydanticCustomError(PROBLEMS, "{text}", {"text": "; ".join(f"{k}: {p}" for k, p in problems),
                                                    "problems": problems})


def _ctx(info: ValidationInfo) -> dict:
    if not isinstance(info.context, dict) or "project_dir" not in info.context:
        raise ValueError("validated without its context (use validate_config)")
    return info.context


# Never readable by a non-secret key (its value could end up in a path, a URL or a message that
# the agent or /agent/health shows): Baton's own secrets and the trackers' default ones.
ALWAYS_HIDDEN = frozenset({"BATON_TOKEN", "GITHUB_TOKEN", "LINEAR_API_KEY", "JIRA_API_TOKEN"})


def env_value(ref: str, environ: Mapping[str, str], hidden: Collection[str] = (),
              revealed: dict[str, str] | None = None) -> str:
    """The value of `$NAME` (ValueError naming the variable when it is unset or empty, or one of
    `hidden`). `revealed` records value -> "$NAME" so that messages can name it instead."""
    name = ref[1:]
    if name in hidden:
        raise ValueError(f"${name} is one of Baton's secret variables and cannot be used here")
    if not environ.get(name):
        raise ValueError(f"{ref} is not set (or is empty) in baton-agent's environment")
    if revealed is not None:
        revealed[environ[name]] = "$" + name
    return environ[name]


def expand_path(value: str, environ: Mapping[str, str], hidden: Collection[str] = (),
                revealed: dict[str, str] | None = None) -> str:
    """`$VAR`/`${VAR}` anywhere, then a leading `~` (a path, never a shell line)."""
    def sub(match: re.Match) -> str:
        return env_value("$" + (match.group(1) or match.group(2)), environ, hidden, revealed)

    text = _PATH_VAR_RE.sub(sub, value)
    if text == "~" or text.startswith("~/"):
        text = (environ.get("HOME") or os.path.expanduser("~")) + text[1:]
    elif text.startswith("~"):
        text = os.path.expanduser(text)  # ~user
    return text


def scrub(message: str, revealed: Mapping[str, str]) -> str:
    """`message` with every value read from a variable replaced by "the value of $NAME": a
    problem must never show what a variable holds (it may be someone's secret)."""
    for value, ref in sorted(revealed.items(), key=lambda item: -len(item[0])):
        named = f"the value of {ref}"
        for form in (repr(value), f"'{value}'", f'"{value}"'):
            message = message.replace(form, named)
        if len(value) >= 3:  # shorter ones would mangle the message's own words, and reveal nothing
            message = message.replace(value, named)
    return message


def _read(value: str, info: ValidationInfo) -> str:
    ctx = _ctx(info)
    return env_value(value, ctx["environ"], ctx.get("hidden", ALWAYS_HIDDEN), ctx.setdefault("revealed", {}))


def _expand(value: str, info: ValidationInfo) -> str:
    ctx = _ctx(info)
    return expand_path(value, ctx["environ"], ctx.get("hidden", ALWAYS_HIDDEN), ctx.setdefault("revealed", {}))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ----- tracker ---------------------------------------------------------------------------------

_BATON_OWN = ("BATON_TOKEN", "GITHUB_TOKEN")  # never a tracker's secret either
_NON_SECRET = ("endpoint", "base_url", "project_slug", "team", "email", "project")
_SECRETS = ("api_key", "api_token")
_LINEAR_ONLY = ("api_key", "team", "project_slug")
_JIRA_ONLY = ("email", "api_token", "project", "jql")


class ProviderSection(_Section):
    """The adapter's keys (Symphony's `tracker.provider`); also accepted flat under tracker."""

    api_key: str | None = None  # Linear, as $VAR (default $LINEAR_API_KEY)
    endpoint: str | None = None  # alias base_url
    base_url: str | None = None
    project_slug: str | None = None  # Linear project slugId
    team: str | None = None  # Linear team key
    email: str | None = None  # Jira (or $VAR)
    api_token: str | None = None  # Jira, as $VAR (default $JIRA_API_TOKEN)
    project: str | None = None  # Jira project key
    jql: str | None = None  # Jira: more JQL, AND-ed

    @field_validator(*_NON_SECRET)
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A whole value `$NAME` is read now; a missing variable is this key's problem.
        if value is not None and _ENV_REF_RE.fullmatch(value):
            return _read(value, info)
        return value

    @field_validator(*_SECRETS)
    @classmethod
    def _secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not _ENV_REF_RE.fullmatch(value):
            # Never echo it: it may be the secret itself.
            raise ValueError("must name an environment variable, like $LINEAR_API_KEY (secrets are never written "
                             "in the file)")
        if value[1:] in _BATON_OWN:
            # It would go to the endpoint, which the file also chooses.
            raise ValueError(f"{value} is one of Baton's secret variables and cannot be used here")
        env_value(value, _ctx(info)["environ"])  # set now, or this key's problem (its value never recorded)
        return value


class TrackerSection(ProviderSection):
    kind: Literal["linear", "jira"]
    provider: ProviderSection | None = None
    required_labels: list[str] | None = None  # alias labels
    labels: list[str] | None = None
    active_states: list[str] | None = None
    terminal_states: list[str] | None = None
    handoff_states: list[str] = Field(default_factory=list)
    on_start: str | None = None
    on_review: str | None = None
    on_complete: str | None = None
    tools: bool = True

    @model_validator(mode="after")
    def _fold(self, info: ValidationInfo) -> TrackerSection:
        """provider's keys and the aliases folded into the flat keys; each key for its kind."""
        problems: list[tuple[str, str]] = []
        updates: dict[str, Any] = {}
        given = set(self.model_fields_set)
        if self.provider is not None:
            for key in self.provider.model_fields_set:
                if key in given:
                    problems.append((f"provider.{key}", f"also given as tracker.{key}: give it once"))
                else:
                    updates[key] = getattr(self.provider, key)
                    given.add(key)
        for key, alias in (("endpoint", "base_url"), ("required_labels", "labels")):
            if alias in given:
                if key in given:
                    problems.append((alias, f"the same setting as {key}: give one"))
                else:
                    updates[key] = updates.pop(alias, getattr(self, alias))
                    given.add(key)
                updates[alias] = None
        value = {**{k: getattr(self, k) for k in ProviderSection.model_fields}, **updates}
        if self.kind == "linear":
            wrong, theirs = _JIRA_ONLY, "Jira's; Linear takes api_key, team or project_slug"
        else:
            wrong, theirs = _LINEAR_ONLY, "Linear's; Jira takes email, api_token, project and jql"
        problems += [(key, f"is {theirs}") for key in wrong if value.get(key) is not None]
        environ = _ctx(info)["environ"]
        secret = "api_key" if self.kind == "linear" else "api_token"
        if value.get(secret) is None:
            default = "$LINEAR_API_KEY" if self.kind == "linear" else "$JIRA_API_TOKEN"
            try:
                env_value(default, environ)
                updates[secret] = default
            except ValueError as exc:
                problems.append((secret, f"not given, and the default {exc}"))
        if self.kind == "linear":
            if value.get("team") is None and value.get("project_slug") is None:
                problems.append(("project_slug", "required for Linear (the project's slugId), or team (a team key)"))
        else:
            for key, what in (("endpoint", "the site's URL, e.g. https://your-site.atlassian.net"),
                              ("email", "the account's email, or $VARIABLE"), ("project", "a project key like SHOP")):
                if value.get(key) is None:
                    problems.append((key, f"required for Jira ({what})"))
        if problems:
            raise problems_error(problems)
        if updates:
            for key, item in updates.items():
                object.__setattr__(self, key, item)  # frozen: settled here, before anyone sees it
        return self

    @property
    def secret_refs(self) -> list[str]:
        return [v for v in (self.api_key, self.api_token) if v is not None]


# ----- polling, workspace, hooks, agent --------------------------------------------------------

class PollingSection(_Section):
    interval_ms: int = Field(default=30000, ge=1000, le=3_600_000)


class WorkspaceSection(_Section):
    # Absolute once validated; default <project>/worktrees/issues.
    root: Path = Field(default=None, validate_default=True)  # type: ignore[assignment]

    @field_validator("root", mode="before")
    @classmethod
    def _root(cls, value: Any, info: ValidationInfo) -> Path:
        ctx = _ctx(info)
        if value is None:
            return (Path(ctx["project_dir"]) / "worktrees" / "issues").resolve()
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"must be a path (got {type(value).__name__} {value!r})")
        if "\0" in value:
            raise ValueError("a path cannot hold NUL characters")
        path = Path(_expand(value, info))
        if not path.is_absolute():
            path = Path(ctx["path"]).parent / path
        return path.resolve()


class HookEntry(_Section):
    script: str
    timeout_ms: int | None = Field(default=None, gt=0, le=86_400_000)


class HooksSection(_Section):
    after_create: HookEntry | None = None
    before_run: HookEntry | None = None
    after_run: HookEntry | None = None
    before_remove: HookEntry | None = None
    timeout_ms: int = Field(default=60000, gt=0, le=86_400_000)

    @field_validator(*HOOK_NAMES, mode="before")
    @classmethod
    def _script(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"script": value}
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"must be a script (a string) or {{script: ..., timeout_ms: ...}} "
                             f"(got {type(value).__name__} {_short(value)})")
        return value

    def spec(self, name: HookName) -> HookSpec | None:
        entry: HookEntry | None = getattr(self, name)
        if entry is None or not entry.script.strip():
            return None  # an empty script is no hook
        return HookSpec(name=name, script=entry.script, timeout=(entry.timeout_ms or self.timeout_ms) / 1000)


class AgentSection(_Section):
    max_concurrent_agents: int = Field(default=10, ge=1, le=64)
    max_turns: int = Field(default=20, ge=1, le=1000)
    max_retry_backoff_ms: int = Field(default=300000, ge=1000, le=86_400_000)
    # Keys normalised (trim + lowercase) as Symphony compares states.
    max_concurrent_agents_by_state: dict[str, int] = Field(default_factory=dict)
    max_attempts: int = Field(default=5, ge=1, le=100)  # Baton: runs of a failing issue before it is left failed
    continuation_prompt: str | None = None  # Baton: a template; None: the default guidance

    @field_validator("max_concurrent_agents_by_state")
    @classmethod
    def _by_state(cls, value: dict[str, int]) -> dict[str, int]:
        out: dict[str, int] = {}
        problems = []
        for state, limit in value.items():
            key = state.strip().lower()
            if not key:
                problems.append((repr(state), "a state name cannot be blank"))
            elif limit < 1 or limit > 64:
                problems.append((state, f"must be a whole number from 1 to 64 (got {limit})"))
            elif key in out:
                problems.append((state, f"names the same state as another key ({key!r} once trimmed and lowercased)"))
            else:
                out[key] = limit
        if problems:
            raise problems_error(problems)
        return out

    @field_validator("continuation_prompt")
    @classmethod
    def _blank(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None


# ----- agent_runtime (mapped onto a runtime's own section by runtimemap.py) ------------------------

class AgentRuntimeSection(_Section):
    kind: Literal["codex", "opencode", "claudecode", "claude_code"]
    # A command line (shlex-split, never run through a shell); its first word has ~ and $VAR
    # expanded at load, so this holds the resolved line.
    command: str | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, min_length=1)
    approval_policy: Any = None  # a string or an object, meaning depends on the kind
    thread_sandbox: str | None = None  # codex
    turn_sandbox_policy: Any = None  # codex; a string or an object
    turn_timeout_ms: int | None = Field(default=None, gt=0, le=7 * 86_400_000)
    read_timeout_ms: int | None = Field(default=None, gt=0)  # Symphony's; accepted, Baton's runtimes time their own reads
    stall_timeout_ms: int | None = None  # <= 0: no stall detection within the turn's timeout
    env: dict[str, str] | None = None  # values as they are, or $VAR (read when a turn starts)

    @field_validator("approval_policy", "turn_sandbox_policy")
    @classmethod
    def _str_or_object(cls, value: Any) -> Any:
        if value is not None and not (isinstance(value, str) and value) and not isinstance(value, dict):
            raise ValueError(f"must be a string or a mapping (got {type(value).__name__} {value!r})")
        if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
            raise ValueError("an object's keys must be strings")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into arguments: {exc}") from None
        if not argv:
            raise ValueError("names no program")
        if any("\0" in arg for arg in argv):
            raise ValueError("cannot hold NUL characters")
        argv[0] = _expand(argv[0], info)
        return shlex.join(argv)

    @property
    def runtime_name(self) -> str:
        return RUNTIME_KINDS[self.kind]


# ----- the whole front matter ------------------------------------------------------------------

# SourceConfig's keys as the front matter calls them.
_SOURCE_KEYS = {"base_url": "tracker.endpoint", "api_key": "tracker.api_key", "email": "tracker.email",
                "api_token": "tracker.api_token", "filter.team": "tracker.team", "filter.labels": "tracker.required_labels",
                "filter.jql": "tracker.jql", "poll_seconds": "polling.interval_ms", "max_attempts": "agent.max_attempts",
                "retry_max_seconds": "agent.max_retry_backoff_ms", "filter": "tracker"}
_KEY_PREFIX_RE = re.compile(r"^([a-z_]+(?:\.[a-z_]+)?): (.+)$", re.DOTALL)


class WorkflowConfig(BaseModel):
    """The validated front matter. Build it with `validate_config` (it needs the file's context)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    tracker: TrackerSection
    polling: PollingSection = Field(default_factory=PollingSection)
    workspace: WorkspaceSection
    hooks: HooksSection = Field(default_factory=HooksSection)
    agent: AgentSection = Field(default_factory=AgentSection)
    agent_runtime: AgentRuntimeSection | None = None

    _source: SourceConfig = PrivateAttr()
    _path: Path = PrivateAttr()
    _revealed: dict = PrivateAttr(default_factory=dict)  # value -> "$NAME" read while validating
    _runtime_key: str = PrivateAttr(default="agent_runtime")

    @model_validator(mode="after")
    def _whole(self, info: ValidationInfo) -> WorkflowConfig:
        ctx = _ctx(info)
        self._path = Path(ctx["path"])
        self._runtime_key = ctx.get("runtime_key", "agent_runtime")
        self._revealed = dict(ctx.get("revealed", {}))
        problems: list[tuple[str, str]] = []
        try:
            self._source = self._build_source()
        except ValidationError as exc:
            problems += _source_problems(exc, self.tracker.kind)
        if self.agent_runtime is not None:
            kind = self.agent_runtime.runtime_name
            defaults = section_class(kind)()
            try:
                build_section(self.agent_runtime, defaults, self._runtime_key)
            except RuntimeMapError as exc:
                problems += exc.problems
        if problems:
            raise problems_error(problems)
        return self

    def _build_source(self) -> SourceConfig:
        t = self.tracker
        linear = t.kind == "linear"
        states = (LINEAR_ACTIVE, LINEAR_TERMINAL) if linear else (None, None)
        data: dict[str, Any] = {
            "kind": t.kind, "base_url": t.endpoint,
            "filter": ({"team": t.team, "project": t.project_slug} if linear else {"project": t.project, "jql": t.jql})
            | {"labels": t.required_labels or []},
            "active_states": t.active_states if t.active_states is not None else states[0],
            "terminal_states": t.terminal_states if t.terminal_states is not None else states[1],
            "handoff_states": t.handoff_states, "on_start": t.on_start, "on_review": t.on_review,
            "on_complete": t.on_complete, "poll_seconds": self.polling.interval_ms / 1000,
            "max_attempts": self.agent.max_attempts, "retry_max_seconds": self.agent.max_retry_backoff_ms / 1000,
            "tools": t.tools,
        }
        if linear:
            data["api_key"] = t.api_key
        else:
            data["email"], data["api_token"] = t.email, t.api_token
        return SourceConfig.model_validate(data)

    # ----- what the rest of Baton uses -----------------------------------------------------------

    @property
    def runtime_key(self) -> str:
        """Where the runtime was written: "agent_runtime", or Symphony's "codex" (for messages)."""
        return self._runtime_key

    def source_config(self) -> SourceConfig:
        """The tracker as the sync engine takes it (secrets as "$VAR", read when used)."""
        return self._source.model_copy(deep=True)

    def secret_vars(self) -> list[str]:
        """The environment variables holding the tracker's secrets (no agent process sees them)."""
        return [ref[1:] for ref in self.tracker.secret_refs]

    def hook(self, name: HookName) -> HookSpec | None:
        return self.hooks.spec(name)

    def runtime(self, agent_config) -> tuple[str, RuntimeSection]:
        """The Baton runtime the workflow's issues run on and its section: agent_runtime over
        agent.yaml's section of that kind; without agent_runtime, agent.yaml's default runtime."""
        if self.agent_runtime is None:
            return agent_config.runtime, agent_config.runtime_section(agent_config.runtime)
        name = self.agent_runtime.runtime_name
        try:
            return name, build_section(self.agent_runtime, agent_config.runtime_section(name), self._runtime_key)
        except RuntimeMapError as exc:
            from .loader import WorkflowError  # the loader imports this module

            lines = [f"{self._path}: {key}: {scrub(problem, self._revealed)} (over agent.yaml's {name} section)"
                     for key, problem in exc.problems]
            raise WorkflowError("invalid_config", "\n".join(lines)) from None


def _source_problems(exc: ValidationError, kind: str) -> list[tuple[str, str]]:
    """SourceConfig's errors under the front matter's own key names."""
    names = {**_SOURCE_KEYS, "filter.project": "tracker.project_slug" if kind == "linear" else "tracker.project"}
    out = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"][:2] if isinstance(p, str))
        message = err["msg"].removeprefix("Value error, ")
        if not key and (match := _KEY_PREFIX_RE.match(message)):
            key, message = match.group(1), match.group(2)
        if not key and message.startswith("active_states and terminal_states"):
            key = "active_states"
        mapped = names.get(key) or (f"tracker.{key}" if key else "tracker")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        out.append((mapped, message.replace("filter.project", names["filter.project"])))
    return out


def validate_config(data: Mapping[str, Any], *, path: Path, project_dir: Path,
                    environ: Mapping[str, str], hidden: Collection[str] = ()) -> WorkflowConfig:
    """The front matter's mapping as a WorkflowConfig; raises ValueError whose args[0] is the
    list of `(key path, problem)` pairs (the loader names the file). No key but the tracker's
    secrets may read a variable of `hidden` (always also ALWAYS_HIDDEN and the variables the
    file names as the tracker's secrets), and no problem shows a value read from a variable."""
    raw = dict(data)
    runtime_key = "agent_runtime"
    if raw.get("agent_runtime") is None and raw.get("codex") is not None:
        codex = raw["codex"]  # Symphony's `codex:` section
        if isinstance(codex, dict) and "kind" in codex:
            raise ValueError([("codex.kind", "unknown key (Symphony's codex section is always Codex; choose "
                                             "another runtime with agent_runtime.kind)")])
        raw["agent_runtime"] = {"kind": "codex", **codex} if isinstance(codex, dict) else codex
        runtime_key = "codex"
    for section in ("polling", "workspace", "hooks", "agent"):
        if section in raw and raw[section] is None:  # `hooks:` with nothing under it: the defaults
            raw[section] = {}
    raw.setdefault("workspace", {})
    if raw.get("agent_runtime") is None:
        raw.pop("agent_runtime", None)
    revealed: dict[str, str] = {}
    context = {"path": Path(path), "project_dir": Path(project_dir), "environ": environ, "runtime_key": runtime_key,
               "hidden": ALWAYS_HIDDEN | set(hidden) | _secret_names(raw.get("tracker")), "revealed": revealed}
    try:
        return WorkflowConfig.model_validate(raw, context=context)
    except ValidationError as exc:
        raise ValueError([(key, scrub(problem, revealed)) for key, problem in _problems(exc, runtime_key)]) from None


def _secret_names(tracker: Any) -> set[str]:
    """The variables the file names as the tracker's secrets (flat or under provider)."""
    names = set()
    for section in (tracker, tracker.get("provider") if isinstance(tracker, dict) else None):
        if isinstance(section, dict):
            for key in _SECRETS:
                value = section.get(key)
                if isinstance(value, str) and _ENV_REF_RE.fullmatch(value):
                    names.add(value[1:])
    return names


def _problems(exc: ValidationError, runtime_key: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if loc[:1] == ["agent_runtime"]:
            loc[0] = runtime_key
        key = ".".join(loc)
        kind = err["type"]
        if kind == PROBLEMS:
            for sub, problem in err["ctx"]["problems"]:
                out.append((f"{key}.{sub}" if key else sub, problem))
            continue
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "model_type":
            message = f"must be a mapping of keys to values (got {type(err['input']).__name__} {_short(err['input'])})"
        elif kind == "missing":
            message = {"tracker": "required: Baton runs a WORKFLOW.md's issues from its tracker (tracker.kind: "
                                  "linear or jira)",
                       "tracker.kind": "required: linear or jira"}.get(key, "required")
        else:
            message = err["msg"].removeprefix("Value error, ")
            secret = loc[-1:] in (["api_key"], ["api_token"]) or loc[:2] in ([runtime_key, "env"],)
            if (kind.endswith("_type") or kind == "model_type") and not secret:
                message += f" (got {type(err['input']).__name__} {_short(err['input'])})"
        out.append((key or "(top level)", message))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
