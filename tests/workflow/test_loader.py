"""Reading WORKFLOW.md (SPEC 5.2): front matter and body, and each failure's code and message."""

from __future__ import annotations

import hashlib
import os
from datetime import timezone
from pathlib import Path

import pytest

from backend.workflow.loader import MAX_BYTES, WorkflowError, default_workflow_path, load_workflow

ENV = {"LINEAR_API_KEY": "lin-secret-value"}
FRONT = "---\ntracker:\n  kind: linear\n  project_slug: abc123\n---\n"


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "WORKFLOW.md"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def load(tmp_path: Path, text: str | bytes):
    return load_workflow(write(tmp_path, text), project_dir=tmp_path, environ=ENV)


def error(tmp_path: Path, text: str | bytes) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        load(tmp_path, text)
    return caught.value


def test_default_path(tmp_path):
    assert default_workflow_path(tmp_path) == tmp_path / "WORKFLOW.md"


def test_front_matter_and_trimmed_body(tmp_path):
    text = FRONT + "\n\n  Work on {{ issue.identifier }}.\n\nThanks.  \n\n"
    workflow = load(tmp_path, text)
    assert workflow.template == "Work on {{ issue.identifier }}.\n\nThanks."
    assert workflow.template_line == 8  # the file's line of "Work on"
    assert workflow.path == tmp_path / "WORKFLOW.md"
    assert workflow.digest == hashlib.sha256(text.encode()).hexdigest()
    assert workflow.loaded_at.tzinfo is not None and workflow.loaded_at.utcoffset() == timezone.utc.utcoffset(None)
    assert workflow.config.source_config().filter.project == "abc123"
    st = os.stat(workflow.path)
    assert workflow.stat_key == (st.st_ino, st.st_mtime_ns, st.st_size)


def test_crlf_bom_and_spaces_after_the_dashes(tmp_path):
    text = "\ufeff---  \r\ntracker:\r\n  kind: linear\r\n  team: ENG\r\n--- \r\nBody\r\n"
    workflow = load(tmp_path, text)
    assert (workflow.template, workflow.config.source_config().filter.team) == ("Body", "ENG")


def test_empty_body_and_empty_front_matter_fields(tmp_path):
    assert load(tmp_path, FRONT).template == ""
    assert load(tmp_path, FRONT + "   \n\n").template == ""


def test_no_front_matter_is_an_empty_config_without_a_tracker(tmp_path):
    exc = error(tmp_path, "Just a prompt about {{ issue.title }}\nnot front matter\n")
    assert exc.code == "invalid_config"
    assert exc.message == (f"{tmp_path / 'WORKFLOW.md'}: tracker: required: Baton runs a WORKFLOW.md's issues from its "
                           "tracker (tracker.kind: linear or jira)")


@pytest.mark.parametrize("text", [
    "Just a prompt about {{ issue.title }}\n---\nnot front matter\n",
    "\n---\ntracker: {kind: linear, project_slug: abc}\n---\nbody\n",
    "tracker:\n  kind: linear\n  project_slug: abc\n",
], ids=["a-later-dash-line", "a-blank-line-first", "settings-without-dashes"])
def test_settings_without_a_first_dash_line_say_so(tmp_path, text):
    exc = error(tmp_path, text)
    assert exc.code == "workflow_parse_error"
    assert exc.message == f"{tmp_path / 'WORKFLOW.md'}: no front matter: the file must start with a line `---`"


def test_empty_front_matter_is_an_empty_config(tmp_path):
    assert error(tmp_path, "---\n---\nbody\n").code == "invalid_config"
    assert error(tmp_path, "---\n# nothing\n---\n").message.endswith("tracker: required: Baton runs a WORKFLOW.md's "
                                                                      "issues from its tracker (tracker.kind: linear "
                                                                      "or jira)")


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "WORKFLOW.md"
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path, project_dir=tmp_path, environ=ENV)
    assert (caught.value.code, caught.value.message) == ("missing_workflow_file", f"{path}: no such file")


