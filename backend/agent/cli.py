"""`baton-agent`: validate everything, take the repository's instance lock, bind the port,
check the task store, then serve the API (and only then start the dispatcher).

Exit status:
  0  clean stop (SIGINT or SIGTERM); or, with the guardrails flag, acknowledged while another
     agent already runs for this repository (that one picks the acknowledgement up)
  1  another baton-agent already runs for this repository (linked worktrees included)
  2  usage, configuration or start-up problem: bad agent.yaml, WORKFLOW.md or arguments, a
     workflow that cannot run now (unset tracker secret, missing runtime CLI, a runtime without
     its prompts and no guardrails flag), a base branch that does not exist, a token too weak for
     a non-loopback address, a refused or unreadable task store, a data/, .git or --logs-root
     folder that cannot be written, `executor: dask` without Dask distributed installed or
     without the project's git remote. Nothing is changed.
  3  cannot listen on host:port (e.g. the port is busy); no task was claimed
Every failure is reported as one line on stderr: `baton-agent: <file or option>: <problem>`.

--i-understand-that-this-will-be-running-without-the-usual-guardrails records, once, that the
configured runtimes that bypass their permission prompts may run (backend/guardrails.py);
without it their tasks wait. A WORKFLOW.md whose runtime bypasses them needs the flag on the
command line at every start (backend/agent/workflowstart.py).

--workflow PATH / the project's WORKFLOW.md: the repository's issues run unattended in this
agent (backend/workflow/); --no-workflow ignores the file. --logs-root DIR moves the task logs
and adds the agent's own log there (backend/agent/logsroot.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..config import ConfigError, load_agent_config, resolve_secret, token_problem
from ..dispatcher.workspace import ProjectGit
from ..executors import ExecutorUnavailable, build_executor
from ..gitrepo import GitError, ensure_excluded, toplevel
from ..guardrails import FLAG as GUARDRAILS_FLAG, ack_path, acknowledge, unguarded
from ..store import StoreError
from ..web.serve import cannot_listen, listen, serve
from ..workflow.live import LiveWorkflow
from .app import build_store, create_app
from .basebranch import check_base_branch, resolve_settings
from .instance import AlreadyRunningError, InstanceLock
from .logsroot import LogsRootError, add_log_file, inside_workspaces, prepare_logs_root, record_logs_root
from .logsroot import resolve_logs_root
from .settings import DEFAULT_HOST, DEFAULT_PORT, RUNTIME_PATTERNS, AgentSettings
from .workflowstart import WorkflowStart, check_workflow, workflow_path

log = logging.getLogger("baton.agent")

EXIT_OK, EXIT_ALREADY_RUNNING, EXIT_CONFIG, EXIT_CANNOT_LISTEN = 0, 1, 2, 3
_EPILOG = ("exit status: 0 clean stop (or, with the guardrails flag, acknowledged for an agent already "
           "running); 1 another agent runs for this repository; 2 usage, configuration "
           "or start-up problem (bad agent.yaml or WORKFLOW.md, missing base branch, weak token off loopback, "
           "refused or unreadable task store, unwritable data/, .git or --logs-root, executor: dask without "
           "distributed or a git remote); 3 cannot listen on host:port")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="baton-agent", description="Run the Baton agent for one project.",
                                     epilog=_EPILOG)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        help="the project's git repository (default: $BATON_PROJECT_DIR, else the current directory)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(GUARDRAILS_FLAG, dest="acknowledge_guardrails", action="store_true",
                        help="acknowledge, once for this project, that its configured runtimes that bypass their "
                             "permission prompts (claude_code skip_permissions, codex danger-full-access, opencode "
                             "without `permission`) may run; stored in data/guardrails-acknowledged.json. With a "
                             "WORKFLOW.md whose runtime bypasses them, it is needed on the command line at every "
                             "start (and a live edit to such a runtime is refused without it)")
    workflow = parser.add_mutually_exclusive_group()
    workflow.add_argument("--workflow", type=Path, default=None, metavar="PATH",
                          help="run this WORKFLOW.md's tracker issues unattended (default: the project's "
                               "WORKFLOW.md when it has one)")
    workflow.add_argument("--no-workflow", action="store_true",
                          help="ignore the project's WORKFLOW.md: run as a project without one")
    parser.add_argument("--logs-root", type=Path, default=None, metavar="DIR",
                        help="write the task logs and this agent's own log (baton-agent.log) in DIR "
                             "(created 0700 when missing) instead of <project>/logs")
    parser.add_argument("--version", action="version", version=f"baton-agent {__version__}")
    return parser.parse_args(argv)


def resolve_project_dir(arg: Path | None) -> Path:
    raw = arg or (Path(os.environ["BATON_PROJECT_DIR"]) if os.environ.get("BATON_PROJECT_DIR") else Path.cwd())
    path = raw.expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"project directory {path} does not exist")
    try:
        return toplevel(path)
    except GitError:
        raise ConfigError(f"project directory {path} is not a git repository (run `git init` there first)") from None


def load_settings(args: argparse.Namespace) -> AgentSettings:
    """Everything that can be wrong with the command line or configuration. Writes nothing."""
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be between 1 and 65535")
    project_dir = resolve_project_dir(args.project_dir)
    config_path = project_dir / "agent.yaml"
    config = load_agent_config(config_path)
    token = os.environ.get("BATON_TOKEN") or resolve_secret(config.token)
    if config.token and config.token.startswith("$") and not token:
        raise ConfigError(f"{config_path}: token: environment variable {config.token[1:]} is not set")
    problem = token_problem(token, args.host, "set BATON_TOKEN or `token` in agent.yaml")
    if problem:
        raise ConfigError(problem)
    try:
        settings = resolve_settings(AgentSettings(
            project_dir=project_dir, config=config, host=args.host, port=args.port, token=token,
            logs_root=resolve_logs_root(args.logs_root) if args.logs_root is not None else None))
        # Configured or detected, the base branch must exist: a missing one fails every task.
        check_base_branch(project_dir, settings.config, config_path, detected=config.base_branch is None)
        return settings
    except GitError as exc:
        raise ConfigError(f"{project_dir}: {exc}") from None


def load_workflow_start(args: argparse.Namespace,
                        settings: AgentSettings) -> tuple[AgentSettings, WorkflowStart | None]:
    """The workflow this agent runs, checked to start now (None without one), and the settings
    naming it. Writes nothing."""
    start = None
    if (path := workflow_path(args.workflow, args.no_workflow, settings.project_dir)) is not None:
        settings = replace(settings, workflow_path=path)
        start = check_workflow(path, settings, guardrails_flag=args.acknowledge_guardrails)
    if settings.logs_root is not None:
        roots = [settings.project_dir / "worktrees"] + ([start.workflow.config.workspace.root] if start else [])
        if (problem := inside_workspaces(settings.logs_root, roots)) is not None:
            raise ConfigError(problem)
    return settings, start


def check_executor(settings: AgentSettings) -> None:
    """`executor: dask` must be able to run from here: Dask distributed importable, and the
    project's git remote there (workers get their work only through git). Writes nothing; opens
    no connection (a scheduler that is down is a problem on /agent/health, not a refusal)."""
    config = settings.config
    if config.executor == "local":
        return
    where = settings.project_dir / "agent.yaml"
    tls = config.dask.tls if config.dask is not None else None
    for key in ("ca_file", "cert_file", "key_file") if tls is not None else ():
        path = Path(getattr(tls, key)).expanduser()
        if not path.is_file():
            raise ConfigError(f"{where}: dask.tls.{key}: {path} is not a readable file")
    git = ProjectGit(settings.project_dir, config)
    try:
        build_executor(config, git).close()
    except ExecutorUnavailable as exc:
        raise ConfigError(f"{where}: {_one_line(exc)}") from None
    try:
        has_remote = git.has_remote
    except GitError as exc:
        raise ConfigError(f"{settings.project_dir}: {exc}") from None
    if not has_remote:
        raise ConfigError(f"{where}: executor: {config.executor}: the project has no git remote {config.remote!r} "
                          f"(remote:): workers get their work only through git; add one with "
                          f"`git remote add {config.remote} URL` (a URL the workers can fetch from and push to)")


def acknowledge_guardrails(settings: AgentSettings, start: WorkflowStart | None = None) -> str:
    """Write the acknowledgement (once) for the configured runtimes that need it, the workflow's
    included; what happened."""
    names = sorted(set(unguarded(settings.config)) | ({start.runtime} if start and start.unguarded else set()))
    if not names:
        return "no configured runtime bypasses its permission prompts: nothing to acknowledge"
    where = ack_path(settings.project_dir)
    if acknowledge(settings.project_dir, names, by="baton-agent"):
        return f"acknowledged running {', '.join(names)} without the usual guardrails (recorded in {where})"
    return f"already acknowledged for {', '.join(names)} ({where}); nothing changed"


def _one_line(text: object) -> str:
    return " ".join(str(text).split("\n"))


def _os_problem(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "start-up"
    return f"{where}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def fail(status: int, message: object) -> int:
        print(f"baton-agent: {_one_line(message)}", file=sys.stderr)
        return status

    try:
        settings = load_settings(args)
        settings, start = load_workflow_start(args, settings)
        check_executor(settings)
    except ConfigError as exc:
        # A configuration error may list one problem per line; each line names file and key.
        print("\n".join(f"baton-agent: {line}" for line in str(exc).splitlines()), file=sys.stderr)
        return EXIT_CONFIG

    if args.acknowledge_guardrails:
        try:
            print(f"baton-agent: {acknowledge_guardrails(settings, start)}", file=sys.stderr)
        except OSError as exc:
            return fail(EXIT_CONFIG, f"{_os_problem(exc)} (cannot record the guardrails acknowledgement)")
        except GitError as exc:
            return fail(EXIT_CONFIG, f"{settings.project_dir}: {exc}")

    try:
        instance = InstanceLock.for_repository(settings.project_dir)
        instance.acquire(settings.host, settings.port)
    except AlreadyRunningError as exc:
        if args.acknowledge_guardrails:  # the running agent reads the acknowledgement each tick
            print(f"baton-agent: {_one_line(exc)}; it picks the acknowledgement up", file=sys.stderr)
            return EXIT_OK
        return fail(EXIT_ALREADY_RUNNING, exc)
    except GitError as exc:
        return fail(EXIT_CONFIG, f"{settings.project_dir}: {exc}")
    except OSError as exc:
        return fail(EXIT_CONFIG, f"{_os_problem(exc)} (cannot create the agent's instance lock)")
    try:
        if settings.logs_root is not None:
            try:
                prepare_logs_root(settings.logs_root)
                add_log_file(settings.logs_root)
            except LogsRootError as exc:
                return fail(EXIT_CONFIG, exc)
        # Bound before anything else happens: a busy port must not claim a task first.
        try:
            sock = listen(settings.host, settings.port)
        except OSError as exc:
            return fail(EXIT_CANNOT_LISTEN, cannot_listen(settings.host, settings.port, exc))
        try:
            store = build_store(settings)
            snap = store.initialize()
            ensure_excluded(settings.project_dir, RUNTIME_PATTERNS, "Baton runtime state")
            record_logs_root(settings.project_dir, settings.logs_root)  # for the dashboard without this agent
        except StoreError as exc:
            sock.close()
            return fail(EXIT_CONFIG, f"{exc} (task store refused, left untouched)")
        except OSError as exc:
            sock.close()
            return fail(EXIT_CONFIG, _os_problem(exc))
        except GitError as exc:
            sock.close()
            return fail(EXIT_CONFIG, f"{settings.project_dir}: {exc}")
        log.info(
            "project %s (%s, base branch %s): %d tasks (store revision %d); auth %s",
            settings.project_dir,
            settings.project_id,
            settings.config.base_branch,
            len(snap.tasks),
            snap.revision,
            "on" if settings.token else "off",
        )
        live = None
        if settings.logs_root is not None:
            log.info("task logs and this log in %s", settings.logs_root)
        if start is not None:
            log.info("%s", start.describe())
            live = LiveWorkflow(start.workflow.path, project_dir=settings.project_dir, first=start.workflow,
                                hidden=settings.config.hidden_env_vars)
        try:
            app = create_app(settings, store, workflow=live, guardrails_flag=args.acknowledge_guardrails)
        except ExecutorUnavailable as exc:  # checked at the start; a package removed since
            return fail(EXIT_CONFIG, f"{settings.project_dir / 'agent.yaml'}: {exc}")
        if not serve(app, sock=sock, log_level=args.log_level):
            return fail(EXIT_CONFIG, "start-up failed (the reason is logged above)")
        return EXIT_OK
    finally:
        instance.release()


if __name__ == "__main__":
    sys.exit(main())
