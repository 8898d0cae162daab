"""The benchmark scripts still run and print the figures they promise (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_store_bench_prints_its_figures():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "store_bench.py"),
         "--tasks", "300", "--samples", "10", "--contention-seconds", "0.5", "--archived", "1000"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["tasks_in_store"] == 300
    for key in ("create_store", "claim_store", "create_http", "get_tasks_http"):
        assert figures[key]["n"] >= 10 and figures[key]["p50_ms"] > 0
    assert figures["contention"]["processes"] == 4
    assert figures["contention"]["claims"] > 0
    archive = figures["with_archive"]
    assert archive["live_tasks"] == 300 and archive["archived_tasks"] == 1000
    for key in ("create_store", "claim_store"):
        assert archive[key]["n"] >= 10 and archive[key]["p95_ms"] > 0
    assert archive["archive_pass"]["tasks_moved"] == 10  # the claimed samples, finished long ago


def run_bench(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_dispatch_bench_prints_its_figures():
    figures = run_bench("dispatch_bench.py", "--overhead-tasks", "2", "--rounds", "1", "--pickups", "2",
                        "--load-tasks", "3", "--workers", "2")
    assert figures["overhead"]["ratio"] > 0 and figures["pickup"]["samples"] == 2
    assert figures["load"]["commits_landed"] == 3 and figures["load"]["peak_rss_mb"] > 0
    assert set(figures["targets_met"]) == {"overhead_ratio", "pickup_p50", "load_efficiency", "peak_memory"}


def test_queue_bench_prints_its_figures():
    # With the default bound the default-bound figure is the batch itself (kept fast: no third run).
    figures = run_bench("queue_bench.py", "--tasks", "3", "--workers", "2", "--test-seconds", "0.2",
                        "--slow-test-seconds", "0.3", "--pickups", "2")
    assert figures["batch"]["elapsed_s"] > 0 and figures["slow_batch"]["tasks"] == 3
    assert figures["batch_default_tests"]["same_run_as"] == "batch"
    assert figures["batch_default_tests"]["max_parallel_tests"] == figures["batch"]["max_parallel_tests"] == 2
    assert figures["pickup"]["max_parallel_tests"] == 1
    assert figures["pickup"]["samples"] == 2 and figures["pickup"]["busy_p50_ms"] > 0


def test_dashboard_bench_prints_its_figures():
    if not Path("/usr/bin/chromium").exists():
        import pytest
        pytest.skip("SKIPPED LOUDLY: /usr/bin/chromium is missing (.ci/run installs it)")
    figures = run_bench("dashboard_bench.py", "--agents", "3", "--samples", "2", "--board-tasks", "40",
                        "--board-samples", "1", "--idle-seconds", "2", "--probes", "2", "--big-projects", "2",
                        "--big-tasks", "60", "--big-samples", "1")
    assert figures["api_projects"]["healthy_reported"] == 2
    assert figures["api_projects"]["hanging_reported_unhealthy"] is True
    assert figures["board"]["cards_rendered"] == 40
    live = figures["live"]
    assert live["probes"] == 2 and live["write_to_page_p50_ms"] > 0 and live["idle_bytes_per_minute"] >= 0
    assert figures["big_board"]["cards_rendered"] > 0 and figures["big_board"]["api_board_bytes_on_the_wire"] > 0
    assert set(figures["targets_met"]) == {"api_projects_overhead", "hanging_agent_bounded", "board_render",
                                           "write_to_page_p95", "big_board_render"}


def test_runtime_bench_prints_its_figures():
    # The real Claude Code CLI (from the test cache, or npm); only outside CI may it be missing.
    figures = run_bench("runtime_bench.py", "--runtimes", "claude_code", "--tasks", "1", "--concurrent", "2")
    assert figures["machine"]["cores"] >= 1 and figures["versions"]["git"].startswith("git version")
    claude = figures["claude_code"]
    if "skipped" in claude:
        import os

        import pytest
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real Claude Code CLI is required under CI=true: {claude['skipped']}")
        pytest.skip(f"SKIPPED LOUDLY: {claude['skipped']}")
    overhead, memory = claude["overhead"], claude["memory"]
    assert overhead["tasks"] == overhead["files_landed"] == 1
    assert overhead["cli_s_p50"] > 0 and 0 < overhead["baton_fraction_p50"] < 1
    assert {"baton_s_p50", "baton_s_max"} <= overhead.keys()
    assert memory["concurrent"] == memory["files_landed"] == 2
    assert memory["peak_total_mb"] >= memory["peak_per_task_mb_max"] >= memory["peak_per_task_mb_p50"] > 0
    assert memory["baton_agent_peak_rss_mb"] > 0


def test_demo_bench_times_readme_command_one_until_every_seeded_task_lands():
    figures = run_bench("demo_bench.py", "--timeout", "500")
    assert "problem" not in figures, figures
    assert 0 < figures["board_up_s"] <= figures["first_landed_s"] <= figures["all_landed_s"]
    assert figures["exit_code"] == 0 and figures["command"].endswith("baton-dashboard --demo --port " +
                                                                      figures["command"].rsplit(" ", 1)[1])


def test_plan_schedule_bench_prints_its_figures():
    figures = run_bench("plan_schedule.py", "--tasks", "12", "--depth", "3", "--workers", "2", "--task-seconds", "0.2")
    assert (figures["tasks"], figures["depth"], figures["workers"]) == (12, 3, 2)
    assert figures["dependency_order_respected"] is True and figures["violations"] == []
    assert figures["commits_landed"] == 12
    assert figures["critical_path_bound_seconds"] == 0.6 and figures["work_bound_seconds"] == 1.2
    assert figures["lower_bound_seconds"] == 1.2 and figures["wall_seconds"] > 0 and figures["ratio"] > 0
    for key in ("scheduling_overhead_per_task_seconds", "ready_to_start_seconds"):
        assert set(figures[key]) == {"mean", "p50", "p95", "max"}


def test_plan_schedule_bench_finds_an_order_violation_and_measures_overhead_as_defined():
    # Its own analysis, on a made-up run: b depends on a; one worker.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import plan_schedule

    plan = [{"ref": "a", "layer": 0, "depends_on": []}, {"ref": "b", "layer": 1, "depends_on": ["a"]}]
    ids = {"a": "ida", "b": "idb"}

    def run(b_started: str) -> dict:
        tasks = {"ida": {"started_at": "2026-01-01T00:00:00.100Z", "finished_at": "2026-01-01T00:00:01.500Z"},
                 "idb": {"started_at": b_started, "finished_at": "2026-01-01T00:00:03Z"}}
        t0 = plan_schedule.epoch("2026-01-01T00:00:00Z")
        starts = {"ida": t0 + 0.2, "idb": plan_schedule.epoch(b_started) + 0.1}
        return plan_schedule.analyse(plan, ids, tasks, starts, {"ida": t0 + 1.2, "idb": t0 + 2.9}, t0, workers=1)

    good = run("2026-01-01T00:00:01.600Z")
    assert good["violations"] == []
    # a: ready and a worker free at t0, claimed 0.1 s later; b: ready when a finished (1.5 s), its
    # worker free since a's agent ended (1.2 s): 0.1 s.
    assert [round(x, 3) for x in good["overhead"]] == [0.1, 0.1]
    assert good["wall_seconds"] == 3.0
    bad = run("2026-01-01T00:00:01.400Z")
    assert [(v["task"], v["dependency"]) for v in bad["violations"]] == [("b", "a")]


def test_tracker_sync_bench_prints_its_figures():
    figures = run_bench("tracker_sync.py", "--issues", "40", "--projects", "2", "--steady-rounds", "2")
    assert (figures["projects"], figures["active_issues"]) == (2, 40)
    assert figures["full_sync"]["tasks_created"] == 40 and figures["duplicates"] == 0
    # One page of active issues per project, counted alike by the clients and the stand-in.
    assert figures["full_sync"]["tracker_calls"] == figures["full_sync"]["standin_counted_calls"] == 2
    assert figures["steady_state"]["calls_per_round"] == [2, 2]
    assert figures["steady_state"]["calls_per_minute"] == 4.0
    assert figures["steady_state"]["tracker_calls_in_3_reconciles_between_polls"] == 0


def test_remote_runs_bench_prints_its_figures():
    # A real dask scheduler, two workers, two agents and a dashboard against local runs, kept small.
    # In a session of its own: whatever the script started goes with it, even after a timeout.
    import os
    import signal

    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "remote_runs.py"), "--tasks", "2",
                             "--agent-seconds", "0.2", "--json-only"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, err[-3000:]
    figures = json.loads(out)
    assert (figures["tasks"], figures["agent_seconds"], figures["parallel_runs"]) == (2, 0.2, 2)
    assert figures["machine"]["cores"] >= 1 and figures["machine"]["load_1m_after"] >= 0
    local, dask = figures["local"], figures["dask"]
    for mode in (local, dask):
        assert mode["commits_landed"] == 2 and mode["wall_s"] > 0 and mode["per_task_s"] > 0
        assert mode["cli_s"]["n"] == mode["baton_s"]["n"] == 2
        # The fake's turn: its ticks (0.2 s) plus starting Python; Baton's share comes on top.
        assert mode["cli_s"]["p50"] >= 0.2 and mode["baton_s"]["p50"] > 0
        assert mode["event_latency_ms"]["n"] > 0 and mode["event_latency_ms"]["p50"] > 0
        assert mode["event_latency_ms"]["max"] >= mode["event_latency_ms"]["p95"] >= mode["event_latency_ms"]["p50"]
        assert mode["event_to_log_ms"]["n"] == mode["event_latency_ms"]["n"]  # every CLI event, both ways
        assert mode["events_missed_by_board"] == 0
    assert local["runs_per_worker"] == {"(this host)": 2}
    assert set(dask["runs_per_worker"]) <= {"box-a", "box-b"} and sum(dask["runs_per_worker"].values()) == 2
    assert set(dask["phases_s"]) == {"claim_to_cli_start", "cli_end_to_result_taken", "result_taken_to_landed"}
    assert set(local["phases_s"]) == {"claim_to_cli_start", "cli_end_to_landed"}
    assert figures["overhead_per_remote_run_s"] == round(dask["baton_s"]["mean"] - local["baton_s"]["mean"], 3)
    assert figures["event_latency_ms"] == dask["event_latency_ms"]
    assert set(figures["definitions"]) == {"baton_s", "phases_s", "overhead_per_remote_run_s", "event_latency_ms",
                                           "event_to_log_ms"}
