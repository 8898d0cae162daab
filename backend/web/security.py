"""Request guards shared by Baton's HTTP servers, as one ASGI middleware.

In order: the Host header must name this machine's loopback or a configured host (stops DNS
rebinding); state-changing requests whose Origin is not this very origin (scheme, host and
port) are refused, so no other local page or port can drive the API from a browser; with a token, every path except the public ones needs
`Authorization: Bearer <token>` (compared in constant time) or, where configured, a cookie
naming a live session (the dashboard's); wrong bearer tokens can be throttled per client
address; request bodies are bounded. Capability paths (the dashboard's tracker tools gateway)
carry their own token, checked by their route, instead of this one: they answer only clients
on a loopback address.
No CORS headers are ever added.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable
from typing import Protocol
from urllib.parse import urlsplit

from fastapi.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
# Sent with every response: no framing (clickjacking), no sniffing, scripts and styles only
# from this origin, no referrer leaking URLs.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_client(address: str) -> bool:
    """Whether a peer address is this machine's loopback (an IPv4-mapped one, as a dual-stack
    socket reports it, included). Names are not addresses: "localhost" here is False."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def split_host_port(value: str) -> tuple[str, int | None]:
    """'example.com:8080' -> ('example.com', 8080); '[::1]' -> ('::1', None)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return "", None
        host, rest = value[1:end], value[end + 1 :]
    elif value.count(":") == 1:
        host, rest = value.split(":", 1)
        rest = ":" + rest
    else:
        host, rest = value, ""
    port = rest[1:] if rest.startswith(":") else ""
    return host, int(port) if port.isascii() and port.isdigit() else None


def host_from_header(value: str) -> str:
    return split_host_port(value)[0]


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _same_origin(origin: str, host_header: str, scheme: str) -> bool:
    parts = urlsplit(origin)
    if parts.scheme != scheme or not parts.hostname:
        return False
    try:
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    host, port = split_host_port(host_header)
    return parts.hostname == host and origin_port == (port or _DEFAULT_PORTS.get(scheme))


class AuthThrottle(Protocol):
    def retry_after(self, address: str) -> int: ...

    def failed(self, address: str, attempt: str) -> None: ...


class BodyTooLarge(HTTPException):
    # An HTTPException so FastAPI's body parsing re-raises it unchanged (-> our error shape).
    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body is larger than {limit} bytes")


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Iterable[str] = (),
        public_paths: Iterable[str] = (),
        public_prefixes: Iterable[str] = (),
        capability_paths: Iterable[str] = (),
        session_cookie: tuple[str, Callable[[str], bool]] | None = None,
        auth_throttle: AuthThrottle | None = None,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._hosts = {host_from_header(h) for h in allowed_hosts if h}
        self._public = set(public_paths)
        self._public_prefixes = tuple(public_prefixes)
        # Exact paths whose route checks a capability token of its own (not this token, nor a
        # session): reachable from loopback clients only, whatever address the server listens on.
        self._capability = frozenset(capability_paths)
        # (name, is_valid): a cookie that stands for the token (the dashboard's browser session);
        # is_valid(value) says whether its value is a live session.
        self._cookie = session_cookie
        # Counts wrong bearer tokens per client address, so the API is no faster a way to guess
        # the token than the sign-in form.
        self._throttle = auth_throttle
        self._max_body = max_body_bytes

    def host_allowed(self, host: str) -> bool:
        return bool(host) and (is_loopback(host) or host in self._hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, code, message, extra = refusal
            await error_response(status, code, message, headers=extra)(scope, receive, _with_headers(send))
            return
        await self.app(scope, self._bounded(receive), _with_headers(send))

    def _refusal(self, scope: Scope, headers: dict[str, str]):
        host = host_from_header(headers.get("host", ""))
        if not self.host_allowed(host):
            return 403, "forbidden_host", "Host header not allowed (add the name to allowed_hosts)", {}
        if scope["method"] not in _SAFE_METHODS and "origin" in headers:
            if not _same_origin(headers["origin"], headers.get("host", ""), scope.get("scheme", "http")):
                return 403, "forbidden_origin", "cross-origin request refused", {}
        capability = scope["path"] in self._capability
        if capability and not loopback_client((scope.get("client") or ("", 0))[0]):
            return 403, "forbidden_client", "this path answers only programs on this machine (loopback)", {}
        if self._token is not None and not capability and not self._is_public(scope["path"]):
            guessing = self._throttle is not None and "authorization" in headers
            address = (scope.get("client") or ("", 0))[0]
            if guessing and (wait := self._throttle.retry_after(address)):
                return 429, "too_many_attempts", f"too many wrong tokens; try again in {wait} s", {"retry-after": str(wait)}
            if not self._authorized(headers):
                if guessing:
                    self._throttle.failed(address, headers["authorization"])
                return 401, "unauthorized", "missing or wrong bearer token", {"www-authenticate": "Bearer"}
        length = headers.get("content-length", "")
        # (A malformed Content-Length never gets here: the HTTP server rejects it.)
        if length.isascii() and length.isdigit() and int(length) > self._max_body:
            return 413, "payload_too_large", f"request body is larger than {self._max_body} bytes", {}
        return None

    def _is_public(self, path: str) -> bool:
        return path in self._public or path.startswith(self._public_prefixes)

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token or b""):
            return True
        if self._cookie is not None:
            name, is_valid = self._cookie
            value = session_cookie_value(headers, name)
            if value and is_valid(value):
                return True
        return False

    def _bounded(self, receive: Receive) -> Receive:
        seen = 0
        limit = self._max_body

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return wrapped


def session_cookie_value(headers: dict[str, str], name: str) -> str | None:
    """The value of cookie `name` in lower-cased request headers, if it is there."""
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return wrapped
