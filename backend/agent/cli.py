"""`baton-agent`: validate everything, take the project's instance lock, then serve the API.

Exit status: 0 after a clean shutdown, 2 for a usage or configuration problem (nothing
written), 1 when another agent runs or the task store is refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .. import __version__
from ..config import ConfigError, load_agent_config, resolve_secret
from ..gitrepo import GitError, toplevel
from ..store import StoreError
from ..web.security import is_loopback
from ..web.serve import serve
from .app import build_store, create_app
from .instance import AlreadyRunningError, InstanceLock
from .settings import DEFAULT_HOST, DEFAULT_PORT, AgentSettings

log = logging.getLogger("baton.agent")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="baton-agent", description="Run the Baton agent for one project.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        help="the project's git repository (default: $BATON_PROJECT_DIR, else the current directory)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
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
    if not is_loopback(args.host) and not token:
        raise ConfigError(
            f"--host {args.host}: refusing to listen on a non-loopback address without a token "
            "(set BATON_TOKEN or `token` in agent.yaml)"
        )
    return AgentSettings(project_dir=project_dir, config=config, host=args.host, port=args.port, token=token)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"baton-agent: {exc}", file=sys.stderr)
        return 2

    instance = InstanceLock(settings.data_dir)
    try:
        instance.acquire(settings.host, settings.port)
    except AlreadyRunningError as exc:
        print(f"baton-agent: {exc}", file=sys.stderr)
        return 1
    try:
        store = build_store(settings)
        try:
            snap = store.initialize()
        except StoreError as exc:
            print(f"baton-agent: task store refused, left untouched: {exc}", file=sys.stderr)
            return 1
        log.info(
            "project %s: %d tasks (store revision %d); auth %s",
            settings.project_dir,
            len(snap.tasks),
            snap.revision,
            "on" if settings.token else "off",
        )
        serve(create_app(settings, store), host=settings.host, port=settings.port, log_level=args.log_level)
        return 0
    finally:
        instance.release()


if __name__ == "__main__":
    sys.exit(main())
