"""The Dask executor, on the project host: sends a turn to the Dask scheduler, streams its events
into the task's log as they come, stops it when asked, and tells a lost worker from a turn's
own ending.

Needs `distributed` (pip install '.[distributed]'), the same version as the workers'.
The scheduler must not re-run a task whose worker died (allowed-failures 0): the dispatcher
decides about retries, as a new attempt. Runs are refused (`problem()`) until it says so.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from distributed import Client, Event
from distributed.security import Security

from ...dispatcher.process import ProcessOutcome
from ...runtimes.base import AgentEvent
from ..base import ExecutorProblem, TurnResult, TurnSpec
from .config import DaskConfig, is_loopback_host
from .remote import EVENT_TOPIC, RemoteJob, redact, run_remote_turn, started_event_name, stop_event_name

log = logging.getLogger(__name__)

STOP_WAIT = 10.0  # seconds a stopped remote turn has to report back before the run stops waiting
EVENTS_WAIT = 2.0  # seconds to wait for live events the result says were sent
PROBLEM_TTL = 2.0  # seconds between looks at the scheduler and its workers
WAITING_NOTICE = 5.0  # seconds without a worker starting the turn before the transcript says why
DEADLINE_SLACK = 120.0  # beyond the turn's own wall limit: the worker must have ended it by then


class DaskExecutor:
    name = "dask"
    remote = True

    def __init__(self, settings: DaskConfig, git: Any = None) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._closed = False
        # Asked by a thread of its own: /agent/health and the claim loop read the last answer and
        # never wait for a connection (up to connect_timeout while the scheduler is down).
        self._problem: ExecutorProblem | None = {
            "code": "executor_connecting", "message": f"connecting to the Dask scheduler at {settings.scheduler}"}
        self._listeners: list = []
        self._inboxes: dict[str, queue.Queue] = {}  # by attempt: the runs following their events
        self._offered: set[str] = set()  # resource names the fitting workers offer (run_on)
        self._stop_watch = threading.Event()
        self._watch: threading.Thread | None = None

    # ----- the connection -----------------------------------------------------------------

    def _security(self) -> Security | None:
        tls = self.settings.tls
        if tls is None:
            return None
        return Security(tls_ca_file=tls.ca_file, tls_client_cert=tls.cert_file, tls_client_key=tls.key_file,
                        require_encryption=True)

    def client(self) -> Client:
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor is closed")
            if self._client is not None and self._client.status in ("running", "connecting"):
                return self._client
            if self._client is not None:
                self._close_client()
            client = Client(self.settings.scheduler, security=self._security(),
                            timeout=self.settings.connect_timeout, set_as_default=False)
            client.subscribe_topic(EVENT_TOPIC, self._route)
            self._client = client
            return client

    def _route(self, item: tuple) -> None:
        """Every run's events come on one topic (see remote.EVENT_TOPIC): each to its own run."""
        message = item[1] if isinstance(item, tuple) and len(item) == 2 else None
        inbox = self._inboxes.get(message.get("attempt")) if isinstance(message, dict) else None
        if inbox is not None:
            inbox.put(message)

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def problem(self) -> ExecutorProblem | None:
        if self._watch is None:
            with self._start_lock:  # not self._lock: that one is held while connecting
                if self._watch is None and not self._closed:
                    self._watch = threading.Thread(target=self._watch_loop, name="baton-dask-watch", daemon=True)
                    self._watch.start()
        return self._problem

    def listen(self, listener) -> None:
        """`listener()` is called when problem() changes (the dispatcher claims at once)."""
        self._listeners.append(listener)

    def _watch_loop(self) -> None:
        while True:
            answer = self._problem_now()
            if self._stop_watch.is_set():
                return
            if answer != self._problem:
                self._problem = answer
                for listener in list(self._listeners):
                    listener()
            if self._stop_watch.wait(PROBLEM_TTL):
                return

    def _problem_now(self) -> ExecutorProblem | None:
        where = self.settings.scheduler
        try:
            client = self.client()
            failures = client.run_on_scheduler(_allowed_failures)
            info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, TLS, timeout: all the same to the board
            with self._lock:
                # A connection still up serves the running turns (closing it would cancel them).
                if self._client is not None and self._client.status not in ("running", "connecting"):
                    self._close_client()
            return {"code": "executor_unavailable",
                    "message": f"the Dask scheduler at {where} cannot be reached: {type(exc).__name__}: {exc}"[:500]}
        if failures != 0:
            return {"code": "executor_misconfigured",
                    "message": f"the Dask scheduler at {where} re-runs a task whose worker died (allowed-failures "
                               f"{failures}): an agent would run twice. Start it with "
                               "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0"}
        workers = info.get("workers") or {}
        # Dask has no authentication: a listener in plain tcp:// off loopback lets anyone who reaches
        # it run code there (the address we dialled may be loopback while it listens everywhere).
        exposed = [address for address in [str(info.get("address") or ""), *workers]
                   if address.startswith("tcp://") and not is_loopback_host(urlsplit(address).hostname or "")]
        if exposed:
            return {"code": "executor_misconfigured",
                    "message": f"Dask listens in plain tcp:// off loopback ({', '.join(exposed[:3])}): anyone who "
                               "reaches it can run code there. Bind the scheduler and the workers to 127.0.0.1 "
                               "(--host), or use TLS (tls://, dask.tls)"}
        needed = self.settings.resources
        fit = [w for w in workers.values()
               if all((w.get("resources") or {}).get(name, 0) >= amount for name, amount in needed.items())]
        self._offered = {name for w in fit for name in (w.get("resources") or {})}
        if not fit:
            wanted = ", ".join(f"{name}={amount:g}" for name, amount in sorted(needed.items()))
            return {"code": "no_workers",
                    "message": f"no Dask worker at {where} offers the resources {wanted} "
                               f"({len(workers)} worker{'s' if len(workers) != 1 else ''} connected)"}
        return None

    def places(self, run_on: str | None) -> bool:
        """Whether a turn pinned to `run_on` (None: anywhere) has a worker now (as last seen)."""
        return self._problem is None and (run_on is None or run_on in self._offered)

    def close(self) -> None:
        # Without self._lock: client() holds it while connecting (up to connect_timeout).
        self._stop_watch.set()
        self._closed = True
        self._close_client()

    # ----- one turn -----------------------------------------------------------------------

    def run_turn(self, spec: TurnSpec) -> TurnResult:
        work = spec.remote
        assert work is not None, "a remote executor needs the turn's RemoteWork"
        spec.check(spec.runtime.turn(spec.request).invocation)  # the host's refusals (a secret in argv) first
        job = RemoteJob(attempt=spec.attempt, task_id=spec.task_id, project=spec.marker.get("BATON_PROJECT", ""),
                        runtime_name=spec.runtime_name, runtime=spec.runtime, prompt=spec.request.prompt,
                        resume=spec.request.resume, model=spec.request.model, read_only=spec.request.read_only,
                        limits=spec.limits, work=work)
        resources = _resources(self.settings, work.run_on)
        try:
            client = self.client()
        except Exception as exc:  # noqa: BLE001
            return _lost(f"the Dask scheduler at {self.settings.scheduler} cannot be reached: {exc}")
        inbox: queue.Queue = queue.Queue()
        self._inboxes[spec.attempt] = inbox
        stream = _Stream(spec)
        try:
            stop_event = Event(stop_event_name(spec.attempt), client=client)
            future = client.submit(run_remote_turn, job, key=f"baton-{spec.attempt}", resources=resources,
                                   pure=False, retries=0)
        except Exception as exc:  # noqa: BLE001
            self._inboxes.pop(spec.attempt, None)
            return _lost(f"the Dask scheduler at {self.settings.scheduler} did not take the run: {exc}")
        try:
            return self._follow(spec, client, future, stop_event, inbox, stream)
        finally:
            self._inboxes.pop(spec.attempt, None)
            started_event = Event(started_event_name(spec.attempt), client=client)
            for undo in (stop_event.clear, started_event.clear, future.release):
                try:
                    undo()
                except Exception:  # noqa: BLE001 - the connection may be gone by now
                    pass

    def _follow(self, spec: TurnSpec, client: Client, future, stop_event, inbox: queue.Queue,
                stream: _Stream) -> TurnResult:
        asked: float | None = None
        started: float | None = None
        unreachable: float | None = None
        submitted = time.monotonic()
        noticed = False
        while True:
            try:
                stream.take(inbox.get(timeout=0.1))
                for _ in range(1000):  # what came meanwhile, but never so much that a stop waits
                    stream.take(inbox.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            if stream.worker is not None and started is None:
                started = now
            if future.done():
                break
            if started is None and not noticed and now - submitted > WAITING_NOTICE:
                noticed = True
                wanted = _resources(self.settings, spec.remote.run_on if spec.remote else None)
                spec.say("waiting for a Dask worker with "
                         + ", ".join(f"{name}={amount:g}" for name, amount in sorted(wanted.items())) + " free")
            if spec.stop.is_set() and started is None:
                # Not started on a worker yet: nothing to save. If it starts meanwhile, its worker
                # sees the key released and stops the CLI itself.
                future.cancel()
                return TurnResult(outcome=ProcessOutcome(None, spec.stop.reason or "stopped", 0.0, 0))
            if spec.stop.is_set() and asked is None:
                asked = now
                try:
                    stop_event.set()
                except Exception:  # noqa: BLE001 - cancelled below after the wait anyway
                    pass
            if asked is not None and now - asked > STOP_WAIT:
                future.cancel()
                return TurnResult(outcome=ProcessOutcome(None, spec.stop.reason or "stopped", 0.0, 0),
                                  worker=stream.worker,
                                  error=f"the worker {stream.worker or '(none yet)'} did not report back within "
                                        f"{STOP_WAIT:g}s of the stop")
            if client.status not in ("running", "connecting"):
                unreachable = unreachable or now
                if now - unreachable > self.settings.connect_timeout:
                    future.cancel()
                    return _lost(f"lost the connection to the Dask scheduler at {self.settings.scheduler}",
                                 stream.worker)
            else:
                unreachable = None
            if started is not None and now - started > spec.limits.timeout + DEADLINE_SLACK:
                future.cancel()
                return _lost(f"the worker {stream.worker} did not end the turn {spec.limits.timeout}s after it "
                             "started (its own limit)", stream.worker)
        if future.status == "error":
            exc = future.exception()
            return _lost(_lost_reason(exc, stream.worker), stream.worker)
        if future.status != "finished":
            return _lost(f"the Dask scheduler dropped the run ({future.status})", stream.worker)
        result: dict = future.result()
        if result.get("duplicate"):
            # Dask started the turn again elsewhere (e.g. its first worker was retired gracefully,
            # which allowed-failures does not count): one attempt never runs twice.
            return _lost(f"the Dask scheduler started the turn a second time, on {result.get('worker')} "
                         "(its first worker left)", stream.worker)
        stream.finish(result.get("events") or [], inbox)
        for path, text in ((spec.raw_log, result.get("raw")), (spec.stderr_log, result.get("stderr"))):
            if text:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(text)
        if result.get("failure") and spec.summary.failure is None:
            reason, message = result["failure"]
            spec.summary.failure = (reason, message)
        usage = result.get("usage")
        outcome = ProcessOutcome(exit_code=result.get("exit_code"), stopped=result.get("stopped"),
                                 duration=float(result.get("duration") or 0.0), pid=0)
        if outcome.stopped in ("stopped", "released", "scheduler unreachable"):
            if not spec.stop.is_set():  # the worker stopped it itself: nobody was waiting, as it saw
                return TurnResult(outcome=outcome, head=result.get("head"), worker=result.get("worker"),
                                  lost=f"the worker {result.get('worker')} stopped the turn by itself "
                                       f"({outcome.stopped})")
            outcome.stopped = spec.stop.reason
        return TurnResult(outcome=outcome, usage=_event_or_none(usage),
                          head=result.get("head"), worker=result.get("worker") or stream.worker,
                          error=redact(result["error"]) if result.get("error") else None,
                          moved=[str(m)[:500] for m in list(result.get("moved") or [])[:50]])


class _Stream:
    """The attempt's events, in the order the worker numbered them, each logged once: live as
    they come, and from the result for any the live stream lost."""

    def __init__(self, spec: TurnSpec) -> None:
        self.spec = spec
        self.next = 1
        self.waiting: dict[int, dict] = {}
        self.worker: str | None = None

    def take(self, message: dict) -> None:
        if message.get("started"):
            self.worker = str(message.get("box") or message.get("worker") or "?")  # log_event sets "worker" to the address
            self.spec.on_start(None, self.worker)
            return
        n = message.get("n")
        if isinstance(n, int) and n >= self.next:
            self.waiting[n] = message["event"]
            self._flush()

    def _flush(self) -> None:
        while self.next in self.waiting:
            dumped = self.waiting.pop(self.next)
            self.next += 1
            try:
                ev = AgentEvent.model_validate(dumped)
            except ValueError:
                log.warning("attempt event %d is not an event; skipped", self.next - 1)
                continue
            self.spec.record(ev)

    def finish(self, events: list, inbox: queue.Queue) -> None:
        """After the result: the live events still in flight, then those only the result has
        (the worker's last ones, numbered)."""
        numbered = {n: dumped for n, dumped in events if isinstance(n, int)}
        last = max(numbered, default=0)
        deadline = time.monotonic() + EVENTS_WAIT
        while self.next <= last and time.monotonic() < deadline:
            try:
                self.take(inbox.get(timeout=0.05))
            except queue.Empty:
                pass
        for n, dumped in numbered.items():
            if n >= self.next:
                self.waiting.setdefault(n, dumped)
        if self.waiting and self.next not in self.waiting:
            self.next = min(self.waiting)  # events neither the stream nor the result kept: gone
        self._flush()


def _resources(settings: DaskConfig, run_on: str | None) -> dict[str, float]:
    """What one run holds on its worker: the configured amounts, and one of the pinned box's."""
    resources = dict(settings.resources)
    if run_on:
        resources[run_on] = resources.get(run_on, 0) + 1.0
    return resources


def _event_or_none(dumped: Any) -> AgentEvent | None:
    try:
        return AgentEvent.model_validate(dumped) if dumped else None
    except ValueError:
        return None


def _lost(message: str, worker: str | None = None) -> TurnResult:
    return TurnResult(outcome=ProcessOutcome(None, None, 0.0, 0), worker=worker, lost=message)


def _lost_reason(exc: BaseException | None, worker: str | None) -> str:
    name = type(exc).__name__ if exc is not None else "unknown"
    if name == "KilledWorker":
        return (f"the worker{f' {worker}' if worker else ''} running the turn died or stopped answering "
                "(crashed, killed, or frozen past the scheduler's worker-ttl)")
    return f"the run failed on the Dask side ({name}: {str(exc)[:300]})"


def _allowed_failures(dask_scheduler) -> int:
    return int(dask_scheduler.allowed_failures)


def _takes_n_workers(client: Client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters
