"""`baton-init [TARGET]`: make a repository a Baton project in one command.

TARGET is a path (adopted as it is) or a git URL (cloned into --dir, else ./<name>). baton-init
detects the base branch and the test command, writes the project's agent.yaml (only what differs
from the defaults), picks a free agent port and a colour, registers the project in
config/projects.yaml (appending, so its comments stay), checks the runtime's CLI and asks for
the guardrails acknowledgement. It starts nothing: it prints the command that does.

Without --yes it asks each question with its default in brackets; flags answer their questions.
A second run with the same answers changes nothing and says so.

Exit status: 0 done (or nothing to change); 2 bad arguments, answers or configuration; 1 any
other failure (a clone that fails, a file that cannot be written). Problems are reported one
per line on stderr as `baton-init: <problem>`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..agent.basebranch import check_base_branch
from ..config import PROJECT_ID_RE, AgentConfig, ConfigError, load_agent_config, project_slug
from ..dashboard.config import _COLOR_RE, DashboardConfig, ProjectConfig
from ..fsutil import atomic_write
from ..gitrepo import GitError, ref_exists
from ..guardrails import FLAG, acknowledge, read_acknowledged, unguarded
from ..runtimes import RUNTIMES
from .choose import next_colour, next_port, port_in_use, registered_port
from .detect import base_branch, test_commands
from .prompt import NoAnswer, Prompter, UsageError
from .target import TargetError, adopt, clone, clone_name, is_url
from .write import agent_yaml, read_projects, register

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_NONE = "none"  # the answer that means "no test command"
# The runtimes offered for a real repository: the scripted demo runtime only suits the demo's sample.
CHOICES = tuple(name for name in RUNTIMES if name != "demo")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="baton-init", description="Adopt a repository (a path, or a git URL to clone) as a Baton project.",
        epilog="exit status: 0 done or nothing to change; 2 bad arguments, answers or configuration; 1 other failure")
    parser.add_argument("target", nargs="?", metavar="TARGET",
                        help="the repository: a path, or a git URL to clone (default: the current directory)")
    parser.add_argument("--yes", "-y", action="store_true", help="ask nothing: take flags, else the defaults")
    parser.add_argument("--dir", type=Path, help="where to clone a URL (default: ./<name>)")
    parser.add_argument("--id", help="the project's id on the board (default: the folder name, as a slug)")
    parser.add_argument("--name", help="the project's display name (default: the folder name)")
    parser.add_argument("--runtime", help=f"the coding agent: {' | '.join(CHOICES)} (default: claude_code)")
    parser.add_argument("--test-command", help=f"run before landing (default: detected; '{_NONE}': no tests)")
    parser.add_argument("--base-branch", help="tasks start from and land on it (default: detected)")
    parser.add_argument("--port", help="the project agent's port (default: the first free one from 9100)")
    parser.add_argument("--color", help="its colour on the board, like #4f8cff (default: one not used yet)")
    parser.add_argument("--config", type=Path, default=Path("config/projects.yaml"),
                        help="the dashboard's project list (default: config/projects.yaml)")
    parser.add_argument("--force", action="store_true", help="replace an agent.yaml that says something else")
    parser.add_argument(FLAG, dest="acknowledge", action="store_true",
                        help="acknowledge that the runtime runs without its permission prompts")
    parser.add_argument("--start", action=argparse.BooleanOptionalAction, default=None,
                        help="start: true in projects.yaml, so baton-dashboard starts this project's agent "
                             "(default: yes)")
    parser.add_argument("--run", action=argparse.BooleanOptionalAction, default=None,
                        help="start the board (baton-dashboard) now, in place of baton-init (asked when "
                             "interactive; default: no)")
    parser.add_argument("--dashboard-port", type=int, default=None, help="with --run: the board's port (default 8888)")
    return parser.parse_args(argv)


@dataclass
class Plan:
    project: Path
    cloned_from: str | None
    cloned: bool  # just now (else an earlier run's clone)
    agent_text: str
    agent_action: str  # write | unchanged | replace | keep
    config: AgentConfig  # what the agent will read
    entry: dict | None  # None: already registered
    registered_as: str
    port: int | None  # None: registered earlier without an agent_url
    start: bool
    acknowledge: list[str]
    unacknowledged: dict[str, str]


def _same_path(entry: ProjectConfig, project: Path) -> bool:
    return bool(entry.path) and Path(entry.path).expanduser().resolve() == project.resolve()


class Init:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ask = Prompter(interactive=not args.yes)
        self.warnings: list[str] = []

    # ----- questions ----------------------------------------------------------------------

    def target(self) -> tuple[Path, str | None, bool]:
        """(project folder, URL it was cloned from or None, whether it was cloned just now)."""
        def check(text: str) -> tuple[str, object]:
            if is_url(text):
                return "url", text
            try:
                return "path", adopt(Path(text))
            except TargetError as exc:
                raise ValueError(str(exc)) from None

        kind, value = self.ask.value("Repository to adopt (a path or a git URL)", ".", check, given=self.args.target)
        if kind == "path":
            return value, None, False
        url = str(value)
        dest = self.ask.value("Clone it into", str(Path(clone_name(url))), str,
                              given=str(self.args.dir) if self.args.dir else None)
        project, cloned = clone(url, Path(dest))
        return project, url, cloned

    def project_id(self, default: str, project: Path, config: DashboardConfig) -> str:
        def check(text: str) -> str:
            if not PROJECT_ID_RE.fullmatch(text):
                raise ValueError(f"{text!r}: an id is 1-40 characters of a-z, 0-9 and '-', starting with a letter "
                                 "or digit")
            other = next((p for p in config.projects if p.id == text and not _same_path(p, project)), None)
            if other is not None:
                raise ValueError(f"{text!r} is already the id of another project ({other.path or other.agent_url})")
            return text
        return self.ask.value("Project id", default, check, given=self.args.id, flag="--id")

    def name(self, default: str) -> str:
        def check(text: str) -> str:
            if not text.strip() or not text.isprintable():
                raise ValueError("a name is printable text")
            return text.strip()
        return self.ask.value("Display name", default, check, given=self.args.name, flag="--name")

    def runtime(self, default: str) -> str:
        def check(text: str) -> str:
            if text not in CHOICES and not (text == default and text in RUNTIMES):  # keep what is configured
                why = " (it only suits baton-dashboard --demo)" if text in RUNTIMES else ""
                raise ValueError(f"unknown runtime {text!r}{why} (one of {', '.join(CHOICES)})")
            return text
        return self.ask.value(f"Runtime ({' | '.join(CHOICES)})", default, check, given=self.args.runtime,
                              flag="--runtime")

    def test_command(self, default: str) -> str:
        def check(text: str) -> str:
            if text.strip().lower() == _NONE:
                return ""
            try:
                shlex.split(text)
            except ValueError as exc:
                raise ValueError(f"cannot be split into arguments: {exc}") from None
            return text.strip()
        return self.ask.value(f"Test command, run before landing ('{_NONE}': no tests)", default or _NONE, check,
                              given=self.args.test_command, flag="--test-command")

    def base_branch(self, default: str, project: Path, remote: str) -> str:
        def check(text: str) -> str:
            if text.startswith("-") or ".." in text or any(c.isspace() or c in "~^:?*[\\" for c in text):
                raise ValueError(f"{text!r} is not a valid git branch name")
            if not (ref_exists(project, f"refs/remotes/{remote}/{text}") or ref_exists(project, f"refs/heads/{text}")):
                raise ValueError(f"no branch {text!r} in {project} (locally or on {remote})")
            return text
        return self.ask.value("Base branch", default, check, given=self.args.base_branch, flag="--base-branch")

    def port(self, default: int, config: DashboardConfig) -> int:
        taken = {registered_port(p.agent_url): p.id for p in config.projects}

        def check(text: str) -> int:
            try:
                port = int(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a port number") from None
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is out of range (1-65535)")
            if port in taken:
                raise ValueError(f"port {port} is project {taken[port]!r}'s agent")
            if port_in_use(port):
                raise ValueError(f"port {port} is in use on 127.0.0.1")
            return port
        return self.ask.value("Agent port", str(default), check, given=self.args.port, flag="--port")

    def colour(self, default: str) -> str:
        def check(text: str) -> str:
            if not _COLOR_RE.fullmatch(text):
                raise ValueError(f"{text!r} is not a colour like #4f8cff or #48f")
            return text
        return self.ask.value("Colour on the board", default, check, given=self.args.color, flag="--color")

    # ----- the plan: every question answered and checked before anything is written ----------

    def plan(self, dash: DashboardConfig) -> Plan:
        project, url, cloned = self.target()
        agent_path = project / "agent.yaml"
        try:
            existing_text: str | None = agent_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            existing_text = None
        try:
            existing = load_agent_config(agent_path) if existing_text is not None else None
        except ConfigError as exc:
            if not self.args.force:
                raise ConfigError(f"{exc}\n{agent_path}: fix it, or pass --force to replace it") from None
            existing = None  # --force: replaced by what baton-init writes
        base = existing or AgentConfig()
        registered = next((p for p in dash.projects if _same_path(p, project)), None)
        slug = project_slug(project.name)

        if registered is not None:
            self._same_registration(registered)
            project_id, port, start = registered.id, registered_port(registered.agent_url), registered.start
        else:
            project_id = self.project_id(base.project_id or slug, project, dash)
            name = self.name(project.name)
        runtime = self.runtime(base.runtime)
        detected_tests = test_commands(project)
        tests_default = (base.test_command if existing is not None and "test_command" in existing.model_fields_set
                         else detected_tests[0][0] if detected_tests else "")
        test_command = self.test_command(tests_default)
        detected_branch = base_branch(project, base.remote)
        branch = self.base_branch(base.base_branch or detected_branch, project, base.remote)
        if registered is None:
            port = self.port(next_port(dash), dash)
            colour = self.colour(next_colour(dash))
            start = self.ask.confirm("Let baton-dashboard start this project's agent (start: true)?", True,
                                     given=self.args.start)

        text = agent_yaml({"project_id": project_id if project_id != slug else None, "runtime": runtime,
                           "test_command": test_command, "base_branch": branch if branch != detected_branch else None})
        if existing_text is None:
            action = "write"
        elif existing_text == text:
            action = "unchanged"
        elif self.args.force or self.ask.confirm(f"{agent_path} exists and says something else; replace it?", False,
                                                 given=False if self.args.yes else None):
            action = "replace"
        else:
            action = "keep"
        config = base if action == "keep" else AgentConfig.model_validate(yaml.safe_load(text) or {})
        config = config.model_copy(update={"base_branch": config.base_branch or detected_branch})

        entry = None
        if registered is None:
            entry = {"id": project_id, "name": name, "path": str(project), "agent_url": f"http://127.0.0.1:{port}",
                     "color": colour}
            if start:
                entry["start"] = True
            agent_pid = config.project_id or slug
            if agent_pid != project_id:  # agent.yaml kept as it was names the project otherwise
                entry["agent_project_id"] = agent_pid

        reasons = unguarded(config)
        known, _ = read_acknowledged(project)
        missing = {kind: why for kind, why in reasons.items() if kind not in known}
        agreed = bool(missing) and (self.args.acknowledge or self._ask_guardrails(missing))
        return Plan(project=project, cloned_from=url, cloned=cloned, agent_text=text, agent_action=action,
                    config=config, entry=entry, registered_as=project_id, port=port, start=start,
                    acknowledge=sorted(missing) if agreed else [], unacknowledged={} if agreed else missing)

    def _same_registration(self, registered: ProjectConfig) -> None:
        """Flags may repeat what the entry says; changing it is done in projects.yaml by hand."""
        args = self.args
        given = {"--id": (args.id, registered.id), "--name": (args.name, registered.name),
                 "--port": (args.port, str(registered_port(registered.agent_url))),
                 "--color": (args.color, registered.color),
                 "--start": (args.start, registered.start)}
        for flag, (value, current) in given.items():
            if value is not None and (value.lower() != str(current).lower() if isinstance(value, str)
                                      else value != current):
                raise UsageError(f"{flag}: this project is already registered as {registered.id!r} with "
                                 f"{flag.removeprefix('--')} {current}; edit {args.config} to change it")

    def _ask_guardrails(self, missing: dict[str, str]) -> bool:
        if not self.ask.interactive:
            return False
        print("The agent will run without the usual guardrails:")
        for name, why in missing.items():
            print(f"  - {name}: {why}.")
        print("It runs in its own git worktree, but with your user's rights on this machine.")
        return self.ask.typed_yes("Type yes to acknowledge (anything else: the dispatcher stays paused)")

    # ----- doing it -------------------------------------------------------------------------

    def apply(self, plan: Plan, original: str | None) -> None:
        # The registration is checked by reading it back, so it goes first: if it is refused,
        # nothing else has been written.
        if plan.entry is not None:
            register(self.args.config, original, plan.entry, {"start": "baton-dashboard starts its agent"}
                     if plan.entry.get("start") else {})
        if plan.agent_action in ("write", "replace"):
            atomic_write(plan.project / "agent.yaml", plan.agent_text.encode("utf-8"))
        if plan.acknowledge:
            acknowledge(plan.project, plan.acknowledge, by="baton-init")

    def report(self, plan: Plan) -> None:
        config_path = self.args.config
        if plan.cloned_from:
            print(f"{'cloned' if plan.cloned else 'already cloned'} {plan.cloned_from} into {plan.project}")
        agent_path = plan.project / "agent.yaml"
        print({"write": f"wrote {agent_path}", "replace": f"replaced {agent_path}",
               "unchanged": f"{agent_path} unchanged",
               "keep": f"{agent_path} kept as it is (it says something else; --force replaces it)"}[plan.agent_action])
        if plan.entry is None:
            print(f"already registered as {plan.registered_as} in {config_path}")
        else:
            print(f"registered {plan.registered_as!r} in {config_path}: agent on http://127.0.0.1:{plan.port}, "
                  f"colour {plan.entry['color']}")
        if plan.acknowledge:
            print(f"guardrails acknowledged for {', '.join(plan.acknowledge)} "
                  f"({plan.project / 'data' / 'guardrails-acknowledged.json'})")
        for name in plan.unacknowledged:
            self.warn(f"{name} runs without its permission prompts: its tasks wait (the dispatcher stays paused) "
                      f"until acknowledged: run baton-init again, or baton-agent with {FLAG}")
        if not plan.config.test_command.strip():
            self.warn("no test command: work lands without running tests (set test_command in agent.yaml)")
        try:
            check_base_branch(plan.project, plan.config, agent_path)
        except (ConfigError, GitError) as exc:
            self.warn(f"{exc} (the agent refuses to start until then)")
        for name in plan.config.configured_runtimes:
            problem = RUNTIMES[name].build(plan.config.runtime_section(name)).check()
            if problem:
                self.warn(problem["message"])
            else:
                print(f"{name}: {plan.config.runtime_section(name).command} found")
        dashboard = "baton-dashboard" + (f" --config {shlex.quote(str(config_path))}"
                                         if config_path != Path("config/projects.yaml") else "")
        if plan.start and self.ask.confirm(f"Start the board now ({dashboard})?", False, given=self.args.run):
            self.start_board(config_path)
        if plan.start:
            print(f"next: {dashboard}   (starts this project's agent: start: true)")
        elif plan.port is None:  # registered without an agent: the board reads its store
            print(f"next: {dashboard}")
        else:
            print(f"next: baton-agent --project-dir {shlex.quote(str(plan.project))} --port {plan.port}, "
                  f"then {dashboard}")

    def start_board(self, config_path: Path) -> None:
        """Become the dashboard (exec, so one Ctrl+C stops it and the agent it starts)."""
        argv = [sys.executable, "-m", "backend.dashboard.cli", "--config", str(config_path)]
        if self.args.dashboard_port is not None:
            argv += ["--port", str(self.args.dashboard_port)]
        print(f"starting the board: baton-dashboard --config {shlex.quote(str(config_path))}", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)

    def warn(self, message: str) -> None:
        for line in str(message).splitlines():
            print(f"baton-init: warning: {line}", file=sys.stderr)

    def run(self) -> int:
        original, dash = read_projects(self.args.config)
        plan = self.plan(dash)
        self.apply(plan, original)
        if plan.entry is None and plan.agent_action in ("unchanged", "keep") and not plan.acknowledge:
            print(f"nothing to change: already registered as {plan.registered_as}; agent.yaml "
                  f"{'unchanged' if plan.agent_action == 'unchanged' else 'kept'}")
        self.report(plan)
        return EXIT_OK


def _fail(status: int, message: object) -> int:
    for line in str(message).splitlines() or [""]:
        print(f"baton-init: {line}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        return Init(args).run()
    except (UsageError, ConfigError) as exc:
        return _fail(EXIT_USAGE, exc)
    except TargetError as exc:
        return _fail(exc.status, exc)
    except NoAnswer:
        return _fail(EXIT_USAGE, "no more answers on stdin (stopped before writing agent.yaml or projects.yaml; "
                                 "--yes takes the defaults)")
    except KeyboardInterrupt:
        return _fail(EXIT_FAILED, "interrupted")
    except (GitError, OSError) as exc:
        return _fail(EXIT_FAILED, exc)


if __name__ == "__main__":
    sys.exit(main())
