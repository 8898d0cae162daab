"""WORKFLOW.md's front matter: every key of every section read and mapped onto what Baton runs
(SourceConfig, the runtime's section, hooks, paths), the defaults, and each bad value named by
its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backend.config import AgentConfig
from backend.dispatcher.policy import HookSpec
from backend.sources.config import LINEAR_URL
from backend.workflow.loader import Workflow, WorkflowError, load_workflow

ENV = {"LINEAR_API_KEY": "lin-secret-value", "JIRA_API_TOKEN": "jira-secret-value", "HOME": "/home/someone"}
LINEAR = {"kind": "linear", "project_slug": "abc123"}
JIRA = {"kind": "jira", "endpoint": "https://shop.atlassian.net", "email": "me@example.com", "project": "SHOP"}


def write(folder: Path, front: dict, body: str = "Do {{ issue.identifier }}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "WORKFLOW.md"
    path.write_text(f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n{body}\n", encoding="utf-8")
    return path


def load(tmp_path: Path, front: dict, environ: dict | None = None, folder: Path | None = None) -> Workflow:
    path = write(folder or tmp_path, front)
    return load_workflow(path, project_dir=tmp_path, environ=ENV if environ is None else environ)


def problems(tmp_path: Path, front: dict, environ: dict | None = None) -> list[str]:
    """The error's lines without the file's path (each must start with it)."""
    with pytest.raises(WorkflowError) as caught:
        load(tmp_path, front, environ)
    assert caught.value.code == "invalid_config"
    prefix = f"{tmp_path / 'WORKFLOW.md'}: "
    lines = caught.value.message.splitlines()
    assert all(line.startswith(prefix) for line in lines), lines
    assert str(caught.value) == caught.value.message
    return [line[len(prefix):] for line in lines]


# ----- defaults ------------------------------------------------------------------------------

def test_defaults(tmp_path):
    config = load(tmp_path, {"tracker": LINEAR}).config
    assert config.polling.interval_ms == 30000
    assert config.workspace.root == (tmp_path / "worktrees" / "issues").resolve()
    assert [config.hook(name) for name in ("after_create", "before_run", "after_run", "before_remove")] == [None] * 4
    assert config.hooks.timeout_ms == 60000
    agent = config.agent
    assert (agent.max_concurrent_agents, agent.max_turns, agent.max_retry_backoff_ms, agent.max_attempts) == \
        (10, 20, 300000, 5)
    assert (agent.max_concurrent_agents_by_state, agent.continuation_prompt) == ({}, None)
    assert config.agent_runtime is None
    source = config.source_config()
    assert (source.kind, source.base_url, source.url, source.api_key) == ("linear", None, LINEAR_URL, "$LINEAR_API_KEY")
    assert (source.filter.team, source.filter.project, source.filter.labels) == (None, "abc123", [])
    assert source.active_states == ["Todo", "In Progress"]  # Symphony's defaults
    assert source.terminal_states == ["Closed", "Cancelled", "Canceled", "Duplicate", "Done"]
    assert (source.handoff_states, source.on_start, source.on_review, source.on_complete) == ([], None, None, None)
    assert (source.poll_seconds, source.max_attempts, source.retry_max_seconds, source.tools) == (30.0, 5, 300.0, True)
    assert config.secret_vars() == ["LINEAR_API_KEY"]


def test_without_agent_runtime_the_agents_default_runtime_runs(tmp_path):
    config = load(tmp_path, {"tracker": LINEAR}).config
    agent_config = AgentConfig.model_validate({"runtime": "opencode", "opencode": {"model": "p/m"}})
    name, section = config.runtime(agent_config)
    assert name == "opencode" and section is agent_config.opencode


def test_empty_sections_mean_defaults(tmp_path):
    config = load(tmp_path, {"tracker": LINEAR, "polling": None, "workspace": None, "hooks": None, "agent": None,
                             "agent_runtime": None}).config
    assert (config.polling.interval_ms, config.hooks.timeout_ms, config.agent.max_turns) == (30000, 60000, 20)
    assert config.agent_runtime is None


def test_unknown_top_level_keys_are_ignored(tmp_path):
    config = load(tmp_path, {"tracker": LINEAR, "server": {"port": 4000}, "future": [1, {"x": None}],
                             "observability": "on"}).config
    assert config.source_config().filter.project == "abc123"


# ----- tracker -------------------------------------------------------------------------------

def test_every_linear_key_is_mapped(tmp_path):
    env = {**ENV, "MY_LINEAR_KEY": "lin-api-zz9-plural"}
    config = load(tmp_path, {"tracker": {
        "kind": "linear", "api_key": "$MY_LINEAR_KEY", "endpoint": "https://linear.example.com/graphql/",
        "team": "ENG", "required_labels": ["baton", "agent"],
        "active_states": ["Todo", "In Progress", "Rework", "Merging"],
        "terminal_states": ["Done", "Closed", "Cancelled", "Canceled", "Duplicate"],
        "handoff_states": ["Human Review"], "on_start": "In Progress", "on_review": "Human Review",
        "on_complete": "Done", "tools": False,
    }, "polling": {"interval_ms": 5000}, "agent": {"max_attempts": 7, "max_retry_backoff_ms": 60000}}, env).config
    source = config.source_config()
    assert (source.kind, source.base_url, source.api_key) == ("linear", "https://linear.example.com/graphql",
                                                               "$MY_LINEAR_KEY")
    assert (source.filter.team, source.filter.project, source.filter.labels) == ("ENG", None, ["baton", "agent"])
    assert source.active_states == ["Todo", "In Progress", "Rework", "Merging"]
    assert source.terminal_states == ["Done", "Closed", "Cancelled", "Canceled", "Duplicate"]
    assert (source.handoff_states, source.on_start, source.on_review, source.on_complete) == \
        (["Human Review"], "In Progress", "Human Review", "Done")
    assert (source.tools, source.poll_seconds, source.max_attempts, source.retry_max_seconds) == (False, 5.0, 7, 60.0)
    assert config.secret_vars() == ["MY_LINEAR_KEY"]
    assert "zz9" not in source.model_dump_json()  # the secret stays a reference


def test_every_jira_key_is_mapped(tmp_path):
    config = load(tmp_path, {"tracker": {**JIRA, "jql": "component = Web", "labels": ["baton"]}}).config
    source = config.source_config()
    assert (source.kind, source.base_url, source.email, source.api_token) == \
        ("jira", "https://shop.atlassian.net", "me@example.com", "$JIRA_API_TOKEN")
    assert (source.filter.project, source.filter.jql, source.filter.labels) == ("SHOP", "component = Web", ["baton"])
    assert (source.active_states, source.terminal_states) == (["To Do", "In Progress"], ["Done"])
    assert config.secret_vars() == ["JIRA_API_TOKEN"]


def test_provider_form_is_the_flat_form(tmp_path):
    nested = load(tmp_path, {"tracker": {"kind": "jira", "provider": {k: v for k, v in JIRA.items() if k != "kind"},
                                         "required_labels": ["x"]}}).config
    flat = load(tmp_path, {"tracker": {**JIRA, "required_labels": ["x"]}}).config
    assert nested.source_config() == flat.source_config()
    linear = load(tmp_path, {"tracker": {"kind": "linear", "provider": {"api_key": "$LINEAR_API_KEY", "team": "ENG",
                                                                        "base_url": "https://l.example.com"}}}).config
    assert (linear.source_config().filter.team, linear.source_config().base_url) == ("ENG", "https://l.example.com")


def test_non_secret_variables_are_read_at_load(tmp_path):
    env = {**ENV, "SITE": "https://site.atlassian.net", "WHO": "bot@example.com", "KEY": "OPS", "TEAM": "WEB",
           "SLUG": "f00d"}
    jira = load(tmp_path, {"tracker": {"kind": "jira", "endpoint": "$SITE", "email": "$WHO", "project": "$KEY"}},
                env).config.source_config()
    assert (jira.base_url, jira.email, jira.filter.project) == ("https://site.atlassian.net", "bot@example.com", "OPS")
    linear = load(tmp_path, {"tracker": {"kind": "linear", "team": "$TEAM", "project_slug": "$SLUG"}},
                  env).config.source_config()
    assert (linear.filter.team, linear.filter.project) == ("WEB", "f00d")


# ----- workspace -----------------------------------------------------------------------------

def test_workspace_root_paths(tmp_path):
    env = {**ENV, "WS": str(tmp_path / "from-env")}
    assert load(tmp_path, {"tracker": LINEAR, "workspace": {"root": "~/code/ws"}}).config.workspace.root == \
        Path("/home/someone/code/ws")
    assert load(tmp_path, {"tracker": LINEAR, "workspace": {"root": "$WS"}}, env).config.workspace.root == \
        tmp_path / "from-env"
    assert load(tmp_path, {"tracker": LINEAR, "workspace": {"root": "${WS}/sub"}}, env).config.workspace.root == \
        tmp_path / "from-env" / "sub"
    assert load(tmp_path, {"tracker": LINEAR, "workspace": {"root": str(tmp_path / "abs")}}).config.workspace.root == \
        tmp_path / "abs"
    # Relative to WORKFLOW.md's own folder (not the project's, not the process's).
    elsewhere = tmp_path / "config" / "wf"
    root = load(tmp_path, {"tracker": LINEAR, "workspace": {"root": "../ws"}}, folder=elsewhere).config.workspace.root
    assert root == tmp_path / "config" / "ws"
    assert root.is_absolute()


# ----- hooks ---------------------------------------------------------------------------------

def test_hooks(tmp_path):
    workflow = load(tmp_path, {"tracker": LINEAR, "hooks": {
        "after_create": "npm ci\n", "before_run": {"script": "make deps", "timeout_ms": 1500},
        "after_run": "  \n", "before_remove": {"script": "echo bye"}, "timeout_ms": 30000}})
    assert workflow.hook("after_create") == HookSpec("after_create", "npm ci\n", 30.0)
    assert workflow.hook("before_run") == HookSpec("before_run", "make deps", 1.5)
    assert workflow.hook("after_run") is None  # an empty script is no hook
    assert workflow.hook("before_remove") == HookSpec("before_remove", "echo bye", 30.0)
    assert load(tmp_path, {"tracker": LINEAR, "hooks": {"after_run": "x"}}).hook("after_run").timeout == 60.0


# ----- agent ---------------------------------------------------------------------------------

def test_agent_keys(tmp_path):
    agent = load(tmp_path, {"tracker": LINEAR, "agent": {
        "max_concurrent_agents": 3, "max_turns": 4, "max_retry_backoff_ms": 120000,
        "max_concurrent_agents_by_state": {" In Progress ": 2, "TODO": 1}, "max_attempts": 2,
        "continuation_prompt": "Go on with {{ issue.identifier }}"}}).config.agent
    assert (agent.max_concurrent_agents, agent.max_turns, agent.max_retry_backoff_ms, agent.max_attempts) == \
        (3, 4, 120000, 2)
    assert agent.max_concurrent_agents_by_state == {"in progress": 2, "todo": 1}
    assert agent.continuation_prompt == "Go on with {{ issue.identifier }}"


# ----- agent_runtime -------------------------------------------------------------------------

def runtime(tmp_path, section: dict, agent_config: AgentConfig | None = None, env: dict | None = None):
    config = load(tmp_path, {"tracker": LINEAR, "agent_runtime": section}, env).config
    return config.runtime(agent_config or AgentConfig())


def test_codex_runtime(tmp_path):
    base = AgentConfig.model_validate({"codex": {"isolated_home": True, "env": {"A": "1", "B": "2"}, "timeout": 50}})
    name, section = runtime(tmp_path, {
        "kind": "codex", "command": "codex --config 'model=\"gpt-5.5\"' app-server", "model": "gpt-5.5",
        "approval_policy": {"granular": {"sandbox_approval": True}}, "thread_sandbox": "workspace-write",
        "turn_sandbox_policy": {"type": "workspaceWrite", "networkAccess": True},
        "turn_timeout_ms": 3_600_001, "stall_timeout_ms": 299_500, "read_timeout_ms": 5000, "env": {"B": "$B_VALUE"},
    }, base)
    assert name == "codex"
    assert load(tmp_path, {"tracker": LINEAR, "agent_runtime": {"kind": "codex"}}).config.runtime_key == "agent_runtime"
    assert (section.command, section.extra_args, section.model) == ("codex", ["--config", 'model="gpt-5.5"'], "gpt-5.5")
    assert section.approval_policy == {"granular": {"sandbox_approval": True}}
    assert (section.sandbox, section.turn_sandbox_policy) == ("workspace-write",
                                                              {"type": "workspaceWrite", "networkAccess": True})
    assert (section.timeout, section.stall_timeout) == (3601, 300)  # whole seconds, rounded up
    assert section.env == {"A": "1", "B": "$B_VALUE"}  # over agent.yaml's
    assert section.isolated_home is True  # agent.yaml's codex section is the base
    _, strings = runtime(tmp_path, {"kind": "codex", "approval_policy": "on-request",
                                    "turn_sandbox_policy": "read-only", "stall_timeout_ms": 0}, base)
    assert (strings.approval_policy, strings.turn_sandbox_policy) == ("on-request", "read-only")
    assert (strings.timeout, strings.stall_timeout) == (50, 50)  # <= 0: no stall detection within the turn


def test_command_word_expansion(tmp_path):
    env = {**ENV, "TOOLS": "/opt/tools"}
    _, section = runtime(tmp_path, {"kind": "codex", "command": "$TOOLS/codex app-server --flag '$NOT_EXPANDED'"},
                         env=env)
    assert (section.command, section.extra_args) == ("/opt/tools/codex", ["--flag", "$NOT_EXPANDED"])
    _, section = runtime(tmp_path, {"kind": "claude_code", "command": "~/bin/claude --debug"})
    assert (section.command, section.extra_args) == ("/home/someone/bin/claude", ["--debug"])


def test_symphony_codex_section(tmp_path):
    config = load(tmp_path, {"tracker": LINEAR, "codex": {"command": "codex app-server", "approval_policy": "never",
                                                          "thread_sandbox": "read-only"}}).config
    name, section = config.runtime(AgentConfig())
    assert (name, section.command, section.extra_args, section.sandbox) == ("codex", "codex", [], "read-only")
    assert (config.agent_runtime.kind, config.runtime_key) == ("codex", "codex")
    # agent_runtime, when given, is the runtime (codex: is then one more unknown top-level key).
    both = load(tmp_path, {"tracker": LINEAR, "agent_runtime": {"kind": "opencode"}, "codex": {"bogus": 1}}).config
    assert both.runtime(AgentConfig())[0] == "opencode"


@pytest.mark.parametrize("kind", ["claudecode", "claude_code"])
def test_claude_code_runtime(tmp_path, kind):
    base = AgentConfig.model_validate({"claude_code": {"skip_permissions": False, "model": "opus"}})
    name, section = runtime(tmp_path, {"kind": kind, "approval_policy": "never", "turn_timeout_ms": 1000}, base)
    assert (name, section.skip_permissions, section.model, section.timeout) == ("claude_code", True, "opus", 1)
    _, section = runtime(tmp_path, {"kind": kind, "approval_policy": "acceptEdits"})
    assert (section.skip_permissions, section.permission_mode) == (False, "acceptEdits")
    _, section = runtime(tmp_path, {"kind": kind, "approval_policy": {"mode": "plan", "allowed_tools": ["Read"]}})
    assert (section.skip_permissions, section.permission_mode, section.allowed_tools) == (False, "plan", ["Read"])
    _, section = runtime(tmp_path, {"kind": kind, "model": "sonnet"}, base)
    assert (section.skip_permissions, section.model) == (False, "sonnet")  # no approval_policy: agent.yaml's


def test_opencode_runtime(tmp_path):
    base = AgentConfig.model_validate({"opencode": {"config": {"permission": {"bash": "ask"}, "theme": "x"}}})
    name, section = runtime(tmp_path, {"kind": "opencode", "approval_policy": "never", "model": "p/m"}, base)
    assert (name, section.config, section.model) == ("opencode", {"theme": "x"}, "p/m")  # Baton pins allow
    _, section = runtime(tmp_path, {"kind": "opencode", "approval_policy": {"edit": "ask"}}, base)
    assert section.config == {"theme": "x", "permission": {"edit": "ask"}}
    _, section = runtime(tmp_path, {"kind": "opencode"}, base)
    assert section.config == {"permission": {"bash": "ask"}, "theme": "x"}


def test_runtime_over_an_agent_yaml_it_conflicts_with_names_both(tmp_path):
    config = load(tmp_path, {"tracker": LINEAR, "agent_runtime": {"kind": "codex", "stall_timeout_ms": 1}}).config
    assert config.runtime(AgentConfig())[1].stall_timeout == 1
    bad_base = AgentConfig.model_construct(runtime="codex", codex=AgentConfig().codex.model_copy(update={"timeout": -5}))
    with pytest.raises(WorkflowError) as caught:
        config.runtime(bad_base)
    assert caught.value.code == "invalid_config"
    assert caught.value.message.startswith(f"{tmp_path / 'WORKFLOW.md'}: agent_runtime.turn_timeout_ms: ")
    assert "agent.yaml's codex section" in caught.value.message


# ----- bad values, each named by its key -----------------------------------------------------

BAD = [
    ({}, "tracker: required: Baton runs a WORKFLOW.md's issues from its tracker"),
    ({"tracker": None}, "tracker: must be a mapping of keys to values"),
    ({"tracker": 5}, "tracker: must be a mapping of keys to values (got int 5)"),
    ({"tracker": {"project_slug": "abc"}}, "tracker.kind: required: linear or jira"),
    ({"tracker": {"kind": "github"}}, "tracker.kind: Input should be 'linear' or 'jira'"),
    ({"tracker": {**LINEAR, "api_key": "$NOT_SET"}}, "tracker.api_key: $NOT_SET is not set (or is empty)"),
    ({"tracker": {**LINEAR, "api_key": 12}}, "tracker.api_key: Input should be a valid string"),
    ({"tracker": {**LINEAR, "provider": {"api_key": "$NOT_SET"}}}, "tracker.provider.api_key: $NOT_SET is not set"),
    ({"tracker": {**JIRA, "api_token": "$NOT_SET"}}, "tracker.api_token: $NOT_SET is not set"),
    ({"tracker": {"kind": "linear"}}, "tracker.project_slug: required for Linear (the project's slugId), or team"),
    ({"tracker": {**LINEAR, "email": "a@b.c"}}, "tracker.email: is Jira's; Linear takes api_key, team or project_slug"),
    ({"tracker": {**LINEAR, "jql": "x = 1"}}, "tracker.jql: is Jira's"),
    ({"tracker": {**JIRA, "team": "ENG"}}, "tracker.team: is Linear's; Jira takes email, api_token, project and jql"),
    ({"tracker": {**JIRA, "api_key": "$LINEAR_API_KEY"}}, "tracker.api_key: is Linear's"),
    ({"tracker": {"kind": "jira", "email": "a@b.c", "project": "SHOP"}}, "tracker.endpoint: required for Jira"),
    ({"tracker": {"kind": "jira", "endpoint": "https://x.atlassian.net", "project": "SHOP"}},
     "tracker.email: required for Jira"),
    ({"tracker": {"kind": "jira", "endpoint": "https://x.atlassian.net", "email": "a@b.c"}},
     "tracker.project: required for Jira"),
    ({"tracker": {**LINEAR, "endpoint": "ftp://x.example.com"}}, "tracker.endpoint: 'ftp://x.example.com' is not an http(s) URL"),
    ({"tracker": {**LINEAR, "endpoint": "$NO_URL"}}, "tracker.endpoint: $NO_URL is not set"),
    ({"tracker": {"kind": "linear", "project_slug": "not a slug!"}},
     "tracker.project_slug: 'not a slug!' is not a Linear project slugId"),
    ({"tracker": {"kind": "linear", "team": "1x"}}, "tracker.team: '1x' is not a team key like ENG"),
    ({"tracker": {**JIRA, "project": "shop-1"}}, "tracker.project: 'shop-1' is not a Jira project key like SHOP"),
    ({"tracker": {**JIRA, "jql": "a = 1) OR (b = 2"}}, "tracker.jql: a `)` closes a parenthesis it did not open"),
    ({"tracker": {**JIRA, "email": "nobody"}}, "tracker.email: 'nobody' is not an email address or $VARIABLE"),
    ({"tracker": {**LINEAR, "required_labels": "baton"}}, "tracker.required_labels: Input should be a valid list"),
    ({"tracker": {**LINEAR, "required_labels": ['a"b']}}, "tracker.required_labels: 'a\"b': a label is 1-100 characters"),
    ({"tracker": {**LINEAR, "labels": ["x"], "required_labels": ["y"]}},
     "tracker.labels: the same setting as required_labels: give one"),
    ({"tracker": {**LINEAR, "base_url": "https://a.example.com", "endpoint": "https://b.example.com"}},
     "tracker.base_url: the same setting as endpoint: give one"),
    ({"tracker": {**LINEAR, "team": "ENG", "provider": {"team": "WEB"}}},
     "tracker.provider.team: also given as tracker.team: give it once"),
    ({"tracker": {**LINEAR, "active_states": []}}, "tracker.active_states: must name at least one state"),
    ({"tracker": {**LINEAR, "terminal_states": ["Todo"]}},
     "tracker.active_states: active_states and terminal_states both name Todo"),
    ({"tracker": {**LINEAR, "on_start": "Done"}}, "tracker.on_start: 'Done' must be one of active_states"),
    ({"tracker": {**LINEAR, "on_complete": "Todo"}}, "tracker.on_complete: 'Todo' is one of active_states"),
    ({"tracker": {**LINEAR, "on_review": "In Progress"}}, "tracker.on_review: 'In Progress' is one of active_states"),
    ({"tracker": {**LINEAR, "handoff_states": ["Todo"]}},
     "tracker.handoff_states: Todo is also an active or terminal state"),
    ({"tracker": {**LINEAR, "handoff_states": "Human Review"}}, "tracker.handoff_states: Input should be a valid list"),
    ({"tracker": {**LINEAR, "tools": "yes please"}}, "tracker.tools: Input should be a valid boolean"),
    ({"tracker": {**LINEAR, "assignee": "me"}}, "tracker.assignee: unknown key"),
    ({"tracker": {**LINEAR, "provider": {"region": "eu"}}}, "tracker.provider.region: unknown key"),
    ({"tracker": LINEAR, "polling": {"interval_ms": "5"}}, "polling.interval_ms: Input should be a valid integer (got str '5')"),
    ({"tracker": LINEAR, "polling": {"interval_ms": True}}, "polling.interval_ms: Input should be a valid integer (got bool True)"),
    ({"tracker": LINEAR, "polling": {"interval_ms": 500}}, "polling.interval_ms: Input should be greater than or equal to 1000"),
    ({"tracker": LINEAR, "polling": {"interval_ms": 2.5}}, "polling.interval_ms: Input should be a valid integer"),
    ({"tracker": LINEAR, "polling": {"every": 1}}, "polling.every: unknown key"),
    ({"tracker": LINEAR, "polling": 30}, "polling: must be a mapping of keys to values (got int 30)"),
    ({"tracker": LINEAR, "workspace": {"root": 5}}, "workspace.root: must be a path (got int 5)"),
    ({"tracker": LINEAR, "workspace": {"root": ""}}, "workspace.root: must be a path"),
    ({"tracker": LINEAR, "workspace": {"root": "$NO_ROOT/ws"}}, "workspace.root: $NO_ROOT is not set"),
    ({"tracker": LINEAR, "workspace": {"path": "x"}}, "workspace.path: unknown key"),
    ({"tracker": LINEAR, "hooks": {"timeout_ms": 0}}, "hooks.timeout_ms: Input should be greater than 0"),
    ({"tracker": LINEAR, "hooks": {"timeout_ms": "60s"}}, "hooks.timeout_ms: Input should be a valid integer"),
    ({"tracker": LINEAR, "hooks": {"after_create": 5}}, "hooks.after_create: must be a script (a string) or {script"),
    ({"tracker": LINEAR, "hooks": {"before_run": {"timeout_ms": 5}}}, "hooks.before_run.script: required"),
    ({"tracker": LINEAR, "hooks": {"after_run": {"script": "x", "timeout_ms": -1}}},
     "hooks.after_run.timeout_ms: Input should be greater than 0"),
    ({"tracker": LINEAR, "hooks": {"before_remove": {"script": "x", "shell": "zsh"}}},
     "hooks.before_remove.shell: unknown key"),
    ({"tracker": LINEAR, "hooks": {"on_land": "x"}}, "hooks.on_land: unknown key"),
    ({"tracker": LINEAR, "agent": {"max_concurrent_agents": 0}}, "agent.max_concurrent_agents: Input should be greater than or equal to 1"),
    ({"tracker": LINEAR, "agent": {"max_concurrent_agents": "3"}}, "agent.max_concurrent_agents: Input should be a valid integer"),
    ({"tracker": LINEAR, "agent": {"max_turns": 0}}, "agent.max_turns: Input should be greater than or equal to 1"),
    ({"tracker": LINEAR, "agent": {"max_turns": False}}, "agent.max_turns: Input should be a valid integer (got bool False)"),
    ({"tracker": LINEAR, "agent": {"max_retry_backoff_ms": 10}}, "agent.max_retry_backoff_ms: Input should be greater than or equal to 1000"),
    ({"tracker": LINEAR, "agent": {"max_attempts": 0}}, "agent.max_attempts: Input should be greater than or equal to 1"),
    ({"tracker": LINEAR, "agent": {"max_concurrent_agents_by_state": {"In Progress": 0}}},
     "agent.max_concurrent_agents_by_state.In Progress: must be a whole number from 1 to 64 (got 0)"),
    ({"tracker": LINEAR, "agent": {"max_concurrent_agents_by_state": {"Todo": "2"}}},
     "agent.max_concurrent_agents_by_state.Todo: Input should be a valid integer"),
    ({"tracker": LINEAR, "agent": {"max_concurrent_agents_by_state": {"Todo": 1, " todo": 2}}},
     "agent.max_concurrent_agents_by_state. todo: names the same state as another key ('todo'"),
    ({"tracker": LINEAR, "agent": {"max_concurrent_agents_by_state": [1]}},
     "agent.max_concurrent_agents_by_state: Input should be a valid dictionary"),
    ({"tracker": LINEAR, "agent": {"continuation_prompt": 5}}, "agent.continuation_prompt: Input should be a valid string"),
    ({"tracker": LINEAR, "agent": {"max_workers": 5}}, "agent.max_workers: unknown key"),
    ({"tracker": LINEAR, "agent_runtime": {"command": "codex"}}, "agent_runtime.kind: required"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "gpt"}}, "agent_runtime.kind: Input should be 'codex', 'opencode', "),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "command": "codex 'unclosed"}},
     "agent_runtime.command: cannot be split into arguments"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "command": "  "}}, "agent_runtime.command: names no program"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "command": "./bin/codex app-server"}},
     "agent_runtime.command: './bin/codex' must be a command name found on PATH or an absolute path"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "command": "$NO_BIN/codex"}},
     "agent_runtime.command: $NO_BIN is not set"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "model": ""}},
     "agent_runtime.model: String should have at least 1 character"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "turn_timeout_ms": 0}},
     "agent_runtime.turn_timeout_ms: Input should be greater than 0"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "stall_timeout_ms": "5m"}},
     "agent_runtime.stall_timeout_ms: Input should be a valid integer"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "read_timeout_ms": -1}},
     "agent_runtime.read_timeout_ms: Input should be greater than 0"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "approval_policy": 5}},
     "agent_runtime.approval_policy: must be a string or a mapping (got int 5)"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "approval_policy": "sometimes"}},
     "agent_runtime.approval_policy: Input should be 'never', 'on-request', 'on-failure' or 'untrusted'"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "thread_sandbox": "open"}},
     "agent_runtime.thread_sandbox: Input should be 'read-only', 'workspace-write' or 'danger-full-access'"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "turn_sandbox_policy": {"networkAccess": True}}},
     "agent_runtime.turn_sandbox_policy: a sandbox policy object needs a string `type`"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "turn_sandbox_policy": []}},
     "agent_runtime.turn_sandbox_policy: must be a string or a mapping"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "env": {"1BAD": "x"}}},
     "agent_runtime.env: '1BAD' is not an environment variable name"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "env": {"A": 1}}}, "agent_runtime.env.A: Input should be a valid string"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "codex", "sandbox": "x"}}, "agent_runtime.sandbox: unknown key"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "claudecode", "thread_sandbox": "read-only"}},
     "agent_runtime.thread_sandbox: is Codex's; claude_code has none"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "claude_code", "turn_sandbox_policy": {"type": "readOnly"}}},
     "agent_runtime.turn_sandbox_policy: is Codex's; claude_code has none"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "claudecode", "approval_policy": "on-request"}},
     "agent_runtime.approval_policy: 'on-request': must be never or a Claude Code permission mode"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "claudecode", "approval_policy": {"mode": "plan", "rules": 1}}},
     "agent_runtime.approval_policy.rules: unknown key (claude_code takes mode and allowed_tools)"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "claudecode", "approval_policy": {"mode": "yolo"}}},
     "agent_runtime.approval_policy: must be one of acceptEdits, bypassPermissions, default, dontAsk, plan"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "opencode", "thread_sandbox": "read-only"}},
     "agent_runtime.thread_sandbox: is Codex's; opencode has none"),
    ({"tracker": LINEAR, "agent_runtime": {"kind": "opencode", "approval_policy": "ask"}},
     "agent_runtime.approval_policy: 'ask': must be never or an OpenCode permission object"),
    ({"tracker": LINEAR, "codex": {"thread_sandbox": "open"}}, "codex.thread_sandbox: Input should be 'read-only'"),
    ({"tracker": LINEAR, "codex": {"turn_timeout_ms": 0}}, "codex.turn_timeout_ms: Input should be greater than 0"),
    ({"tracker": LINEAR, "codex": 5}, "codex: must be a mapping of keys to values (got int 5)"),
    ({"tracker": LINEAR, "codex": {"kind": "opencode"}}, "codex.kind: unknown key (Symphony's codex section is always Codex"),
]


@pytest.mark.parametrize(("front", "expected"), BAD, ids=[expected.split(":")[0] + f"-{i}" for i, (_, expected) in
                                                         enumerate(BAD)])
def test_bad_values_name_their_key(tmp_path, front, expected):
    lines = problems(tmp_path, front)
    assert any(line.startswith(expected) for line in lines), lines


def test_a_secret_written_in_the_file_is_refused_and_never_echoed(tmp_path):
    lines = problems(tmp_path, {"tracker": {**LINEAR, "api_key": "lin_api_0123456789abcdef"}})
    assert lines == ["tracker.api_key: must name an environment variable, like $LINEAR_API_KEY (secrets are never "
                     "written in the file)"]
    lines = problems(tmp_path, {"tracker": {**JIRA, "api_token": "ATATT3xFfGF0-secret"}})
    assert lines[0].startswith("tracker.api_token: must name an environment variable")
    assert "secret" not in "".join(lines).replace("secrets are", "")


def test_an_unset_secret_names_the_key_and_the_variable_not_a_value(tmp_path):
    assert problems(tmp_path, {"tracker": LINEAR}, environ={"LINEAR_API_KEY": ""}) == [
        "tracker.api_key: not given, and the default $LINEAR_API_KEY is not set (or is empty) in baton-agent's "
        "environment"]
    assert problems(tmp_path, {"tracker": JIRA}, environ={}) == [
        "tracker.api_token: not given, and the default $JIRA_API_TOKEN is not set (or is empty) in baton-agent's "
        "environment"]


def test_every_problem_is_reported_at_once(tmp_path):
    lines = problems(tmp_path, {"tracker": {**LINEAR, "colour": 1}, "polling": {"interval_ms": "x"},
                                "agent": {"max_turns": 0}, "hooks": {"timeout_ms": -1}})
    assert [line.split(":")[0] for line in lines] == ["tracker.colour", "polling.interval_ms", "hooks.timeout_ms",
                                                      "agent.max_turns"]


# ----- secret variables (R1 H1) --------------------------------------------------------------

HIDDEN_ENV = {**ENV, "BATON_TOKEN": "baton-token-value", "GITHUB_TOKEN": "ghp_github_value",
              "AGENT_SECRET": "agent-secret-value", "TRACKER_KEY": "tracker-key-value"}
REFUSED = "is one of Baton's secret variables and cannot be used here"


def hidden_problems(tmp_path: Path, front: dict, hidden=()) -> list[str]:
    with pytest.raises(WorkflowError) as caught:
        load_workflow(write(tmp_path, front), project_dir=tmp_path, environ=HIDDEN_ENV, hidden=hidden)
    assert caught.value.code == "invalid_config"
    for value in ("baton-token-value", "ghp_github_value", "agent-secret-value", "tracker-key-value",
                  "lin-secret-value", "jira-secret-value"):
        assert value not in caught.value.message
    return [line.removeprefix(f"{tmp_path / 'WORKFLOW.md'}: ") for line in caught.value.message.splitlines()]


@pytest.mark.parametrize("name", ["BATON_TOKEN", "GITHUB_TOKEN", "LINEAR_API_KEY", "JIRA_API_TOKEN"])
@pytest.mark.parametrize("key", ["endpoint", "base_url", "project_slug", "team"])
def test_a_non_secret_linear_key_never_reads_a_secret_variable(tmp_path, key, name):
    lines = hidden_problems(tmp_path, {"tracker": {"kind": "linear", "project_slug": "abc123", key: f"${name}"}})
    assert lines == [f"tracker.{key}: ${name} {REFUSED}"]


@pytest.mark.parametrize("key", ["endpoint", "email", "project"])
def test_a_non_secret_jira_key_never_reads_a_secret_variable_even_under_provider(tmp_path, key):
    lines = hidden_problems(tmp_path, {"tracker": {"kind": "jira", "provider": {**JIRA, "kind": None, key: "$BATON_TOKEN"}
                                                   } | {"kind": "jira"}})
    assert f"tracker.provider.{key}: $BATON_TOKEN {REFUSED}" in lines


def test_the_agents_hidden_variables_and_the_files_own_secret_are_refused_too(tmp_path):
    lines = hidden_problems(tmp_path, {"tracker": {"kind": "linear", "project_slug": "$AGENT_SECRET"}},
                            hidden=["AGENT_SECRET"])
    assert lines == [f"tracker.project_slug: $AGENT_SECRET {REFUSED}"]
    lines = hidden_problems(tmp_path, {"tracker": {"kind": "linear", "api_key": "$TRACKER_KEY",
                                                   "team": "$TRACKER_KEY"}})
    assert lines == [f"tracker.team: $TRACKER_KEY {REFUSED}"]
    # Not hidden: read as before.
    config = load_workflow(write(tmp_path, {"tracker": {"kind": "linear", "team": "$AGENT_SECRET"}}),
                           project_dir=tmp_path, environ={**HIDDEN_ENV, "AGENT_SECRET": "ENG"}).config
    assert config.source_config().filter.team == "ENG"


@pytest.mark.parametrize("name", ["BATON_TOKEN", "GITHUB_TOKEN"])
def test_a_trackers_secret_is_never_batons_own(tmp_path, name):
    lines = hidden_problems(tmp_path, {"tracker": {"kind": "linear", "project_slug": "abc", "api_key": f"${name}"}})
    assert lines == [f"tracker.api_key: ${name} {REFUSED}"]


@pytest.mark.parametrize("root", ["$BATON_TOKEN", "/tmp/ws/${GITHUB_TOKEN}/x", "~/$AGENT_SECRET"])
def test_workspace_root_never_reads_a_secret_variable(tmp_path, root):
    lines = hidden_problems(tmp_path, {"tracker": LINEAR, "workspace": {"root": root}}, hidden=["AGENT_SECRET"])
    name = root.split("$")[1].strip("{}").split("}")[0].split("/")[0]
    assert lines == [f"workspace.root: ${name} {REFUSED}"]


def test_the_commands_program_never_reads_a_secret_variable(tmp_path):
    lines = hidden_problems(tmp_path, {"tracker": LINEAR, "agent_runtime": {"kind": "codex",
                                                                            "command": "$BATON_TOKEN app-server"}})
    assert lines == [f"agent_runtime.command: $BATON_TOKEN {REFUSED}"]


@pytest.mark.parametrize(("tracker", "expected"), [
    ({"kind": "linear", "project_slug": "$VALUE"}, "tracker.project_slug: the value of $VALUE is not a Linear "
                                                   "project slugId"),
    ({"kind": "linear", "project_slug": "abc", "endpoint": "$VALUE"}, "tracker.endpoint: the value of $VALUE is not "
                                                                     "an http(s) URL"),
    ({**JIRA, "email": "$VALUE"}, "tracker.email: the value of $VALUE is not an email address or $VARIABLE"),
], ids=["project_slug", "endpoint", "email"])
def test_a_problem_names_the_variable_never_its_value(tmp_path, tracker, expected):
    env = {**ENV, "VALUE": "some private words"}
    lines = problems(tmp_path, {"tracker": tracker}, environ=env)
    assert lines == [expected]
