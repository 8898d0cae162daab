"""The fake CLI of each runtime, for the contract tests every runtime must pass.

Every fake follows the same `FAKE: {...}` scenario line in the prompt (tests/fakes/steps.py and
tests/fakes/fake_claude.py's docstring) and speaks its own CLI's protocol exactly. Registering
a runtime here runs it through tests/runtimes/test_runtime_contract.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from backend.config import AgentConfig

FAKES_DIR = Path(__file__).parent.parent / "fakes"


@dataclass(frozen=True)
class FakeKind:
    script: str  # in tests/fakes/
    section: dict[str, Any] = field(default_factory=dict)  # agent.yaml section keys the fake needs


# runtime name -> its fake. Add a runtime's fake here once it speaks the protocol exactly.
FAKES: dict[str, FakeKind] = {
    "claude_code": FakeKind("fake_claude.py"),
    "codex": FakeKind("fake_codex.py"),
    # Sessions in the task's own state folder, so feedback turns find them there (-s). A model:
    # OpenCode's JSON lines never name it, so the task's model is the one Baton asked for.
    "opencode": FakeKind("fake_opencode.py", {"isolated_state": True, "model": "fake/m1"}),
}


@dataclass
class RuntimeFake:
    runtime: str
    command: str
    log: Path
    state: Path
    kind: FakeKind

    def config(self, limits: dict | None = None, section: dict | None = None, **overrides) -> AgentConfig:
        """An AgentConfig whose default runtime is this fake; `limits`/`section` go to its section."""
        values = {"command": self.command, "timeout": 60, "stall_timeout": 30, **self.kind.section,
                  **(section or {}), **(limits or {})}
        base = {"test_command": "", "poll_interval_seconds": 0.5, "max_parallel_workers": 2, **overrides}
        return AgentConfig.model_validate({"runtime": self.runtime, self.runtime: values, **base})

    def entries(self) -> list[dict]:
        """Every line the fake logged: invocations, and e.g. protocol messages (fake_codex)."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def calls(self) -> list[dict]:
        """Every invocation the fake logged."""
        return [e for e in self.entries() if "argv" in e]


def make_fake(runtime: str, tmp_path: Path, monkeypatch) -> RuntimeFake:
    kind = FAKES[runtime]
    wrapper = tmp_path / "bin" / f"fake-{runtime}"
    wrapper.parent.mkdir(exist_ok=True)
    # A Python script, not a shell wrapper: a shell resets an inherited $PWD to its working
    # folder, which would hide a runtime that passes the wrong one (OpenCode's tools follow $PWD).
    script = FAKES_DIR / kind.script
    wrapper.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {str(script)!r}\n"
                       f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    wrapper.chmod(0o755)
    log, state = tmp_path / f"fake-{runtime}-calls.jsonl", tmp_path / f"fake-{runtime}-state"
    for name in ("FAKE_CLI_LOG", "FAKE_CLAUDE_LOG"):
        monkeypatch.setenv(name, str(log))
    for name in ("FAKE_CLI_STATE", "FAKE_CLAUDE_STATE"):
        monkeypatch.setenv(name, str(state))
    return RuntimeFake(runtime=runtime, command=str(wrapper), log=log, state=state, kind=kind)


@pytest.fixture(params=sorted(FAKES))
def runtime_fake(request, tmp_path, monkeypatch) -> RuntimeFake:
    """Each registered runtime's fake CLI in turn (import this fixture into a test module)."""
    return make_fake(request.param, tmp_path, monkeypatch)
