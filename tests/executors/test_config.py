"""agent.yaml `executor:` and `dask:` through the real loader (backend.config.load_agent_config):
each problem is one line naming the file, the key and what is wrong; a good section loads; and
`baton-agent` with a bad one exits 2 with that line, writing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import ConfigError, load_agent_config
from backend.executors import EXECUTORS
from support import free_port, run_agent

LOOPBACK = "  scheduler: tcp://127.0.0.1:8786\n"


def load(tmp_path: Path, text: str):
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return load_agent_config(path)


BAD = [
    # executor: dask says where the scheduler is, or nothing can run.
    ("executor: dask\n", "executor", "needs a dask: section"),
    ("executor: dask\ndask:\n", "executor", "needs a dask: section"),  # `dask:` with nothing under it
    ("executor: ray\n", "executor", "Input should be 'local' or 'dask'"),
    # Dask has no tokens: plain tcp:// only on loopback, TLS anywhere else, with its files.
    ("executor: dask\ndask:\n  scheduler: tcp://10.0.0.5:8786\n", "dask.scheduler", "plain tcp:// off loopback"),
    ("executor: dask\ndask:\n  scheduler: tcp://0.0.0.0:8786\n", "dask.scheduler", "plain tcp:// off loopback"),
    ("executor: dask\ndask:\n  scheduler: tcp://localhost.evil.example:8786\n", "dask.scheduler",
     "plain tcp:// off loopback"),
    ("executor: dask\ndask:\n  scheduler: tls://box.example:8786\n", "dask.tls",
     "dask.tls must name ca_file, cert_file and key_file"),
    ("executor: dask\ndask:\n  scheduler: tls://box.example:8786\n  tls: {ca_file: ca.pem, cert_file: c.pem}\n",
     "dask.tls.key_file", "Field required"),
    ("executor: dask\ndask:\n  scheduler: http://127.0.0.1:8786\n", "dask.scheduler",
     "must be tcp://HOST:PORT or tls://HOST:PORT"),
    ("executor: dask\ndask:\n  scheduler: tcp://127.0.0.1\n", "dask.scheduler", "must name the scheduler's port"),
    # Resources: names a worker can offer, amounts a run can hold.
    ("executor: dask\ndask:\n" + LOOPBACK + "  resources: {'bad name': 1}\n", "dask.resources",
     "'bad name' is not a resource name"),
    ("executor: dask\ndask:\n" + LOOPBACK + "  resources: {'../box': 1}\n", "dask.resources",
     "is not a resource name"),
    ("executor: dask\ndask:\n" + LOOPBACK + "  resources: {runner: 0}\n", "dask.resources",
     "runner: must be a positive number (got 0)"),
    ("executor: dask\ndask:\n" + LOOPBACK + "  resources: {runner: -2}\n", "dask.resources",
     "runner: must be a positive number"),
    ("executor: dask\ndask:\n" + LOOPBACK + "  resources: {runner: true}\n", "dask.resources",
     "runner: must be a positive number"),
    ("executor: dask\ndask:\n" + LOOPBACK + "  resources: {}\n", "dask.resources",
     "must name at least one resource"),
    # forward_env: names of variables, never a secret no agent may see.
    ("executor: dask\ndask:\n" + LOOPBACK + "  forward_env: [GITHUB_TOKEN]\n", "dask.forward_env",
     "GITHUB_TOKEN is a secret no agent may see"),
    ("executor: dask\ndask:\n" + LOOPBACK + "  forward_env: [BATON_TOKEN]\n", "dask.forward_env",
     "BATON_TOKEN is a secret"),
    ("secret_env_vars: [MY_VAULT]\nexecutor: dask\ndask:\n" + LOOPBACK + "  forward_env: [MY_VAULT]\n",
     "dask.forward_env", "MY_VAULT is a secret"),
    ("github: {token_env: GH_PAT}\nexecutor: dask\ndask:\n" + LOOPBACK + "  forward_env: [GH_PAT]\n",
     "dask.forward_env", "GH_PAT is a secret"),
    ("executor: dask\ndask:\n" + LOOPBACK + "  forward_env: ['KEY=value']\n", "dask.forward_env",
     "'KEY=value' is not the name of an environment variable"),
    # The rest of the section.
    ("executor: dask\ndask:\n" + LOOPBACK + "  max_attempts: 0\n", "dask.max_attempts", "greater than 0"),
    ("executor: dask\ndask:\n" + LOOPBACK + "  connect_timeout: 0\n", "dask.connect_timeout", "greater than 0"),
    ("executor: dask\ndask:\n" + LOOPBACK + "  workers: 3\n", "dask.workers", "unknown key"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD, ids=[f"{n}-{key}" for n, (_, key, _) in enumerate(BAD)])
def test_a_bad_executor_section_names_file_key_and_problem(tmp_path, text, key, problem):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    lines = str(info.value).splitlines()
    assert len(lines) == 1, lines  # one problem, one line
    (line,) = lines
    assert line.startswith(f"{tmp_path / 'agent.yaml'}: "), line
    # The key: in the key position, or (a rule over several keys) written out in the problem.
    assert f": {key}" in line or f" {key}" in line, line
    assert problem in line, line


def test_a_forwarded_secret_name_is_refused_without_its_value(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_value_that_must_not_show")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "executor: dask\ndask:\n" + LOOPBACK + "  forward_env: [ANTHROPIC_API_KEY, GITHUB_TOKEN]\n")
    assert "GITHUB_TOKEN" in str(info.value) and "ghp_value_that_must_not_show" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "scheduler", "resources", "forward"),
    [
        ("executor: dask\ndask:\n" + LOOPBACK, "tcp://127.0.0.1:8786", {"runner": 1.0}, []),
        ("executor: dask\ndask:\n  scheduler: tcp://localhost:8786\n  resources: {runner: 2, box-a: 1}\n"
         "  forward_env: [ANTHROPIC_API_KEY]\n  max_attempts: 2\n  connect_timeout: 5\n",
         "tcp://localhost:8786", {"runner": 2.0, "box-a": 1.0}, ["ANTHROPIC_API_KEY"]),
        ("executor: dask\ndask:\n  scheduler: tcp://[::1]:8786\n", "tcp://[::1]:8786", {"runner": 1.0}, []),
        ("executor: dask\ndask:\n  scheduler: tls://sched.internal:8786\n"
         "  tls: {ca_file: /etc/baton/ca.pem, cert_file: /etc/baton/host.pem, key_file: /etc/baton/host.key}\n",
         "tls://sched.internal:8786", {"runner": 1.0}, []),
    ],
    ids=["minimal", "full", "ipv6-loopback", "tls"],
)
def test_a_good_dask_section_loads(tmp_path, text, scheduler, resources, forward):
    config = load(tmp_path, text)
    assert config.executor == "dask" and config.executor in EXECUTORS
    assert config.dask is not None
    assert (config.dask.scheduler, config.dask.resources, config.dask.forward_env) == (scheduler, resources, forward)


def test_local_stays_the_default(tmp_path):
    assert load(tmp_path, "max_parallel_workers: 2\n").executor == "local"
    assert load(tmp_path, "max_parallel_workers: 2\n").dask is None


def test_baton_agent_with_a_bad_dask_section_exits_2_naming_it(repo):
    (repo / "agent.yaml").write_text("executor: dask\ndask:\n  scheduler: tcp://10.0.0.5:8786\n")
    result = run_agent(["--port", str(free_port()), "--project-dir", str(repo)], repo)
    assert result.returncode == 2, result.stderr
    line = f"baton-agent: {repo / 'agent.yaml'}: dask.scheduler: tcp://10.0.0.5:8786 is plain tcp:// off loopback"
    assert line in result.stderr
    assert "Traceback" not in result.stderr
    assert not (repo / "data").exists() and not (repo / "tasks").exists()  # refused before writing anything
