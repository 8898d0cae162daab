"""The request machinery both tracker clients share: one httpx client, every request counted,
short retries of failures that are worth retrying, and the tracker's rate limits honoured.

Waits are bounded per call: a call never sleeps more than `max_wait` seconds in total; when the
tracker asks for longer, the call fails at once with `RateLimited(retry_after=…)` and the caller
(the sync engine) decides when to come back. Nothing here logs headers, bodies or credentials,
and every message is scrubbed of the credential before it leaves.

`rate_limits` keeps what the latest answer that carried rate-limit headers said (a small dict,
for /api/v1/state): the tracker's own words about its budget, nothing else of the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from .. import __version__
from .base import AuthError, CallCounter, RateLimited, ServerError

log = logging.getLogger(__name__)

TIMEOUT = 20.0
RETRIES = 2  # after the first try: 5xx, refused connections, timeouts
BACKOFF = (0.5, 1.5)  # seconds before retry 1, 2
RATE_LIMIT_RETRIES = 4  # waits for a rate limit within one call (each bounded by max_wait)
DEFAULT_RATE_WAIT = 2.0  # when a limited answer says nothing about when to come back
RATE_HEADERS_MAX = 20  # rate-limit headers kept from one answer
RATE_VALUE_MAX = 200  # characters of each

Sleep = Callable[[float], Awaitable[Any]]


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _epoch(value: str | None) -> float | None:
    """A reset time as epoch seconds: epoch milliseconds (Linear), epoch seconds, or ISO 8601 (Jira)."""
    if not value:
        return None
    number = _number(value)
    if number is not None:
        return number / 1000 if number > 1e11 else number
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds the tracker asks us to wait: Retry-After (seconds or a date), else the reset time."""
    told = headers.get("retry-after")
    if told is not None:
        seconds = _number(told)
        if seconds is None:
            try:
                seconds = parsedate_to_datetime(told).timestamp() - now
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None:
            return max(0.0, seconds)
    reset = _epoch(headers.get("x-ratelimit-requests-reset") or headers.get("x-ratelimit-reset"))
    return max(0.0, reset - now) if reset is not None else None


def _exhausted_until(headers: httpx.Headers, now: float) -> float | None:
    """When the answer says no requests remain in the window: the epoch second it resets."""
    remaining = _number(headers.get("x-ratelimit-requests-remaining") or headers.get("x-ratelimit-remaining"))
    if remaining is None or remaining > 0:
        return None
    reset = _epoch(headers.get("x-ratelimit-requests-reset") or headers.get("x-ratelimit-reset"))
    return reset if reset is not None and reset > now else None


def _rate_header(name: str) -> bool:
    # Linear: X-RateLimit-Requests-*, X-RateLimit-Complexity-*; Jira: X-RateLimit-*, RateLimit-Reason.
    return "ratelimit" in name or name in ("retry-after", "beta-retry-after")