def test_a_folder_is_not_a_file(tmp_path):
    (tmp_path / "WORKFLOW.md").mkdir()
    with pytest.raises(WorkflowError) as caught:
        load_workflow(tmp_path / "WORKFLOW.md", project_dir=tmp_path, environ=ENV)
    assert caught.value.code == "missing_workflow_file"
    assert caught.value.message.startswith(f"{tmp_path / 'WORKFLOW.md'}: cannot be read: ")


def test_unreadable_file(tmp_path):
    path = write(tmp_path, FRONT)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: mode 0 does not stop reading")
        with pytest.raises(WorkflowError) as caught:
            load_workflow(path, project_dir=tmp_path, environ=ENV)
        assert caught.value.code == "missing_workflow_file"
        assert caught.value.message == f"{path}: cannot be read: Permission denied"
    finally:
        path.chmod(0o644)


def test_not_utf8(tmp_path):
    exc = error(tmp_path, FRONT.encode() + b"caf\xe9\n")
    assert (exc.code, exc.message) == ("workflow_parse_error", f"{tmp_path / 'WORKFLOW.md'}: not UTF-8 text (byte 58)")


def test_too_big(tmp_path):
    exc = error(tmp_path, FRONT + "x" * MAX_BYTES)
    assert exc.code == "workflow_parse_error"
    assert "larger than 1024 KiB" in exc.message


def test_yaml_errors_name_the_files_line(tmp_path):
    exc = error(tmp_path, "---\ntracker:\n  kind: linear\n  team: [ENG\n---\nbody\n")
    assert exc.code == "workflow_parse_error"
    assert exc.message.startswith(f"{tmp_path / 'WORKFLOW.md'}: front matter: line 5 column 1: invalid YAML: ")
    exc = error(tmp_path, "---\ntracker:\n\tkind: linear\n---\n")
    assert exc.message.startswith(f"{tmp_path / 'WORKFLOW.md'}: front matter: line 3 column 1: invalid YAML: ")


def test_unclosed_front_matter(tmp_path):
    exc = error(tmp_path, "---\ntracker:\n  kind: linear\n")
    assert (exc.code, exc.message) == (
        "workflow_parse_error",
        f"{tmp_path / 'WORKFLOW.md'}: front matter: the `---` on line 1 is not closed by another `---` line")


def test_aliases_are_refused(tmp_path):
    bomb = "---\na: &a [x, x, x]\nb: &b [*a, *a, *a]\ntracker: {kind: linear, team: ENG}\n---\n"
    exc = error(tmp_path, bomb)
    assert exc.code == "workflow_parse_error"
    assert "line 3 column 8: invalid YAML: aliases (*name) are not allowed here" in exc.message


def test_deep_nesting_is_a_parse_error(tmp_path):
    exc = error(tmp_path, "---\nx: " + "[" * 5000 + "]" * 5000 + "\n---\n")
    assert exc.code == "workflow_parse_error"


@pytest.mark.parametrize(("front", "kind"), [("- a\n- b\n", "list"), ("just words\n", "str"), ("42\n", "int")])
def test_front_matter_not_a_map(tmp_path, front, kind):
    exc = error(tmp_path, f"---\n{front}---\nbody\n")
    assert (exc.code, exc.message) == ("workflow_front_matter_not_a_map",
                                       f"{tmp_path / 'WORKFLOW.md'}: front matter: must be a mapping of keys to "
                                       f"values, got {kind}")


def test_template_syntax_error_names_the_files_line(tmp_path):
    exc = error(tmp_path, FRONT + "\nfine\n\n{{ issue.title ) }}\n")
    assert exc.code == "template_parse_error"
    assert exc.message == f"{tmp_path / 'WORKFLOW.md'}: template: line 9: unexpected ')'"


def test_unknown_filter_is_a_template_parse_error(tmp_path):
    exc = error(tmp_path, FRONT + "{{ issue.title | shout }}\n")
    assert (exc.code, exc.message) == ("template_parse_error",
                                       f"{tmp_path / 'WORKFLOW.md'}: template: line 6: No filter named 'shout'.")


