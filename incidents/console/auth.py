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
from urllib.parse import urlsplit

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


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def guard(token: str | None) -> Callable[[Request, Handler], Awaitable[Response]]:
    """HTTP middleware: 401 without the token (when one is set), 403 for a cross-origin POST."""

    async def check(request: Request, call_next: Handler) -> Response:
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