class TrackerHttp:
    """One tracker's HTTP client. `name` is the tracker as people know it ("Linear"); `missing`,
    when set, is why there is no credential: every call then fails with AuthError before
    anything is sent."""

    def __init__(self, *, name: str, base_url: str, counter: CallCounter, headers: dict[str, str] | None = None,
                 auth: httpx.Auth | None = None, secrets: tuple[str, ...] = (), missing: str | None = None,
                 is_rate_limited: Callable[[httpx.Response], bool] | None = None,
                 error_text: Callable[[httpx.Response], str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, max_wait: float = 60.0,
                 sleep: Sleep = asyncio.sleep, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.base_url = base_url
        self.host = urlsplit(base_url).hostname or base_url
        self.counter = counter
        self.max_wait = max(0.0, max_wait)
        self._headers = {"User-Agent": f"baton/{__version__}", "Accept": "application/json", **(headers or {})}
        self._auth = auth
        self._secrets = tuple(s for s in secrets if s)
        self._missing = missing
        self._is_rate_limited = is_rate_limited or (lambda response: response.status_code == 429)
        self._error_text = error_text or (lambda response: "")
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._not_before = 0.0  # the window ran out: no request before this epoch second
        # The latest answer's rate-limit headers: {"at", "status", "limited", "headers"}.
        self.rate_limits: dict[str, Any] | None = None
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _http(self) -> httpx.AsyncClient:
        # A client's connections belong to the event loop that opened them: a caller that runs
        # each step in its own loop (asyncio.run) gets a fresh client rather than dead sockets.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=TIMEOUT, transport=self._transport, headers=self._headers,
                                             auth=self._auth, follow_redirects=False)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()

    async def send(self, operation: str, method: str, url: str, *, json: Any = None,
                   params: dict[str, Any] | None = None, idempotent: bool = True) -> httpx.Response:
        """Send one request, retried as allowed, and return the answer for the caller to read:
        any status below 500 that is not a rate limit. `idempotent=False` (creating a comment)
        retries only failures where the request surely never arrived."""
        if self._missing:
            raise AuthError(self._missing)
        waited = 0.0
        failures = 0
        limited = 0

        async def pause(seconds: float) -> None:
            nonlocal waited
            seconds = max(0.0, min(seconds, self.max_wait - waited))
            waited += seconds
            if seconds:
                await self._sleep(seconds)

        while True:
            ahead = self._not_before - self._clock()
            if ahead > 0:
                if waited + ahead > self.max_wait:
                    raise RateLimited(f"{self.name} rate limit: no requests left until the window resets "
                                      f"in {ahead:.0f} s", retry_after=ahead)
                await pause(ahead)
            self._not_before = 0.0
            self.counter.count(operation)
            try:
                response = await self._http().request(method, url, json=json, params=params)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
                if failures < RETRIES and (idempotent or never_sent):
                    failures += 1
                    log.debug("%s %s: %s, retrying", self.name, operation, type(exc).__name__)
                    await pause(BACKOFF[failures - 1])
                    continue
                raise ServerError(f"cannot reach {self.host}: {self._describe(exc)}") from None
            now = self._clock()
            self._not_before = _exhausted_until(response.headers, now) or 0.0
            limited_now = self._is_rate_limited(response)
            self._remember_rate_limits(response, now, limited_now)
            if limited_now:
                told = retry_after(response.headers, now)
                wait = told if told is not None else DEFAULT_RATE_WAIT * 2 ** limited
                if limited >= RATE_LIMIT_RETRIES or waited + wait > self.max_wait:
                    raise RateLimited(f"{self.name} rate limit: try again in {wait:.0f} s", retry_after=wait)
                limited += 1
                log.debug("%s %s: rate limited, waiting %.1f s", self.name, operation, wait)
                self._not_before = 0.0
                await pause(wait)
                continue
            if response.status_code >= 500:
                told = retry_after(response.headers, now)
                if failures < RETRIES and idempotent and (told is None or waited + told <= self.max_wait):
                    failures += 1
                    log.debug("%s %s: HTTP %s, retrying", self.name, operation, response.status_code)
                    await pause(told if told is not None else BACKOFF[failures - 1])
                    continue
                detail = self.scrub(self._error_text(response))
                raise ServerError(f"{self.name} answered {response.status_code} {response.reason_phrase}"
                                  + (f": {detail}" if detail else ""), retry_after=told)
            return response

    def _remember_rate_limits(self, response: httpx.Response, now: float, limited: bool) -> None:
        """Keep the answer's rate-limit headers; an answer without any leaves the last ones (a
        tracker may send them on some answers only), unless it was itself a rate limit."""
        headers: dict[str, str] = {}
        for name, value in response.headers.items():
            name = name.lower()
            if _rate_header(name) and name not in headers and len(headers) < RATE_HEADERS_MAX:
                headers[name] = self.scrub(value)[:RATE_VALUE_MAX]
        if not headers and not limited:
            return
        at = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.rate_limits = {"at": at, "status": response.status_code, "limited": limited, "headers": headers}

    def _describe(self, exc: httpx.TransportError) -> str:
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {TIMEOUT:.0f} s ({type(exc).__name__})"
        if isinstance(exc, httpx.LocalProtocolError):
            # h11 quotes the offending header value, which may be the credential itself.
            return "the request could not be sent (is the credential a single line?)"
        return self.scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))
