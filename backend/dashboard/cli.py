"""`baton-dashboard`: validate config/projects.yaml, bind the port, then serve the board and its API.

Exit status:
  0  clean stop (SIGINT or SIGTERM)
  2  usage or configuration problem (bad projects file or arguments, a token too weak for a
     non-loopback address)
  3  cannot listen on host:port (e.g. the port is busy)
Every failure is reported as one line per problem on stderr: `baton-dashboard: <problem>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path


from .. import __version__
from ..config import ConfigError, resolve_secret, token_problem
from ..web.serve import cannot_listen, listen, serve, serve_reloading
from .app import create_app
from .config import load_dashboard_config
from .demo import DEFAULT_DIR as DEMO_DIR
from .demo import Demo, DemoError, prepare as prepare_demo
from .settings import DashboardSettings

DEFAULT_PORT = 8888
EXIT_OK, EXIT_CONFIG, EXIT_CANNOT_LISTEN = 0, 2, 3
_ENV_ARGS = "BATON_DASHBOARD_ARGS"  # how --reload hands the arguments to the reloaded process


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="baton-dashboard", description="Serve the Baton board over all projects.",
                                     epilog="exit status: 0 clean stop; 2 usage or configuration problem; "
                                            "3 cannot listen on host:port")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--config", type=Path, default=Path("config/projects.yaml"),
                        help="projects file (default config/projects.yaml)")
    parser.add_argument("--reload", action="store_true", help="restart when the code changes (development)")
    parser.add_argument("--start-agents", action="store_true",
                        help="start (and restart) the baton-agent of every project with a path and a loopback "
                             "agent_url, as if each had `start: true`; stopped when the dashboard exits")
    parser.add_argument("--demo", action="store_true",
                        help="the demo: a sample repository (in --demo-dir) whose agent the dashboard starts, "
                             "worked on by the scripted demo runtime (no model, no key); replaces --config")
    parser.add_argument("--demo-dir", type=Path, default=None,
                        help=f"the demo's folder (default {DEMO_DIR}, reused when valid; implies --demo)")
    parser.add_argument("--demo-reset", action="store_true",
                        help="delete and recreate the demo folder (implies --demo)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version=f"baton-dashboard {__version__}")
    return parser.parse_args(argv)


def load_settings(args: argparse.Namespace) -> DashboardSettings:
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be between 1 and 65535")
    config_file = args.config.expanduser().resolve()
    config = load_dashboard_config(config_file)
    if args.start_agents:
        config = config.start_all()
    token = os.environ.get("BATON_DASHBOARD_TOKEN") or resolve_secret(config.token)
    if config.token and config.token.startswith("$") and not token:
        raise ConfigError(f"{args.config}: token: environment variable {config.token[1:]} is not set")
    problem = token_problem(token, args.host, "set BATON_DASHBOARD_TOKEN or `token` in the projects file")
    if problem:
        raise ConfigError(problem)
    return DashboardSettings(config=config, host=args.host, port=args.port, token=token,
                             data_dir=config_file.parent.parent / "data")


def _prepare_demo(args: argparse.Namespace) -> Demo:
    """--demo: create or reuse the demo folder; its projects.yaml becomes the config."""
    if args.reload:
        raise ConfigError("--demo cannot be combined with --reload")
    try:
        demo = prepare_demo(args.demo_dir or DEMO_DIR, reset=args.demo_reset)
    except DemoError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"--demo: cannot create the demo folder: {exc}") from None
    args.config = demo.projects_file
    print(f"baton-dashboard: {demo.note}", file=sys.stderr)
    return demo


def reload_factory():
    """Entry point uvicorn's reloader imports (it needs an import string, not an object)."""
    return create_app(load_settings(_parse_args(json.loads(os.environ[_ENV_ARGS]))))


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = _parse_args(raw)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per relayed request is noise
    demo = None
    try:
        if args.demo or args.demo_dir or args.demo_reset:
            demo = _prepare_demo(args)
        settings = load_settings(args)
    except ConfigError as exc:
        print("\n".join(f"baton-dashboard: {line}" for line in str(exc).splitlines()), file=sys.stderr)
        return EXIT_CONFIG
    try:
        sock = listen(settings.host, settings.port)  # before any app code runs
    except OSError as exc:
        print(f"baton-dashboard: {cannot_listen(settings.host, settings.port, exc)}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    logging.getLogger("baton.dashboard").info(
        "%d project(s) from %s; auth %s", len(settings.config.projects), args.config,
        "on" if settings.token else "off")
    if demo is not None:
        print(f"Baton demo: open http://{settings.host}:{settings.port}/ to watch its tasks land "
              "(Ctrl+C stops everything)", flush=True)
    if args.reload:
        os.environ[_ENV_ARGS] = json.dumps(raw)
        serve_reloading("backend.dashboard.cli:reload_factory", sock=sock, log_level=args.log_level)
        return EXIT_OK
    # A closed terminal (SIGHUP) would kill us outright, leaving the agents we started (own
    # sessions) running: stop as on SIGTERM instead.
    signal.signal(signal.SIGHUP, lambda *_: signal.raise_signal(signal.SIGTERM))
    if not serve(create_app(settings), sock=sock, log_level=args.log_level):
        print("baton-dashboard: start-up failed (the reason is logged above)", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
