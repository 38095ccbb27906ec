"""Refusals, the bearer token, response headers and the images-folder boundary.

Every refusal is a `Refusal`: an HTTP status and one sentence, sent as
``{"error": "..."}``, so a client (or the page) can show it as it is.
"""

from __future__ import annotations

import secrets
from pathlib import Path

__all__ = ["Refusal", "SecurityHeaders", "check_token", "file_inside"]


class Refusal(Exception):
    """A request the server will not answer: a 4xx status and one sentence."""

    def __init__(self, status: int, sentence: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence
        self.headers = headers or {}


def check_token(authorization: str | None, token: str | None) -> None:
    """Raise a 401 Refusal unless `authorization` is ``Bearer <token>`` (no token: open).
    The comparison takes the same time wherever the first difference is."""
    if token is None:
        return
    challenge = {"WWW-Authenticate": 'Bearer realm="wenlan"'}
    if not authorization:
        raise Refusal(401, "this server needs a bearer token: send the header Authorization: Bearer TOKEN.", challenge)
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8")):
        raise Refusal(401, "the bearer token in the Authorization header is not this server's token.", challenge)


def file_inside(root: Path, relative: str) -> Path | None:
    """`root / relative` when it resolves (symbolic links followed) to a file strictly
    inside `root`; None for anything that would leave it (``..``, absolute paths, links
    pointing out)."""
    base = root.resolve()
    try:
        candidate = (base / relative).resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte
        return None
    if base not in candidate.parents or not candidate.is_file():
        return None
    return candidate


# A page that loads nothing from elsewhere and cannot be framed; answers are not sniffed.
_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
     b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in _HEADERS if name not in names]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)
