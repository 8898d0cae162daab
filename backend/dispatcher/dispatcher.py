"""The dispatcher: claims pending tasks and runs each in its own worker thread.

`tick()` does one round of work and is what tests drive; the loop thread only calls it when
woken (any write to the store by this process, e.g. a new task) or when the poll interval
passes (a safety net for writes by other processes).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from .. import taskviews
from ..agent.basebranch import resolve_settings
from ..agent.settings import AgentSettings
from ..archive import Archiver
from ..executors import build_executor
from ..gitrepo import GitError, has_commits
from ..guardrails import Guardrails, unguarded_reason
from ..models import Owner, Task, TaskStatus, utcnow
from ..runtimes import build_configured
from ..runtimes.base import Runtime
from ..runtimes.section import RuntimeSection
from ..store import StoreError, TaskStore
from ..storeview import StoreView
from .events import EventWriters
from .local_base import LocalBaseFollower
from .mergequeue import MergeQueue
from .policy import WorkflowPolicy
from .ports import PortPool
from .pullrequests import PullRequests
from .recovery import reconcile
from .run import RunContext, TaskRun
from .slots import WorkerSlots
from .workspace import ProjectGit

log = logging.getLogger(__name__)

CANCEL_WAIT = 5.0
SHUTDOWN_WAIT = 30.0


class Dispatcher:
    def __init__(self, settings: AgentSettings, store: TaskStore, runtimes: dict[str, Runtime] | None = None) -> None:
        settings = resolve_settings(settings)  # base_branch: null means detect (once, here at the latest)
        config = settings.config
        self.config = config
        self.store = store
        self.owner = Owner(pid=os.getpid(), host=socket.gethostname(), instance=uuid.uuid4().hex[:12])
        self.ports = PortPool(config.port_range_start, config.port_range_end)
        git = ProjectGit(settings.project_dir, config)
        self.local_base = LocalBaseFollower(git)
        self.ctx = RunContext(
            store=store,
            config=config,
            git=git,
            runtimes=runtimes if runtimes is not None else build_configured(config),
            logs_dir=settings.logs_dir,
            follow_base=self.local_base.request,
            ports=self.ports,
            slots=WorkerSlots(config.max_parallel_workers),
            wake_dispatcher=self.wake,
            on_change=self._changed,
            writers=EventWriters(settings.logs_dir),
            executor=build_executor(config, git),  # raises ExecutorUnavailable (e.g. no distributed)
        )
        # GitHub pull requests (landing: pr): opened by runs, watched until merged or closed.
        self.prs = self.ctx.prs = PullRequests(store, config, settings.project_dir, config.base_branch, git=git,
                                               writers=self.ctx.writers)
        self.queue = self.ctx.queue = MergeQueue(self.ctx)
        # Runtimes that run without their permission prompts wait for a one-time acknowledgement.
        self.guardrails = Guardrails(settings.project_dir, self._unguarded(self.ctx.runtimes, {}))
        self._listeners: list[Callable[[], None]] = []
        self._runs: dict[str, TaskRun] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._ending: dict[str, TaskRun] = {}  # every run whose thread is alive (ending ones too)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._claiming = threading.Event()
        self._exit = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._reconciled = False
        self._runtime_problems: dict[str, dict] = {}  # by runtime name, as the last tick saw them
        self._held: set[str] = set()  # tasks not to claim now (their workspace is being removed)
        self._has_commits = False  # asked each tick until true (a repository keeps its commits)
        self._last_executor_problem: dict | None = None
        self._remote_seen: tuple[float, bool] = (float("-inf"), False)
        store.subscribe(self.wake)
        self.ctx.executor.listen(self.wake)  # its scheduler came back: claim now, not at the next poll
        # Worktrees read the store through a read-only copy, refreshed after writes (storeview.py).
        self.store_view = StoreView(store.path)
        store.subscribe(self.store_view.request)
        self.archiver = Archiver(store, config.archive_after_days)

    # ----- lifecycle ----------------------------------------------------------------------
    #
    # The loop thread lives from the first start() to shutdown(). "Stopped" only means it does
    # not claim: it keeps renewing the leases of tasks that are still running.

    @property
    def running(self) -> bool:
        return self._claiming.is_set()

    def recover(self) -> None:
        """Crash recovery, once per process, before anything is claimed (also when the
        dispatcher is not started, so no dead owner's task stays in_progress)."""
        with self._lock:
            if self._reconciled:
                return
            for line in reconcile(self.store, self.ctx.git, self.config, self.owner):
                log.info("recovery: %s", line)
            for task in self.store.list_tasks():  # a follow-up that came while its task was landing
                self._reopen_for_messages(task.id)
            self._reconciled = True

    def start(self) -> None:
        self.recover()
        with self._lock:
            self._claiming.set()
            if self._loop_thread is None or not self._loop_thread.is_alive():
                self._exit.clear()
                self._loop_thread = threading.Thread(target=self._loop, name="baton-dispatcher", daemon=True)
                self._loop_thread.start()
        self.prs.start()
        self.wake()
        self._changed()

    def stop(self, force: bool = False) -> None:
        """No new claims. Running tasks finish, unless `force`: then they go back to pending."""
        self._claiming.clear()
        with self._lock:
            pass  # a tick that is claiming right now finishes its claim before we report
        self._changed()
        if force:
            self._interrupt_all("interrupted")

    def restart(self, force: bool = False) -> None:
        self.stop(force=force)
        self.start()

    def shutdown(self) -> None:
        """Process exit: stop claiming, stop every agent, return their tasks to pending."""
        self.stop(force=False)
        self._interrupt_all("shutdown")
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:  # cleanups of completed tasks still running
            thread.join(SHUTDOWN_WAIT)
        self.queue.close()
        self.ctx.executor.close()
        self.prs.stop()
        self._exit.set()
        self.wake()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=10)
        self.local_base.flush()
        self.store_view.close()

    def _interrupt_all(self, reason: str) -> None:
        with self._lock:
            runs = list(self._runs.values())
            ending = list(self._ending.values())
        for run in ending:  # a WORKFLOW.md hook of a run's ending (a cancel's, a landing's) too
            run.ending_stop.set(reason)
        for run in runs:
            run.stop.set(reason)
        for run in runs:
            run.finished.wait(SHUTDOWN_WAIT)

    def wake(self) -> None:
        self._wake.set()

    def listen(self, listener: Callable[[], None]) -> None:
        """`listener()` runs (in whichever thread) when the status may have changed without a
        store write: started or stopped, a run's phase, the merge queue. It must not block."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _loop(self) -> None:
        while not self._exit.is_set():
            try:
                self.archiver.run_if_due()  # at start, then hourly: keeps the live store small
            except Exception as exc:  # noqa: BLE001 - archiving can wait; claiming must go on
                log.warning("dispatcher: archiving finished tasks failed: %s", exc)
            try:
                self.tick()
            except StoreError as exc:
                log.error("dispatcher: task store problem: %s", exc)
            except Exception:  # noqa: BLE001 - the loop must survive; the error is logged
                log.exception("dispatcher: tick failed")
            self._wake.wait(self._next_wait())
            self._wake.clear()

    def _next_wait(self) -> float:
        wait = self.config.poll_interval_seconds
        if self._live():  # leases are renewed well before they run out
            wait = min(wait, self.config.lease_seconds / 3)
        return wait

    # ----- one round ----------------------------------------------------------------------

    def tick(self) -> int:
        """Renew leases; claim and start tasks while claiming is on and workers and ports are
        free. Returns how many tasks were started."""
        self._renew_leases()
        started = 0
        if self._claiming.is_set() and self._executor_problem() is not None:
            return 0  # nowhere to run an agent (no scheduler, no worker): tasks wait, pending
        # One claimer at a time; stop() and set_runtimes() wait for it, so the runtimes checked
        # are the ones the claimed tasks run on.
        with self._lock:
            unavailable = self._check_runtimes() if self._claiming.is_set() else set()
            if unavailable and unavailable >= set(self.ctx.runtimes):
                return 0  # nothing is claimed while no CLI can start: tasks wait, pending
            if self._claiming.is_set() and not self._repository_has_commits():
                return 0  # no commit to start a worktree from; /agent/health says `no_commits`
            # Workers are for agents: a task waiting in the merge queue holds no slot.
            while self._claiming.is_set() and self.ctx.slots.try_take():
                port = self.ports.acquire("claiming")
                if port is None:
                    self.ctx.slots.give()
                    break  # every port of the range is taken (by tasks or by other programs)
                try:
                    task = self.store.claim(self.owner, self.config.lease_seconds,
                                            runnable=self._runnable(unavailable))
                except BaseException:
                    self.ports.release(port)
                    self.ctx.slots.give()
                    raise
                if task is None:
                    self.ports.release(port)
                    self.ctx.slots.give()
                    break
                self._launch(task, port)
                started += 1
        return started

    def _launch(self, task: Task, port: int) -> None:
        try:
            run = TaskRun(self.ctx, task, port)
        except BaseException:
            # Claimed but cannot run: give it back rather than leave it in_progress.
            self.ports.release(port)
            self.ctx.slots.give()
            self.store.transition(task.id, TaskStatus.pending)
            raise
        self.ports.assign(port, task.id)
        thread = threading.Thread(target=self._work, args=(run,), name=f"task-{task.id}", daemon=True)
        self._runs[task.id] = run
        self._threads[task.id] = thread
        self._ending[task.id] = run
        thread.start()

    def _work(self, run: TaskRun) -> None:
        me = threading.current_thread()
        try:
            run.execute()
        finally:
            with self._lock:
                if self._runs.get(run.task.id) is run:  # not a newer run of the task (approved meanwhile)
                    del self._runs[run.task.id]
            try:
                run.cleanup()  # only a landed task has anything left to clean here
            finally:
                with self._lock:
                    if self._threads.get(run.task.id) is me:
                        del self._threads[run.task.id]
                    if self._ending.get(run.task.id) is run:
                        del self._ending[run.task.id]
                self.ports.release(run.port)
                self._reopen_for_messages(run.task.id)
                self.wake()  # a worker and its port are free: look for more work now

    def winding_down(self, task_id: str) -> bool:
        """A run of the task still holds its worktree or branch in this process (running, or a
        landed task being cleaned up): a message then waits until it has let go.
        Without self._lock: it is asked inside the store's lock, and tick() claims (the store's
        lock) holding self._lock. One dict lookup is atomic; _work unregisters before it reopens."""
        return task_id in self._threads

    def _reopen_for_messages(self, task_id: str) -> None:
        """A task that got a message while its run was winding down starts another run."""
        from ..review import reopen_for_messages

        try:
            reopen_for_messages(self.store, task_id, self.winding_down)
        except StoreError as exc:
            log.warning("task %s: could not start the run its messages ask for: %s", task_id, exc)

    def _renew_leases(self) -> None:
        now = utcnow()
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            lease = run.task.lease_expires_at
            if lease is None or (lease - now).total_seconds() < self.config.lease_seconds * 2 / 3:
                try:
                    run.task = self.store.update(
                        run.task.id, expect={TaskStatus.in_progress},
                        heartbeat_at=now, lease_expires_at=now + timedelta(seconds=self.config.lease_seconds),
                    )
                except StoreError as exc:
                    log.warning("task %s: lease not renewed: %s", run.task.id, exc)

    # ----- what WORKFLOW.md changes while the agent runs ------------------------------------

    def set_workflow(self, policy: WorkflowPolicy | None) -> None:
        """The workflow the next claims, runs and turns follow (None: none)."""
        self.ctx.workflow = policy
        self.wake()

    def hold(self, task_id: str) -> bool:
        """Claim no run of the task until `release(task_id)`: its workspace is being removed, and
        a run starting now would take the folder over as it goes. False (nothing held) when a
        run of it is already under way here. Taken under the claim lock, so once this returns
        True the store shows any claim made before it (read the task again, then act)."""
        with self._lock:
            if task_id in self._threads:
                return False
            self._held.add(task_id)
            return True

    def release(self, task_id: str) -> None:
        with self._lock:
            self._held.discard(task_id)
        self.wake()  # it may be pending by now (a rerun while its folder went)

    def set_runtimes(self, runtimes: dict[str, Runtime], sections: dict[str, RuntimeSection]) -> None:
        """Run the next claims on these runtimes (`sections`: the settings each was built from,
        where they are not agent.yaml's). Runs already started keep the runtime they have."""
        with self._lock:  # not between a tick's runtime check and its claims
            self.ctx.runtimes = dict(runtimes)
            self.guardrails.reasons = self._unguarded(self.ctx.runtimes, sections)
            self._runtime_problems = {}  # checked afresh (and logged) at the next tick
        self.wake()
        self._changed()

    def resize_workers(self, limit: int) -> None:
        """At most `limit` agents from the next claim on; running ones go on."""
        self.ctx.slots.resize(limit)
        self.wake()
        self._changed()

    def _unguarded(self, runtimes: dict[str, Runtime], sections: dict[str, RuntimeSection]) -> dict[str, str]:
        """{runtime: why} for those that run without their permission prompts (they wait for
        the acknowledgement)."""
        return {name: why for name in runtimes
                if (why := unguarded_reason(name, sections.get(name) or getattr(self.config, name, None))) is not None}

    # ----- requests -----------------------------------------------------------------------

    def cancel(self, task_id: str) -> bool:
        """Stop a running task and wait (briefly) until it is recorded cancelled. Returns False
        when this dispatcher is not running that task."""
        with self._lock:
            run = self._runs.get(task_id)
        if run is None:
            return False
        run.stop.set("cancelled")
        run.finished.wait(CANCEL_WAIT)
        return True

    def problems(self) -> list[dict]:
        """What keeps this dispatcher from doing its job, as [{code, message}] (empty when none).
        /agent/health reports them (status `degraded`) and the board shows them."""
        problems = self._runtime_check()  # cheap: a PATH lookup per runtime, a stat of the acknowledgement
        if set(problems) != set(self._runtime_problems):
            self.wake()  # a CLI appeared (or went): claim on the new facts now, not at the next poll
        return [dict(problem) for problem in problems.values()] + self.problems_beyond_runtimes()

    def _runtime_check(self) -> dict[tuple[str, str], dict]:
        """{(runtime, code): problem}: a missing CLI, an unacknowledged bypass of its prompts."""
        problems = {(name, problem["code"]): dict(problem) for name, runtime in self.ctx.runtimes.items()
                    if (problem := runtime.check()) is not None}
        problems.update({(name, problem["code"]): problem for name, problem in self.guardrails.problems().items()})
        return problems

    def problems_beyond_runtimes(self) -> list[dict]:
        """What keeps tasks from finishing that is no runtime's fault (GitHub for landing: pr,
        the executor's scheduler and workers)."""
        problems = [problem for problem in (self.prs.problem(), self._executor_problem()) if problem]
        return [dict(problem) for problem in problems]

    def _remote_present(self) -> bool:
        """The project's remote, asked at most every 2 s (health asks often; a remote removed
        while the agent runs must still show)."""
        at, present = self._remote_seen
        if time.monotonic() - at > 2.0:
            try:
                present = self.ctx.git.remote_present()
            except GitError:
                present = False
            self._remote_seen = (time.monotonic(), present)
        return present

    def _executor_problem(self) -> dict | None:
        executor = self.ctx.executor
        if executor.remote and not self._remote_present():
            return {"code": "no_remote",
                    "message": f"executor: {executor.name} needs the project's remote {self.config.remote!r}: "
                               "workers get their work only through git (add one with git remote add)"}
        problem = executor.problem()
        if problem is not None and problem != self._last_executor_problem:
            (log.info if problem["code"] == "executor_connecting" else log.error)(
                "dispatcher: not claiming tasks: %s", problem["message"])
        elif problem is None and self._last_executor_problem is not None:
            log.info("dispatcher: the %s executor is available again; claiming", executor.name)
        self._last_executor_problem = problem
        return dict(problem) if problem is not None else None

    def _repository_has_commits(self) -> bool:
        if not self._has_commits:
            self._has_commits = has_commits(self.ctx.git.project)
        return self._has_commits

    def _check_runtimes(self) -> set[str]:
        """Re-check every configured runtime (each tick: installing a CLI later unblocks its
        tasks); log when that changes. Returns the names of those that cannot start now."""
        problems = self._runtime_check()
        for key, problem in problems.items():
            if key not in self._runtime_problems:
                log.error("dispatcher: not claiming tasks for runtime %s: %s", key[0], problem["message"])
        blocked = {name for name, _ in problems}
        for name in {name for name, _ in self._runtime_problems} - blocked:
            log.info("dispatcher: runtime %s is available again; claiming its tasks", name)
        self._runtime_problems = problems
        return blocked

    def _runnable(self, unavailable: set[str]) -> Callable[[Task], bool] | None:
        """Which pending tasks to claim: those whose runtime can start now (a task for a runtime
        that is not configured at all is claimed too, and fails at once saying so), and, with a
        workflow, that its per-state limits allow beside the runs of this dispatcher; never one
        held (see hold()), nor one pinned to a box (run_on) no worker offers now. Called holding
        self._lock, so the runs are those of this round's earlier claims too."""
        default = self.config.runtime
        workflow = self.ctx.workflow
        held = set(self._held)
        places = self.ctx.executor.places  # a task pinned to a box no worker offers now waits, pending
        if workflow is None:
            if not unavailable and not held and not self.ctx.executor.remote:
                return None
            return lambda task: task.id not in held and (task.runtime or default) not in unavailable \
                and places(task.run_on)
        running = [run.task for run in self._runs.values()]
        return lambda task: task.id not in held and (task.runtime or default) not in unavailable \
            and places(task.run_on) and workflow.claimable(task, running)

    def busy(self) -> int:
        """Coding agents running (tasks in the merge queue hold no worker)."""
        return self.ctx.slots.used

    def _live(self) -> int:
        with self._lock:
            return len(self._runs)

    def status(self) -> dict:
        with self._lock:
            runs = list(self._runs.values())
        counts = taskviews.counts(self.store.snapshot())
        return {
            "problems": self.problems(),
            "state": "running" if self.running else "stopped",
            "workers": {"max": self.ctx.slots.limit, "busy": self.busy()},
            "running": [
                {"task_id": r.task.id, "title": r.task.title, "phase": r.phase, "port": r.port,
                 "started_at": r.task.started_at.isoformat() if r.task.started_at else None,
                 "worker": r.task.worker}
                for r in runs
            ],
            "queue_length": counts["pending"],
            "merge_queue": self.queue.snapshot(),
            "counts": counts,
            "ports_in_use": {str(port): owner for port, owner in sorted(self.ports.in_use().items())},
            "owner": self.owner.model_dump(),
        }
