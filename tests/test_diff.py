"""backend/diff.py against real repositories: file list, hunks by their counts, renames, binary
files, the limits, paths and content that look like patch syntax, and the task's range."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend import diff
from backend.diff import NoDiff, diff_files, task_diff
from backend.models import Task, TaskStatus, utcnow
from support import git, make_local_repo


def commit_all(repo: Path, message: str = "change") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def by_path(files: list[dict]) -> dict[str, dict]:
    return {f["path"]: f for f in files}


def lines_of(entry: dict) -> list[tuple]:
    return [(l["kind"], l["old"], l["new"], l["text"]) for h in entry["hunks"] for l in h["lines"]]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_local_repo(tmp_path, "repo")


def test_added_modified_deleted_renamed_with_line_numbers(repo: Path) -> None:
    (repo / "keep.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    (repo / "gone.txt").write_text("bye\n")
    (repo / "old name.txt").write_text("".join(f"moved {i}\n" for i in range(1, 21)))
    base = commit_all(repo)
    (repo / "keep.txt").write_text("".join(f"line {i}\n" if i != 5 else "line five\n" for i in range(1, 11)))
    (repo / "gone.txt").unlink()
    (repo / "new.txt").write_text("a\nb\n")
    git(repo, "mv", "old name.txt", "new name.txt")
    with open(repo / "new name.txt", "a") as f:
        f.write("moved 21\n")
    files, truncated = diff_files(repo, base, commit_all(repo), context=1)
    assert not truncated
    got = by_path(files)
    assert set(got) == {"keep.txt", "gone.txt", "new.txt", "new name.txt"}
    keep = got["keep.txt"]
    assert (keep["status"], keep["additions"], keep["deletions"], keep["old_path"]) == ("modified", 1, 1, None)
    assert keep["hunks"][0]["header"] == "@@ -4,3 +4,3 @@ line 3"  # git's section heading
    assert lines_of(keep) == [("context", 4, 4, "line 4"), ("del", 5, None, "line 5"),
                              ("add", None, 5, "line five"), ("context", 6, 6, "line 6")]
    assert got["gone.txt"]["status"] == "deleted" and lines_of(got["gone.txt"]) == [("del", 1, None, "bye")]
    assert got["new.txt"]["status"] == "added" and lines_of(got["new.txt"]) == [("add", None, 1, "a"), ("add", None, 2, "b")]
    renamed = got["new name.txt"]
    assert (renamed["status"], renamed["old_path"], renamed["additions"], renamed["deletions"]) == \
        ("renamed", "old name.txt", 1, 0)
    assert lines_of(renamed) == [("context", 20, 20, "moved 20"), ("add", None, 21, "moved 21")]


def test_context_lines_follow_the_parameter(repo: Path) -> None:
    (repo / "f.txt").write_text("".join(f"{i}\n" for i in range(1, 31)))
    base = commit_all(repo)
    (repo / "f.txt").write_text("".join(f"{i}\n" if i != 15 else "fifteen\n" for i in range(1, 31)))
    new = commit_all(repo)
    none = by_path(diff_files(repo, base, new, context=0)[0])["f.txt"]
    assert lines_of(none) == [("del", 15, None, "15"), ("add", None, 15, "fifteen")]
    assert none["hunks"][0]["header"] == "@@ -15 +15 @@"
    five = by_path(diff_files(repo, base, new, context=5)[0])["f.txt"]
    assert [l[0] for l in lines_of(five)] == ["context"] * 5 + ["del", "add"] + ["context"] * 5
    assert five["hunks"][0]["old_start"] == 10 and five["hunks"][0]["old_lines"] == 11


def test_binary_files_have_no_hunks(repo: Path) -> None:
    (repo / "image.bin").write_bytes(b"\x89PNG\x00\x01\x02")
    base = commit_all(repo)
    (repo / "image.bin").write_bytes(b"\x89PNG\x00\x03\x04\x05")
    (repo / "text.txt").write_text("still text\n")
    got = by_path(diff_files(repo, base, commit_all(repo))[0])
    assert got["image.bin"]["binary"] is True
    assert got["image.bin"]["hunks"] == [] and got["image.bin"]["too_large"] is False
    assert (got["image.bin"]["additions"], got["image.bin"]["deletions"]) == (0, 0)
    assert lines_of(got["text.txt"]) == [("add", None, 1, "still text")]


def test_a_file_over_the_per_file_limit_keeps_its_stats_but_not_its_hunks(repo: Path) -> None:
    base = head(repo)
    rows = diff.MAX_FILE_BYTES // 50 + 10
    (repo / "big.txt").write_text("".join(f"{i:049d}\n" for i in range(rows)))
    (repo / "small.txt").write_text("after the big one\n")
    got = by_path(diff_files(repo, base, commit_all(repo))[0])
    assert got["big.txt"]["too_large"] is True and got["big.txt"]["hunks"] == []
    assert got["big.txt"]["additions"] == rows
    # One huge file does not spend the others' budget.
    assert got["small.txt"]["too_large"] is False and lines_of(got["small.txt"]) == [("add", None, 1, "after the big one")]


def test_files_after_the_total_budget_are_too_large(repo: Path) -> None:
    base = head(repo)
    per_file = 2400  # lines of 100 bytes: ~242 KB of patch each, under the per-file limit
    count = diff.MAX_TOTAL_BYTES // (per_file * 101) + 1  # one file more than the budget holds
    for n in range(count):
        (repo / f"f{n:02d}.txt").write_text("".join(f"{n:02d}{i:097d}\n" for i in range(per_file)))
    (repo / "z.txt").write_text("last\n")
    files, truncated = diff_files(repo, base, commit_all(repo))
    assert not truncated
    shown = [f for f in files if not f["too_large"]]
    assert [f["path"] for f in shown] == [f"f{n:02d}.txt" for n in range(count - 1)]
    assert all(len(lines_of(f)) == per_file for f in shown)
    assert [f["path"] for f in files if f["too_large"]] == [f"f{count - 1:02d}.txt", "z.txt"]
    assert all(f["hunks"] == [] and f["additions"] > 0 for f in files if f["too_large"])


def test_reading_stops_at_the_read_cap_and_the_rest_is_too_large(repo: Path, monkeypatch) -> None:
    # Huge files skipped one by one still cost reading time: past MAX_READ_BYTES git is stopped.
    monkeypatch.setattr(diff, "MAX_READ_BYTES", 30_000)
    base = head(repo)
    for name in ("a.txt", "b.txt", "c.txt"):
        (repo / name).write_text("".join(f"{name} {i:050d}\n" for i in range(300)))  # ~18 KB of patch each
    files, truncated = diff_files(repo, base, commit_all(repo))
    got = by_path(files)
    assert not truncated and len(lines_of(got["a.txt"])) == 300 and not got["a.txt"]["too_large"]
    assert got["b.txt"]["too_large"] and got["b.txt"]["hunks"] == []  # cut off in the middle
    assert got["c.txt"]["too_large"] and got["c.txt"]["additions"] == 300


def test_more_files_than_the_limit_are_listed_without_hunks(repo: Path) -> None:
    base = head(repo)
    count = diff.MAX_FILES + 5
    for n in range(count):
        (repo / f"f{n:04d}.txt").write_text(f"file {n}\n")
    files, truncated = diff_files(repo, base, commit_all(repo))
    assert truncated is True
    assert [f["path"] for f in files] == [f"f{n:04d}.txt" for n in range(count)]
    assert all(lines_of(f) == [("add", None, 1, f"file {n}")] for n, f in enumerate(files[:diff.MAX_FILES]))
    rest = files[diff.MAX_FILES:]
    assert all(f["hunks"] == [] and f["too_large"] and f["additions"] == 1 for f in rest)


def test_long_lines_are_clipped(repo: Path) -> None:
    base = head(repo)
    (repo / "min.js").write_text("x" * 50_000 + "\nshort\n" + "é" * 3000 + "\n")
    entry = by_path(diff_files(repo, base, commit_all(repo))[0])["min.js"]
    texts = [l[3] for l in lines_of(entry)]
    assert texts == ["x" * diff.MAX_LINE_CHARS + "…", "short", "é" * diff.MAX_LINE_CHARS + "…"]


WEIRD = ["with space.txt", "ünïcödé ✓.txt", "new\nline.txt", "tab\there.txt", ":colon", "-dash",
         'quote"and\\backslash', "dir with space/inner file.md"]


def test_weird_paths_come_out_right(repo: Path) -> None:
    base = head(repo)
    for name in WEIRD:
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text(f"content of {name!r}\n")
    files, _ = diff_files(repo, base, commit_all(repo))
    got = by_path(files)
    assert set(got) == set(WEIRD)
    for name in WEIRD:
        assert lines_of(got[name]) == [("add", None, 1, f"content of {name!r}")], name
    # And renamed: both names come back.
    git(repo, "mv", "new\nline.txt", "ünï\nrenamed.txt")
    after = by_path(diff_files(repo, head(repo), commit_all(repo))[0])
    assert after["ünï\nrenamed.txt"]["old_path"] == "new\nline.txt"
    assert after["ünï\nrenamed.txt"]["status"] == "renamed"


def test_non_utf8_paths_and_content_are_decoded_with_replacement(repo: Path) -> None:
    base = head(repo)
    name = b"latin1-\xe9.txt"
    with open(os.path.join(os.fsencode(repo), name), "wb") as f:
        f.write(b"caf\xe9\n")
    entry = diff_files(repo, base, commit_all(repo))[0][0]
    assert entry["path"] == "latin1-\ufffd.txt"
    assert lines_of(entry) == [("add", None, 1, "caf\ufffd")]


HEADER_LIKE = [
    "diff --git a/x b/x", "@@ -1 +1 @@", "--- a/x", "+++ b/x", "-- a/looks-like-old-file",
    "++ b/looks-like-new-file", "index 0000000..1111111 100644", "Binary files a/x and b/x differ",
    "\\ No newline at end of file", "", "new file mode 100644", "form\x0cfeed", "line\u2028separator",
    "carriage\rreturn",
]


def test_content_that_looks_like_patch_syntax_stays_content(repo: Path) -> None:
    (repo / "a.txt").write_text("".join(f"{text}\n" for text in HEADER_LIKE))
    (repo / "b.txt").write_text("first\n")
    base = commit_all(repo)
    # Delete every line of a.txt and add them back reversed: each appears as "-<line>" and "+<line>".
    (repo / "a.txt").write_text("".join(f"{text}\n" for text in reversed(HEADER_LIKE)))
    (repo / "b.txt").write_text("second\n")
    got = by_path(diff_files(repo, base, commit_all(repo), context=20)[0])  # context: every line shown
    assert set(got) == {"a.txt", "b.txt"}
    entry = got["a.txt"]
    texts = {kind: [l[3] for l in lines_of(entry) if l[0] == kind] for kind in ("del", "add", "context")}
    assert sorted(texts["del"] + texts["context"]) == sorted(HEADER_LIKE)
    assert sorted(texts["add"] + texts["context"]) == sorted(HEADER_LIKE)
    assert entry["additions"] == len(texts["add"]) and entry["deletions"] == len(texts["del"])
    assert lines_of(got["b.txt"]) == [("del", 1, None, "first"), ("add", None, 1, "second")]


def test_a_file_whose_content_is_a_whole_patch(repo: Path) -> None:
    base = head(repo)
    patch = git(repo, "show", "--format=", "HEAD")  # README.md's own patch, as content
    (repo / "fixture.patch").write_text(patch)
    (repo / "zz.txt").write_text("after\n")
    got = by_path(diff_files(repo, base, commit_all(repo))[0])
    assert set(got) == {"fixture.patch", "zz.txt"}
    assert [l[3] for l in lines_of(got["fixture.patch"])] == patch.splitlines()
    assert lines_of(got["zz.txt"]) == [("add", None, 1, "after")]


def test_missing_newline_at_end_and_type_change(repo: Path) -> None:
    (repo / "f.txt").write_text("one\ntwo")
    (repo / "link").write_text("was a file\n")
    base = commit_all(repo)
    (repo / "f.txt").write_text("one\nTWO")
    (repo / "link").unlink()
    os.symlink("f.txt", repo / "link")
    got = by_path(diff_files(repo, base, commit_all(repo))[0])
    assert lines_of(got["f.txt"]) == [("context", 1, 1, "one"), ("del", 2, None, "two"), ("add", None, 2, "TWO")]
    link = got["link"]
    assert link["status"] == "type_changed"
    assert lines_of(link) == [("del", 1, None, "was a file"), ("add", None, 1, "f.txt")]


def test_mode_change_and_empty_file_have_no_hunks(repo: Path) -> None:
    (repo / "run.sh").write_text("echo hi\n")
    base = commit_all(repo)
    (repo / "run.sh").chmod(0o755)
    (repo / "empty").write_text("")
    (repo / "last.txt").write_text("x\n")
    got = by_path(diff_files(repo, base, commit_all(repo))[0])
    assert got["run.sh"]["status"] == "modified" and got["run.sh"]["hunks"] == []
    assert got["empty"]["status"] == "added" and got["empty"]["hunks"] == []
    assert not got["run.sh"]["too_large"] and not got["empty"]["too_large"]
    assert lines_of(got["last.txt"]) == [("add", None, 1, "x")]


# The range a task's diff covers.

def make_task(**fields) -> Task:
    now = utcnow()
    return Task(id=fields.pop("id", "t1"), title="t", created_at=now, updated_at=now, **fields)


def test_branch_range_starts_where_the_branch_left_the_base(repo: Path) -> None:
    left_at = head(repo)
    git(repo, "checkout", "-q", "-b", "task/t1")
    (repo / "work.txt").write_text("the task's work\n")
    work = commit_all(repo)
    git(repo, "checkout", "-q", "main")
    (repo / "README.md").write_text("main moved on\n")
    commit_all(repo)
    answer = task_diff(repo, "refs/heads/main", make_task(status=TaskStatus.failed))
    assert (answer["base"], answer["head"], answer["range"]) == (left_at, work, "branch")
    assert [f["path"] for f in answer["files"]] == ["work.txt"]  # not main's own change
    assert answer["stats"] == {"files": 1, "additions": 1, "deletions": 0}
    assert answer["truncated"] is False and answer["task_id"] == "t1"
    assert answer["limits"] == {"max_files": diff.MAX_FILES, "max_file_bytes": diff.MAX_FILE_BYTES,
                                "max_total_bytes": diff.MAX_TOTAL_BYTES}


def test_review_and_landed_ranges_use_the_recorded_commits(repo: Path) -> None:
    first = head(repo)
    (repo / "a.txt").write_text("a\n")
    second = commit_all(repo)
    (repo / "b.txt").write_text("b\n")
    third = commit_all(repo)
    review = task_diff(repo, "refs/heads/main",
                       make_task(status=TaskStatus.review, review_base=first, review_sha=second))
    assert (review["range"], review["base"], review["head"]) == ("review", first, second)
    assert [f["path"] for f in review["files"]] == ["a.txt"]
    landed = task_diff(repo, "refs/heads/main",
                       make_task(status=TaskStatus.completed, base_sha=second, commit_sha=third))
    assert (landed["range"], [f["path"] for f in landed["files"]]) == ("landed", ["b.txt"])


def test_no_diff_without_a_branch_or_with_missing_commits(repo: Path) -> None:
    with pytest.raises(NoDiff, match="no branch task/t1"):
        task_diff(repo, "refs/heads/main", make_task(status=TaskStatus.completed))
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(NoDiff, match="no longer in the repository"):
        task_diff(repo, "refs/heads/main",
                  make_task(status=TaskStatus.review, review_base=head(repo), review_sha=missing))
    with pytest.raises(NoDiff, match="not a commit id"):
        task_diff(repo, "refs/heads/main",
                  make_task(status=TaskStatus.completed, base_sha="--output=/tmp/x", commit_sha=head(repo)))


def test_options_never_reach_git_as_revisions(repo: Path) -> None:
    with pytest.raises(ValueError):
        diff_files(repo, "--output=/tmp/owned", head(repo))
    with pytest.raises(ValueError):
        task_diff(repo, "refs/heads/main", make_task(), context=21)
