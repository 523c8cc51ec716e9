"""ASGI middleware in front of the server's endpoints: an API key and a cap on the request body size.

:class:`Guard` answers, before any endpoint runs:

- 401 (``invalid_api_key``) when the server has an API key and the request's ``Authorization`` header is
  not ``Bearer <key>`` (compared in constant time); ``/health`` stays open so probes need no key;
- 413 (``request_too_large``) when the body is larger than ``max_body_bytes``: refused from the
  ``Content-Length`` header when there is one, else as soon as the received chunks pass the cap (the
  body is buffered up to the cap, then replayed to the app).

Both errors are OpenAI-shaped JSON (``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import json
import secrets


async def send_error(send, status: int, message: str, kind: str, code: str | None) -> None:
    """Send a whole OpenAI-shaped JSON error response on a raw ASGI ``send``."""
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """API key check and body-size cap around an ASGI ``app`` (module docstring)."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, open_paths: tuple[str, ...] = ("/health",)):
        self.app, self.api_key, self.max_body_bytes, self.open_paths = app, api_key, max_body_bytes, open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        if self.api_key and scope.get("path") not in self.open_paths:
            auth = headers.get(b"authorization", b"").decode("latin-1")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not secrets.compare_digest(given.encode(), self.api_key.encode()):
                return await send_error(send, 401, "missing or wrong API key: send the header "
                                        "'Authorization: Bearer <key>' with the key given to appo serve",
                                        "invalid_request_error", "invalid_api_key")
        cap = self.max_body_bytes
        too_large = f"the request body is larger than this server's limit of {cap} bytes (appo serve --max-body-bytes)"
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > cap:
            return await send_error(send, 413, too_large, "invalid_request_error", "request_too_large")
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            size += len(message.get("body", b""))
            if size > cap:
                return await send_error(send, 413, too_large, "invalid_request_error", "request_too_large")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect the endpoints watch for

        return await self.app(scope, replay, send)
