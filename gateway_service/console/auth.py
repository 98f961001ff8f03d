"""Who may use the console: the holder of the gateway's ``--api-key``.

A browser cannot set ``X-API-Key`` on a page load or an EventSource, so after the login
form the key is kept in a cookie: ``HttpOnly`` (no script reads it back), ``SameSite=
Strict`` (no other site's page sends it, so a form elsewhere cannot start a session
here) and ``Secure`` when the page came over HTTPS. The cookie has no ``Path``: the
browser then scopes it to the directory of the login URL, which is the console's root
whatever prefix a reverse proxy serves it under. Scripts may send ``X-API-Key`` instead.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.responses import Response

from gateway_service.http_guard import api_key_valid

COOKIE = "aip_console_key"
#: A week; the key itself does not expire, the operator logs in again after this.
COOKIE_SECONDS = 7 * 24 * 3600


def configured_key(request: Request) -> str | None:
    key: str | None = request.app.state.gateway.settings.api_key
    return key


def allowed(request: Request) -> bool:
    """Whether the request carries the key (always, when none is configured)."""
    expected = configured_key(request)
    if not expected:
        return True
    presented = request.headers.get("x-api-key") or request.cookies.get(COOKIE)
    return api_key_valid(expected, presented)


def require_key(request: Request) -> None:
    """Dependency of the data and action routes: 401 without the key."""
    if not allowed(request):
        raise HTTPException(status_code=401, detail="Invalid or missing API key")


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def remember(response: Response, request: Request, key: str) -> None:
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_SECONDS,
        path=None,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )


def forget(response: Response, request: Request) -> None:
    # set_cookie, not delete_cookie: only set_cookie can leave the Path out, as the
    # login did, and a cookie is replaced only by one of the same path.
    response.set_cookie(
        COOKIE,
        "",
        max_age=0,
        expires=0,
        path=None,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