def test_continuation_prompt_syntax_error(tmp_path):
    text = FRONT.replace("---\n", "---\nagent:\n  continuation_prompt: |\n    ok\n    {{ turn \n", 1) + "body\n"
    exc = error(tmp_path, text)
    assert exc.code == "template_parse_error"
    assert exc.message.startswith(f"{tmp_path / 'WORKFLOW.md'}: agent.continuation_prompt: line 2: ")


def test_config_errors_come_before_the_template(tmp_path):
    exc = error(tmp_path, "---\ntracker: {kind: linear}\n---\n{{ broken\n")
    assert exc.code == "invalid_config"
    assert exc.message == (f"{tmp_path / 'WORKFLOW.md'}: tracker.project_slug: required for Linear (the project's "
                           "slugId), or team (a team key)")


def test_workspace_root_is_relative_to_the_workflow_not_the_project(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = elsewhere / "flow.md"
    path.write_text("---\ntracker: {kind: linear, team: ENG}\nworkspace: {root: ws}\n---\n")
    workflow = load_workflow(path, project_dir=tmp_path / "project", environ=ENV)
    assert workflow.config.workspace.root == elsewhere / "ws"
    default = load_workflow(write(tmp_path, FRONT), project_dir=tmp_path / "project", environ=ENV)
    assert default.config.workspace.root == tmp_path / "project" / "worktrees" / "issues"


def test_a_symlink_is_refused(tmp_path):
    real = tmp_path / "elsewhere.md"
    real.write_text(FRONT + "body\n", encoding="utf-8")
    (tmp_path / "WORKFLOW.md").symlink_to(real)
    with pytest.raises(WorkflowError) as caught:
        load_workflow(tmp_path / "WORKFLOW.md", project_dir=tmp_path, environ=ENV)
    assert caught.value.code == "missing_workflow_file"
    assert caught.value.message == (f"{tmp_path / 'WORKFLOW.md'}: is a symlink; Baton reads the file itself "
                                    "(give the file's own path)")


def _load_in_thread(path: Path, project_dir: Path) -> list:
    """load_workflow(path) in a thread, which must end by a deadline (a FIFO without a writer
    would block an open without O_NONBLOCK forever)."""
    import threading

    out: list = []

    def run() -> None:
        try:
            out.append(load_workflow(path, project_dir=project_dir, environ=ENV))
        except WorkflowError as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)  # a deadline, not a measure: it returns at once when the open does not block
    assert not thread.is_alive(), "reading the workflow blocked"
    return out


def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "WORKFLOW.md"
    os.mkfifo(path)
    [exc] = _load_in_thread(path, tmp_path)
    assert isinstance(exc, WorkflowError) and exc.code == "missing_workflow_file"
    assert exc.message == f"{path}: is not a regular file"


def test_a_device_is_refused(tmp_path):
    [exc] = _load_in_thread(Path("/dev/zero"), tmp_path)
    assert isinstance(exc, WorkflowError) and exc.message == "/dev/zero: is not a regular file"


@pytest.mark.parametrize("scalar, problem", [
    ("2020-13-45", "month must be in 1..12"),
    ("1" * 5000, "Exceeds the limit"),
], ids=["bad-date", "5000-digits"])
def test_a_scalar_yaml_cannot_build_is_a_parse_error_with_its_line(tmp_path, scalar, problem):
    exc = error(tmp_path, FRONT.removesuffix("---\n") + f"unused: {scalar}\n---\nbody\n")
    assert exc.code == "workflow_parse_error"
    assert exc.message.startswith(f"{tmp_path / 'WORKFLOW.md'}: front matter: line 5 column 9: invalid YAML: "
                                  "this value cannot be read (")
    assert problem in exc.message and "\n" not in exc.message


def test_a_nested_scalar_yaml_cannot_build_is_a_parse_error(tmp_path):
    exc = error(tmp_path, FRONT.removesuffix("---\n") + "agent:\n  dates: [1, {when: 2020-02-30}]\n---\n")
    assert exc.code == "workflow_parse_error"
    assert "line 6 column" in exc.message and "day is out of range for month" in exc.message
