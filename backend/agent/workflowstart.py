"""What `baton-agent` checks before it runs a repository's WORKFLOW.md unattended.

Which file (`--workflow PATH`, else `<project>/WORKFLOW.md` when there is one, never with
`--no-workflow`), that it loads, that the tracker's secret variables are set, that the runtime's
CLI is there, and that a runtime bypassing its permission prompts was allowed on this very
command line: nobody watches an unattended run, so the guardrails flag is asked for at every
start (as Symphony does), not once per project. Writes nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError
from ..guardrails import FLAG as GUARDRAILS_FLAG, unguarded_reason
from ..runtimes import RUNTIMES
from ..workflow.loader import Workflow, WorkflowError, default_workflow_path, load_workflow
from .settings import AgentSettings

_SECRET_KEYS = ("api_key", "api_token")  # SourceConfig's fields that only ever name a $VARIABLE


@dataclass(frozen=True)
class WorkflowStart:
    workflow: Workflow
    runtime: str  # the Baton runtime its issues run on
    section: object  # that runtime's section, as the workflow configures it
    unguarded: str | None  # why that runtime runs without its permission prompts, if it does

    def describe(self) -> str:
        """The start line: what this agent runs."""
        config = self.workflow.config
        return (f"workflow {self.workflow.path}: {config.source_config().kind} issues, runtime {self.runtime}, "
                f"workspaces in {config.workspace.root}")


def workflow_path(arg: Path | None, no_workflow: bool, project_dir: Path) -> Path | None:
    """The WORKFLOW.md to run: `--workflow` (relative to the current directory, ~ expanded;
    must exist, the loader says so), else the project's own when it has one."""
    if no_workflow:
        return None
    if arg is not None:
        return Path(os.path.abspath(arg.expanduser()))
    default = default_workflow_path(project_dir)
    return default if default.exists() else None


def check_workflow(path: Path, settings: AgentSettings, *, guardrails_flag: bool,
                   environ: Mapping[str, str] = os.environ) -> WorkflowStart:
    """Load the workflow and check it can run now; ConfigError lists every problem, one a line."""
    try:
        workflow = load_workflow(path, project_dir=settings.project_dir, environ=environ,
                                 hidden=settings.config.hidden_env_vars)
        config = workflow.config
        name, section = config.runtime(settings.config)  # over agent.yaml's section: may not fit it
    except WorkflowError as exc:
        raise ConfigError(str(exc)) from None
    problems = [f"{path}: tracker.{key}: environment variable {var} is not set"
                for key, var in _secret_refs(config) if not environ.get(var)]
    if (problem := RUNTIMES[name].build(section).check()) is not None:
        problems.append(_command_problem(path, settings, config, name, section, problem["message"]))
    why = unguarded_reason(name, section)
    if why is not None and not guardrails_flag:
        key = getattr(config, "_runtime_key", "agent_runtime")
        problems.append(f"{path}: {key}: {why}; running unattended like that needs {GUARDRAILS_FLAG}")
    if problems:
        raise ConfigError("\n".join(problems))
    return WorkflowStart(workflow=workflow, runtime=name, section=section, unguarded=why)


def _command_problem(path: Path, settings: AgentSettings, config, name: str, section, message: str) -> str:
    """The runtime's "CLI not found" said for a start: where to fix it (the workflow's key when
    it configures the runtime), not the dispatcher's "tasks stay pending" (the start is refused)."""
    if config.agent_runtime is not None:
        # Symphony's top-level `codex:` is the same section under another name.
        key, file = f"{config.runtime_key}.command", path
    else:
        key, file = f"{name}.command", settings.project_dir / "agent.yaml"
    found = _NOT_FOUND.match(message)
    if found is None:  # another kind of problem: said as the runtime says it
        return f"{file}: {key}: {message}"
    hint = _HINT.search(message)
    return (f"{file}: {key}: {found['missing']}: {found['what']} is needed to run this workflow's issues; "
            f"set {key} in {file} to its path" + (f", or install it ({hint['hint']})" if hint else ""))


# runtimes/base.py command_problem's words: "<cmd> not found (<why>): <what> (<key>) is needed ..."
_NOT_FOUND = re.compile(r"^(?P<missing>.+? not found \([^)]*\)): (?P<what>.+?) \([^)]*\) is needed")
_HINT = re.compile(r"Install hint: (?P<hint>.+?) \(or set ")


def _secret_refs(config) -> list[tuple[str, str]]:
    """(key, variable) of each tracker secret: the ones SourceConfig names, then any other the
    workflow reports (named as tracker.api_key, the key Symphony documents)."""
    source = config.source_config()
    refs = [(key, value[1:]) for key in _SECRET_KEYS
            if isinstance(value := getattr(source, key, None), str) and value.startswith("$")]
    named = {var for _, var in refs}
    refs += [("api_key", var) for var in config.secret_vars() if var not in named]
    return refs

