"""A `baton-agent` killed (SIGKILL) in the middle of the merge queue, then restarted, recovers
to a consistent queue (issue #15): nothing lands twice, nothing is lost, no task branch keeps
another task's unlanded work, and every commit of main passed the test command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from backend.store import TaskStore
from conftest import fake_task
from support import AgentProcess, commit_and_push, free_port, git, origin_of, pid_alive, wait_for, wait_for_http

# The project's "tests". Each run checks the items (a real check, re-run on every commit of
# main below), writes `started-<items>` and `running-<pid>` into the state folder, waits as
# the rules "<items or *>:<file>" say, then records `passed-<items>` and `tree-<tree id>`.
CHECK = (
    "import os, pathlib, subprocess, sys, time\n"
    "state = pathlib.Path(sys.argv[1])\n"
    "items = sorted(p.stem for p in pathlib.Path('items').glob('*.txt'))\n"
    "if any(pathlib.Path('items', n + '.txt').read_text() != n + '\\n' for n in items):\n"
    "    sys.exit(1)\n"
    "key = ''.join(items) or '-'\n"
    "tree = subprocess.run(['git', 'rev-parse', 'HEAD^{tree}'], capture_output=True, text=True,\n"
    "                      check=True).stdout.strip()\n"
    "(state / f'running-{os.getpid()}').write_text(key)\n"
    "(state / f'started-{key}').touch()\n"
    "for rule in sys.argv[2:]:\n"
    "    when, wait = rule.split(':')\n"
    "    while when in (key, '*') and not (state / wait).exists():\n"
    "        time.sleep(0.02)\n"
    "(state / f'passed-{key}').touch()\n"
    "(state / f'tree-{tree}').touch()\n"
)

# A hook in the bare origin: the first push to main blocks in it until released, so `git push`
# has not returned yet. As post-receive the ref is already updated; as pre-receive not yet.
BLOCKING_HOOK = (
    "#!/bin/sh\n"
    "while read old new ref; do\n"
    "  if [ \"$ref\" = refs/heads/main ] && [ ! -e '{state}/pushed' ]; then\n"
    "    echo \"$$ $new\" > '{state}/pushed.tmp' && mv '{state}/pushed.tmp' '{state}/pushed'\n"
    "    while [ ! -e '{state}/hook-gate' ]; do sleep 0.02; done\n"
    "  fi\n"
    "done\n"
)


def setup(repo: Path, fake_cli, state: Path, *rules: str, workers: int) -> None:
    state.mkdir()
    commit_and_push(repo, {"check.py": CHECK}, "item check")
    command = " ".join([sys.executable, "check.py", str(state), *rules])
    (repo / "agent.yaml").write_text(
        "poll_interval_seconds: 0.5\n"
        "dispatcher_autostart: false\n"  # started by the test, after it looked at what recovery did
        f"test_command: '{command}'\n"
        f"max_parallel_workers: {workers}\n"
        "max_parallel_tests: 3\n"
        f"claude_code:\n  command: {fake_cli.command}\n  timeout: 120\n  stall_timeout: 120\n"
    )


def add_tasks(url: str, names: str) -> dict[str, str]:
    """One task per name, each adding items/<name>.txt (committed by Baton). name -> task id."""
    resp = httpx.post(f"{url}/agent/tasks/bulk", json={"tasks": [
        fake_task(f"Item {n}", {"steps": [{"write": f"items/{n}.txt", "text": f"{n}\n"}]}) for n in names]})
    assert resp.status_code == 201, resp.text
    return dict(zip(names, (t["id"] for t in resp.json()["tasks"])))


def install_hook(repo: Path, name: str, state: Path) -> None:
    hook = origin_of(repo) / "hooks" / name
    hook.write_text(BLOCKING_HOOK.replace("{state}", str(state)))
    hook.chmod(0o755)


def start_dispatcher(url: str) -> None:
    assert httpx.post(f"{url}/agent/dispatcher/start").status_code < 300


def open_the_gate_and_finish(url: str, state: Path, store: TaskStore, task_ids: list[str]) -> None:
    """Let the gated test runs pass, dispatch again, and wait for each task to complete."""
    (state / "gate").touch()
    start_dispatcher(url)
    for task_id in task_ids:
        wait_for(lambda: store.get(task_id).status.value in ("completed", "failed"), timeout=90,
                 what=f"task {task_id} to finish")
    assert [store.get(i).status.value for i in task_ids] == ["completed"] * len(task_ids), [
        store.get(i).error_message for i in task_ids]


def queue(url: str) -> list[dict]:
    return httpx.get(f"{url}/agent/dispatcher").json()["merge_queue"]


def running_pids(state: Path) -> list[int]:
    return [int(p.name.removeprefix("running-")) for p in state.glob("running-*")]


def items_at(origin: Path, sha: str) -> set[str]:
    names = git(origin, "ls-tree", "-r", "--name-only", sha).split()
    return {Path(n).stem for n in names if n.startswith("items/")}


def assert_branches_hold_only_their_own_work(repo: Path, ids: dict[str, str], store: TaskStore) -> None:
    """Completed tasks have no branch left; any other task/<id> is its own commit on landed history."""
    base = git(repo, "rev-parse", "refs/remotes/origin/main").strip()
    for name, task_id in ids.items():
        exists = git(repo, "branch", "--list", f"task/{task_id}").strip() != ""
        if store.get(task_id).status.value == "completed":
            assert not exists, f"landed branch task/{task_id} was not deleted"
        elif exists:
            subjects = git(repo, "log", "--format=%s", f"{base}..task/{task_id}").splitlines()
            assert subjects == [f"feature({task_id}): Item {name}"], (name, subjects)
            assert items_at(repo, f"task/{task_id}") - {name} <= items_at(repo, base), name


def assert_main_consistent(repo: Path, ids: dict[str, str], store: TaskStore, state: Path, tmp_path: Path) -> None:
    """Each completed task's change is on origin main exactly once, no commit of main carries
    the work of a task that is not completed, and every commit of main passed the tests."""
    origin = origin_of(repo)
    subjects = git(origin, "log", "--format=%s", "main").splitlines()
    done = {n for n, i in ids.items() if store.get(i).status.value == "completed"}
    for name, task_id in ids.items():
        expected = 1 if name in done else 0
        assert subjects.count(f"feature({task_id}): Item {name}") == expected, (name, subjects)
        assert sum(task_id in s for s in subjects) == expected, (name, subjects)
    for name in done:
        task = store.get(ids[name])
        assert git(origin, "merge-base", "--is-ancestor", task.commit_sha, "main") == ""
        assert git(origin, "show", f"{task.commit_sha}:items/{name}.txt") == f"{name}\n"
    check = tmp_path / "recheck"
    if not check.exists():
        git(tmp_path, "clone", "-q", str(origin), str(check))
    git(check, "fetch", "-q", "origin", "main")
    (tmp_path / "recheck-state").mkdir(exist_ok=True)
    for sha in git(origin, "rev-list", "--reverse", "main").split():
        if not items_at(origin, sha):
            continue  # the project's own set-up commits
        assert items_at(origin, sha) <= done, (sha, items_at(origin, sha), done)
        tree = git(origin, "rev-parse", f"{sha}^{{tree}}").strip()
        assert (state / f"tree-{tree}").exists(), f"{sha} reached main without Baton testing its tree"
        git(check, "checkout", "-q", "--detach", sha)
        rerun = subprocess.run([sys.executable, "check.py", str(tmp_path / "recheck-state")], cwd=check)
        assert rerun.returncode == 0, sha


def git_pids_in(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "git" and (
                    folder in Path(os.readlink(entry / "cwd")).parents):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def stop_all(pids: list[int]) -> None:
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_crash_while_candidates_are_tested_on_top_of_each_other(repo, started, fake_cli, tmp_path):
    state = tmp_path / "state"
    setup(repo, fake_cli, state, "*:gate", workers=4)
    agent, url = started(repo)
    ids = add_tasks(url, "abcd")
    start_dispatcher(url)
    # Three candidates under test, each on top of the one ahead (1, 2 and 3 items), the fourth
    # waiting for a test slot, built on the third.
    wait_for(lambda: sorted(len(p.read_text()) for p in state.glob("running-*")) == [1, 2, 3], timeout=60,
             what="three stacked candidates to be under test")
    entries = wait_for(lambda: len(q := queue(url)) == 4 and q, timeout=30, what="all four tasks in the queue")
    assert [e["state"] for e in entries] == ["testing", "testing", "testing", "waiting"], entries
    assert [e["on_top_of"] for e in entries[1:3]] == [entries[0]["task_id"], entries[1]["task_id"]], entries
    pids = running_pids(state)

    agent.proc.kill()  # SIGKILL mid-speculation: no cleanup at all
    agent.proc.wait()
    try:
        assert all(pid_alive(pid) for pid in pids)  # the test runs outlive the killed agent
        second, url = started(repo)  # recovery is done once it answers; it claims nothing yet
        wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=15,
                 what="recovery to stop the test runs")
        store = TaskStore(repo / "data" / "dev-tasks.json")
        for task_id in ids.values():
            task = store.get(task_id)
            assert task.status.value == "pending" and task.commit_sha is None, task
        assert not list((repo / "worktrees").glob("*")), "recovery left worktrees"
        # Speculation left B on top of A's unlanded candidate (and so on): recovery put every
        # branch back onto landed history, its own commit only.
        assert_branches_hold_only_their_own_work(repo, ids, store)
        assert_main_consistent(repo, ids, store, state, tmp_path)

        open_the_gate_and_finish(url, state, store, list(ids.values()))
        assert_main_consistent(repo, ids, store, state, tmp_path)
        assert_branches_hold_only_their_own_work(repo, ids, store)
        assert git(repo, "branch", "--list", "task/*").strip() == ""
        assert not any(pid_alive(pid) for pid in running_pids(state))
        assert second.stop(signal.SIGTERM) == 0
    finally:
        stop_all(running_pids(state))


def test_crash_after_a_prefix_was_pushed_before_it_was_recorded(repo, started, fake_cli, tmp_path):
    state = tmp_path / "state"
    # A's verdict comes last and only once C is under test: the prefix A+B is published in one
    # push while C (on top of B) is still being tested.
    setup(repo, fake_cli, state, "a:passed-ab", "a:started-abc", "abc:gate", workers=1)
    install_hook(repo, "post-receive", state)
    agent, url = started(repo)
    ids = add_tasks(url, "abc")  # one worker: they enter the queue in this order
    start_dispatcher(url)
    hook_pid, pushed = wait_for(lambda: (state / "pushed").exists() and (state / "pushed").read_text().split(),
                                timeout=60, what="the push of the prefix A+B")
    store = TaskStore(repo / "data" / "dev-tasks.json")
    a, b, c = (store.get(ids[n]) for n in "abc")
    # Pushed, not yet recorded: both still in progress, their commits noted before the push.
    assert [t.status.value for t in (a, b, c)] == ["in_progress"] * 3
    assert b.commit_sha == pushed and a.commit_sha == git(repo, "rev-parse", f"{pushed}^").strip()
    assert c.commit_sha is None
    pids = running_pids(state)

    agent.proc.kill()
    agent.proc.wait()
    try:
        # The machine went down: Baton's `git push` dies too, before it could note the new base
        # in origin/main. Origin's main is B already.
        pushes = git_pids_in(repo / "worktrees")
        assert pushes
        stop_all(pushes)
        (state / "hook-gate").touch()
        wait_for(lambda: not any(pid_alive(pid) for pid in [*pushes, int(hook_pid)]), timeout=15,
                 what="the push and its hook to end")
        assert git(repo, "rev-parse", "refs/remotes/origin/main").strip() != pushed
        second, url = started(repo)
        wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=15, what="recovery to stop C's tests")
        a, b, c = (store.get(ids[n]) for n in "abc")
        assert (a.status.value, a.commit_sha) == ("completed", a.commit_sha) and a.commit_sha
        assert (b.status.value, b.commit_sha) == ("completed", pushed)
        assert (c.status.value, c.commit_sha) == ("pending", None)
        assert_branches_hold_only_their_own_work(repo, ids, store)
        assert_main_consistent(repo, ids, store, state, tmp_path)

        open_the_gate_and_finish(url, state, store, [ids["c"]])
        assert [store.get(ids[n]).commit_sha for n in "ab"] == [a.commit_sha, pushed]
        assert_main_consistent(repo, ids, store, state, tmp_path)
        assert git(repo, "branch", "--list", "task/*").strip() == ""
        assert not any(pid_alive(pid) for pid in running_pids(state))
        assert second.stop(signal.SIGTERM) == 0
    finally:
        stop_all(running_pids(state))
        (state / "hook-gate").touch()


def test_a_push_still_under_way_at_the_crash_is_waited_for_by_recovery(repo, started, fake_cli, tmp_path):
    """The killed agent's `git push` goes on without it and lands after the crash: recovery
    waits for it before judging what landed, so the prefix is recorded completed, not run again
    (which would record it as "no changes")."""
    state = tmp_path / "state"
    setup(repo, fake_cli, state, "a:passed-ab", "a:started-abc", "abc:gate", workers=1)
    install_hook(repo, "pre-receive", state)
    agent, url = started(repo)
    ids = add_tasks(url, "abc")
    start_dispatcher(url)
    hook_pid, pushed = wait_for(lambda: (state / "pushed").exists() and (state / "pushed").read_text().split(),
                                timeout=60, what="the push of the prefix A+B")
    store = TaskStore(repo / "data" / "dev-tasks.json")
    a_sha = store.get(ids["a"]).commit_sha
    assert store.get(ids["b"]).commit_sha == pushed and a_sha == git(repo, "rev-parse", f"{pushed}^").strip()
    pids = running_pids(state)

    agent.proc.kill()
    agent.proc.wait()
    port = free_port()
    second = AgentProcess(["--port", str(port), "--project-dir", str(repo)], repo, tmp_path / "logs-second")
    try:
        url = f"http://127.0.0.1:{port}"

        def waiting_or_up() -> str | None:
            if "waiting up to" in second.output():
                return "waiting for the push"
            try:
                return httpx.get(f"{url}/agent/health", timeout=1).status_code and "recovered"
            except httpx.TransportError:
                return None

        outcome = wait_for(waiting_or_up, timeout=30, what="recovery to wait, or to finish")
        assert outcome == "waiting for the push", "recovery judged the base while a push was under way"
        assert git(origin_of(repo), "rev-parse", "main").strip() != pushed  # not landed yet
        (state / "hook-gate").touch()  # now the orphaned push lands
        wait_for_http(f"{url}/agent/health", second.proc)
        assert git(origin_of(repo), "rev-parse", "main").strip() == pushed
        a, b, c = (store.get(ids[n]) for n in "abc")
        assert [(t.status.value, t.commit_sha) for t in (a, b, c)] == [
            ("completed", a_sha), ("completed", pushed), ("pending", None)]
        assert not any(pid_alive(pid) for pid in pids)
        assert_branches_hold_only_their_own_work(repo, ids, store)
        assert_main_consistent(repo, ids, store, state, tmp_path)

        open_the_gate_and_finish(url, state, store, [ids["c"]])
        assert len(fake_cli.calls()) == 4  # A and B were not run again; C was, once
        assert_main_consistent(repo, ids, store, state, tmp_path)
        assert git(repo, "branch", "--list", "task/*").strip() == ""
        assert not any(pid_alive(pid) for pid in running_pids(state) + [int(hook_pid)])
        assert second.stop(signal.SIGTERM) == 0
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
            second.proc.wait()
        stop_all(running_pids(state))
        (state / "hook-gate").touch()
