"""Browser sessions of the dashboard and the throttle on failed sign-ins.

A session is a random id (never derived from the token) kept in memory with its expiry: a
restart or DELETE /api/session ends it, and it never outlives its lifetime. Failed sign-ins are
counted per client address and in total, so neither one address nor many can guess quickly.
Only new wrong values count: a client repeating one stale token is not guessing, and must not
lock everyone else on its address (on this machine, everyone) out.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class SessionStore:
    def __init__(self, lifetime_seconds: float, max_sessions: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime_seconds
        self._max = max_sessions
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def create(self) -> str:
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._drop_expired()
            while len(self._expiry) >= self._max:  # bounded: the oldest session goes first
                self._expiry.popitem(last=False)
            self._expiry[session_id] = self._clock() + self.lifetime
        return session_id

    def valid(self, session_id: str) -> bool:
        with self._lock:
            expiry = self._expiry.get(session_id)
            if expiry is None:
                return False
            if expiry <= self._clock():
                del self._expiry[session_id]
                return False
            return True

    def revoke(self, session_id: str) -> None:
        with self._lock:
            self._expiry.pop(session_id, None)

    def _drop_expired(self) -> None:
        now = self._clock()
        for session_id in [s for s, expiry in self._expiry.items() if expiry <= now]:
            del self._expiry[session_id]


class LoginThrottle:
    """At most `per_address` failures per `window` seconds from one address and `overall` from
    all addresses together; past that, every attempt (even a correct one) waits."""

    def __init__(self, per_address: int = 5, overall: int = 50, window: float = 60.0,
                 max_addresses: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_address = per_address
        self._overall = overall
        self._window = window
        self._max_addresses = max_addresses
        self._clock = clock
        # Per address: (time, keyed digest of the wrong value) of each failure in the window.
        self._by_address: OrderedDict[str, deque[tuple[float, bytes]]] = OrderedDict()
        self._all: deque[tuple[float, bytes]] = deque()
        self._key = secrets.token_bytes(32)  # wrong values are compared by keyed digest, never kept
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int:
        """Seconds to wait before `address` may try again; 0 when it may try now."""
        with self._lock:
            now = self._clock()
            waits = [self._wait(self._all, self._overall, now)]
            mine = self._by_address.get(address)
            if mine is not None:
                waits.append(self._wait(mine, self._per_address, now))
            return max(waits)

    def failed(self, address: str, attempt: str) -> None:
        """`attempt` is the wrong value given; the same one again within the window is not a new
        failure."""
        digest = hmac.new(self._key, attempt.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        with self._lock:
            now = self._clock()
            mine = self._by_address.pop(address, None) or deque()
            self._by_address[address] = mine  # most recent last
            self._expire(mine, now)
            if not any(hmac.compare_digest(digest, seen) for _, seen in mine):
                mine.append((now, digest))
                self._all.append((now, digest))
            while len(self._by_address) > self._max_addresses:
                self._by_address.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._by_address.pop(address, None)

    def _expire(self, failures: deque[tuple[float, bytes]], now: float) -> None:
        while failures and failures[0][0] <= now - self._window:
            failures.popleft()

    def _wait(self, failures: deque[tuple[float, bytes]], limit: int, now: float) -> int:
        self._expire(failures, now)
        if len(failures) < limit:
            return 0
        # Locked until the oldest failure that still counts leaves the window.
        return max(1, math.ceil(failures[-limit][0] + self._window - now))
