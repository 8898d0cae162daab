"""WORKFLOW.md followed live: a good edit applies, an invalid one (or a deleted file) keeps the
last good workflow and says so, a fix clears it. Modification times are set explicitly."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from backend.workflow.live import LiveWorkflow
from backend.workflow.loader import WorkflowError, load_workflow

ENV = {"LINEAR_API_KEY": "lin-secret-value"}


def good(slug: str = "abc123", body: str = "Work on {{ issue.identifier }}") -> str:
    return f"---\ntracker:\n  kind: linear\n  project_slug: {slug}\n---\n{body}\n"


class File:
    """The workflow file, each write given its own modification time (no waiting for the clock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tick = 1_700_000_000_000_000_000

    def write(self, text: str) -> None:
        self.path.write_text(text, encoding="utf-8")
        self.tick += 1_000_000_000
        os.utime(self.path, ns=(self.tick, self.tick))


@pytest.fixture
def file(tmp_path) -> File:
    f = File(tmp_path / "WORKFLOW.md")
    f.write(good())
    return f


def live(file: File, **kwargs) -> LiveWorkflow:
    return LiveWorkflow(file.path, project_dir=file.path.parent, environ=ENV, **kwargs)


def slug(lw: LiveWorkflow) -> str:
    return lw.current.config.source_config().filter.project


def test_unchanged_file_is_not_reloaded(file):
    lw = live(file)
    assert slug(lw) == "abc123"
    assert lw.check() is False
    status = lw.status()
    assert status == {"path": str(file.path), "state": "ok", "error": None,
                      "loaded_at": lw.current.loaded_at.isoformat(timespec="seconds"), "digest": lw.current.digest}


def test_good_edit_applies_and_is_heard(file):
    lw = live(file)
    heard = []
    lw.listen(heard.append)
    before = lw.current
    file.write(good("def456", "New prompt"))
    assert lw.check() is True
    assert slug(lw) == "def456" and lw.current.template == "New prompt"
    assert heard == [lw.current]
    assert lw.current.digest != before.digest
    assert lw.status()["digest"] == lw.current.digest and lw.status()["state"] == "ok"
    assert lw.check() is False and len(heard) == 1


def test_invalid_edit_keeps_the_last_good_one_until_fixed(file, caplog):
    lw = live(file)
    heard = []
    lw.listen(heard.append)
    last_good = lw.current
    caplog.set_level(logging.WARNING, logger="baton.workflow")
    file.write(good().replace("project_slug: abc123", "project_slug: abc123\n  colour: blue"))
    assert lw.check() is False
    assert lw.current is last_good and heard == []
    status = lw.status()
    assert status["state"] == "invalid"
    assert status["error"]["code"] == "invalid_config"
    assert status["error"]["message"] == f"{file.path}: tracker.colour: unknown key"
    assert status["error"]["at"].endswith("+00:00")
    assert lw.error == status["error"]
    assert status["digest"] == last_good.digest  # still running the last good one
    # The same problem again (touched, rewritten): read again, logged once.
    file.write(good().replace("project_slug: abc123", "project_slug: abc123\n  colour: blue"))
    assert lw.check() is False and lw.check() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tracker.colour: unknown key" in warnings[0].getMessage()
    # Another problem: it replaces the first one, and is logged.
    file.write("---\ntracker: [\n---\n")
    assert lw.check() is False
    assert lw.status()["error"]["code"] == "workflow_parse_error"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    # Fixed with new content: applied, the error cleared.
    file.write(good("fixed1"))
    assert lw.check() is True
    assert slug(lw) == "fixed1" and lw.status()["state"] == "ok" and lw.error is None and len(heard) == 1


def test_fixing_back_to_the_running_version_clears_the_error(file):
    lw = live(file)
    heard = []
    lw.listen(heard.append)
    file.write("---\n- not a map\n---\n")
    assert lw.check() is False and lw.status()["error"]["code"] == "workflow_front_matter_not_a_map"
    file.write(good())  # exactly what is running
    assert lw.check() is False  # nothing new to apply
    assert lw.status()["state"] == "ok" and heard == []


def test_deleted_file_keeps_the_last_good_one(file, caplog):
    lw = live(file)
    last_good = lw.current
    caplog.set_level(logging.WARNING, logger="baton.workflow")
    file.path.unlink()
    assert lw.check() is False and lw.check() is False
    assert lw.current is last_good
    error = lw.status()["error"]
    assert (lw.status()["state"], error["code"], error["message"]) == ("invalid", "missing_workflow_file",
                                                                         f"{file.path}: no such file")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    file.write(good("back01"))
    assert lw.check() is True and slug(lw) == "back01" and lw.status()["state"] == "ok"


def test_template_error_in_an_edit_is_invalid(file):
    lw = live(file)
    file.write(good(body="{{ issue.identifier | nosuchfilter }}"))
    assert lw.check() is False
    assert lw.status()["error"]["code"] == "template_parse_error"
    assert lw.current.template == "Work on {{ issue.identifier }}"


def test_first_workflow_is_used_and_a_later_change_is_read(file):
    first = load_workflow(file.path, project_dir=file.path.parent, environ=ENV)
    lw = live(file, first=first)
    assert lw.current is first and lw.check() is False
    file.write(good("later1"))
    assert lw.check() is True and slug(lw) == "later1"


def test_an_invalid_file_at_start_raises(file):
    file.write("---\ntracker: {kind: linear}\n---\n")
    with pytest.raises(WorkflowError) as caught:
        live(file)
    assert caught.value.code == "invalid_config"
    file.path.unlink()
    with pytest.raises(WorkflowError) as caught:
        live(file)
    assert caught.value.code == "missing_workflow_file"


def test_a_failing_listener_does_not_stop_the_others(file):
    lw = live(file)
    heard = []

    def broken(_workflow):
        raise RuntimeError("listener bug")

    lw.listen(broken)
    lw.listen(heard.append)
    file.write(good("next01"))
    assert lw.check() is True
    assert heard == [lw.current]


def test_environment_is_the_one_given(file):
    file.write(good("$SLUG"))
    lw = LiveWorkflow(file.path, project_dir=file.path.parent, environ={**ENV, "SLUG": "fromenv"})
    assert slug(lw) == "fromenv"
    file.write(good("$OTHER"))
    assert lw.check() is False
    assert lw.status()["error"]["message"] == (f"{file.path}: tracker.project_slug: $OTHER is not set (or is empty) in "
                                               "baton-agent's environment")


def test_putting_the_running_version_back_says_it_is_valid_again(file, caplog):
    lw = live(file)
    file.write("---\ntracker: [\n---\n")
    lw.check()
    assert lw.status()["state"] == "invalid"
    with caplog.at_level(logging.INFO, logger="baton.workflow"):
        file.write(good())  # exactly the last good content
        assert lw.check() is False  # nothing new to apply
    assert lw.status()["state"] == "ok" and lw.error is None
    assert any("WORKFLOW.md is valid again" in r.getMessage() for r in caplog.records)


def test_a_scalar_yaml_cannot_build_is_an_invalid_edit_without_a_traceback(file, caplog):
    lw = live(file)
    with caplog.at_level(logging.INFO, logger="baton.workflow"):
        file.write(good().replace("project_slug: abc123", "project_slug: abc123\nwhen: 2020-13-45"))
        assert lw.check() is False
    assert lw.status()["error"]["code"] == "workflow_parse_error"
    assert "month must be in 1..12" in lw.status()["error"]["message"]
    assert not any(r.exc_info for r in caplog.records)
    assert slug(lw) == "abc123"


def test_accept_can_refuse_a_good_edit(file):
    seen = []

    def accept(old, new):
        seen.append((slug_of(old), slug_of(new)))
        return None if slug_of(new) == "ok1" else "tracker.project_slug: changing it needs a restart of baton-agent"

    lw = live(file, accept=accept)
    file.write(good("other"))
    assert lw.check() is False
    assert slug(lw) == "abc123"
    status = lw.status()
    assert status["state"] == "invalid"
    assert (status["error"]["code"], status["error"]["message"]) == \
        ("restart_required", "tracker.project_slug: changing it needs a restart of baton-agent")
    assert lw.check() is False and len(seen) == 1  # read once: the same file is not asked about again
    file.write(good("ok1"))
    assert lw.check() is True
    assert slug(lw) == "ok1" and lw.status()["state"] == "ok"
    assert seen == [("abc123", "other"), ("abc123", "ok1")]


def test_accept_is_a_settable_attribute_and_a_failing_one_refuses(file):
    lw = live(file)
    assert lw.accept is None

    def broken(old, new):
        raise RuntimeError("boom")

    lw.accept = broken
    file.write(good("other"))
    assert lw.check() is False
    assert lw.status()["error"]["code"] == "restart_required"
    assert slug(lw) == "abc123"


def test_hidden_variables_stay_hidden_on_reload(file):
    env = {**ENV, "AGENT_SECRET": "agent-secret-value"}
    lw = LiveWorkflow(file.path, project_dir=file.path.parent, environ=env, hidden=["AGENT_SECRET"])
    file.write(good("$AGENT_SECRET"))
    assert lw.check() is False
    message = lw.status()["error"]["message"]
    assert message.endswith("tracker.project_slug: $AGENT_SECRET is one of Baton's secret variables and cannot be "
                            "used here")
    assert "agent-secret-value" not in message


def test_a_symlinked_file_is_an_invalid_edit(file, tmp_path):
    lw = live(file)
    other = tmp_path / "other.md"
    other.write_text(good("linked"), encoding="utf-8")
    file.path.unlink()
    file.path.symlink_to(other)
    assert lw.check() is False
    assert "is a symlink; Baton reads the file itself" in lw.status()["error"]["message"]
    assert slug(lw) == "abc123"


def slug_of(workflow) -> str:
    return workflow.config.source_config().filter.project
