"""Who may use the console: an optional token, and no state change from another origin.

The token is accepted as the password of HTTP basic auth (so a browser asks for it once, with any user name)
or as a bearer token (scripts). Compared in constant time. Without a token the console trusts its network:
it binds to 127.0.0.1 by default for that reason.

Whatever the token, a POST whose ``Origin`` is not this console's own is refused: a page on another site
cannot make an analyst's logged-in browser mark incidents benign (cross-site request forgery). Browsers send
``Origin`` on every POST; a client that sends none (curl) is not a browser and is let through.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from incidents.console.settings import ConsoleSettings

Handler = Callable[[Request], Awaitable[Response]]
OPEN_PATHS = ("/healthz", "/readyz")  # probes need no token: they reveal no incident


def presented_token(authorization: str) -> str | None:
    """The token in an ``Authorization`` header (basic: the password; bearer: the token), or None."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


FRAMING = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def same_origin(request: Request) -> bool:
    """Whether a request's ``Origin`` (when it sends one) is this console: scheme, host and port, compared whole.
    ``Origin: null`` (a sandboxed frame, a file) is another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
    return origin.strip().lower() == own


def host_name(request: Request) -> str:
    """The name in the ``Host`` header, lower case, without the port (``[::1]:8090`` gives ``::1``)."""
    host = request.headers.get("host", "").strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def guard(token: str | None, hosts: frozenset[str] | None = None) -> Callable[[Request, Handler], Awaitable[Response]]:
    """HTTP middleware: 400 for a Host not allowed (DNS rebinding: a hostile name resolved to this console makes
    a browser treat it as that site, Origin and all), 401 without the token (when one is set), 403 for a
    cross-origin POST; every answer carries anti-framing headers (no click-jacking of "mark benign")."""

    async def check(request: Request, call_next: Handler) -> Response:
        response = await _checked(request, call_next)
        response.headers.update(FRAMING)
        return response

    async def _checked(request: Request, call_next: Handler) -> Response:
        if hosts is not None and request.url.path not in OPEN_PATHS and host_name(request) not in hosts:
            return PlainTextResponse(f"refused: host {host_name(request)[:100]!r} is not one this console answers to "
                                     f"(set {ConsoleSettings.describe('allowed_hosts')})", status_code=400)
        if token is not None and request.url.path not in OPEN_PATHS:
            given = presented_token(request.headers.get("authorization", ""))
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                return PlainTextResponse(f"this console needs its token ({ConsoleSettings.describe('token')}): as "
                                         "the basic-auth password or 'Authorization: Bearer TOKEN'", status_code=401,
                                         headers={"WWW-Authenticate": 'Basic realm="kdd console"'})
        if request.method not in ("GET", "HEAD") and not same_origin(request):
            return PlainTextResponse(f"refused: a {request.method} from another origin", status_code=403)
        return await call_next(request)

    return check
