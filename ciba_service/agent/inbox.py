"""The agent's client notification endpoint for ping and push modes (CIBA 10.2, 10.3)."""

from __future__ import annotations

import hmac
import json
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

__all__ = ["NotificationInbox"]


class NotificationInbox:
    """The agent's client notification endpoint for ping and push modes (CIBA 10.2, 10.3).

    ``app`` is an ASGI app to serve at the registered endpoint. Each ``client_notification_token``
    is bound to the one request it was sent with: ``expect(token)`` before sending the request,
    ``bind(token, auth_req_id)`` once /bc-authorize has answered (``CibaAgent.request(inbox=...)``
    does both). A notification counts only if it names a bound ``auth_req_id`` and its bearer is
    the token bound to that ``auth_req_id``, compared in constant time. Anything else is refused
    with 401: a stranger without a token, and also whoever holds the token of *another* request
    (a leaked or reused token must not complete, deny or inject tokens into this one).

    The order problem: the provider notifies only after the user's decision (or the expiry),
    which follows its answer to /bc-authorize, but the agent records the ``auth_req_id`` only
    once that answer has crossed the network, and a fast decision (or an expiry of a second)
    can beat it. So a notification whose bearer is an expected token not yet bound is held
    back, invisible to ``wait``, and answered 204 (the sender must not retry or give up); when
    ``bind`` names the ``auth_req_id`` the held notification is released only if it names the
    same one, and otherwise dropped. Nothing is lost, and nothing unbound is ever accepted.
    """

    # Held-back notifications per expected token; beyond this the endpoint answers 503, which
    # the sender retries, so only someone holding the token could fill it, and nothing is lost.
    MAX_HELD = 8
    # A ping is ~100 bytes and a push (tokens, ID token) a few KiB; a token holder posting more
    # is answered 413 and nothing is stored (stops a bearer holder from filling the agent's memory).
    MAX_BODY = 64 * 1024

    def __init__(self, path: str = "/cb") -> None:
        self.path = path  # where the app listens, e.g. "/ciba/cb" for https://agent/ciba/cb
        self._expected: dict[str, int] = {}  # token -> requests sent with it, not yet bound
        self._held: dict[str, list[tuple[str, dict[str, Any]]]] = {}  # token -> (auth_req_id, body)
        self._bound: dict[str, str] = {}  # auth_req_id -> its client_notification_token
        self._received: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.app = self._build()

    def expect(self, client_notification_token: str) -> None:
        """Register the bearer about to be sent as ``client_notification_token`` (before the
        request is sent); then :meth:`bind` it, or :meth:`forget` it if the request failed."""
        with self._cond:
            self._expected[client_notification_token] = self._expected.get(client_notification_token, 0) + 1

    def bind(self, client_notification_token: str, auth_req_id: str) -> None:
        """Bind an expected token to the ``auth_req_id`` the provider answered: from now on
        only this token completes this request. A notification held back for this token and
        this ``auth_req_id`` is released; one for another ``auth_req_id`` is dropped."""
        with self._cond:
            if self._expected.get(client_notification_token, 0) == 0:
                raise ValueError("bind() needs a token registered with expect() first")
            held = self._held.pop(client_notification_token, [])
            self._take_expectation(client_notification_token)
            self._bound[auth_req_id] = client_notification_token
            keep = []
            for held_id, body in held:
                if held_id == auth_req_id:
                    self._received[auth_req_id] = body
                    self._cond.notify_all()
                elif client_notification_token in self._expected:
                    keep.append((held_id, body))  # may be for another request using this token
            if keep:
                self._held[client_notification_token] = keep

    def forget(self, client_notification_token: str) -> None:
        """Withdraw an expectation whose request was refused (no auth_req_id to bind)."""
        with self._cond:
            self._take_expectation(client_notification_token)

    def _take_expectation(self, token: str) -> None:
        count = self._expected.get(token, 0)
        if count > 1:
            self._expected[token] = count - 1
        elif count == 1:
            del self._expected[token]
            self._held.pop(token, None)  # nobody left to bind what was held for it

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post(self.path)
        async def receive(request: Request) -> Response:
            scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not self._knows(bearer):
                # Before reading the body: a stranger makes us parse nothing.
                return Response(status_code=401)
            raw = await _read_capped(request, self.MAX_BODY)
            if raw is None:
                return Response(status_code=413)
            try:
                body = json.loads(raw)
                auth_req_id = str(body["auth_req_id"])
            except (ValueError, KeyError, TypeError):
                return Response(status_code=400)
            return Response(status_code=self._accept(bearer, auth_req_id, body))

        return app

    def _knows(self, bearer: str) -> bool:
        with self._cond:
            tokens = [*self._expected, *self._bound.values()]
        # every token compared, in constant time, so timing tells nothing about which matched
        return _any_equal(bearer, tokens)

    def _accept(self, bearer: str, auth_req_id: str, body: dict[str, Any]) -> int:
        with self._cond:
            bound = self._bound.get(auth_req_id)
            if bound is not None:
                # CIBA 10.2/10.3: the token authenticates the callback *for this request*;
                # another request's token (leaked by whoever handled that one) is refused.
                if not hmac.compare_digest(bearer.encode(), bound.encode()):
                    return 401
                self._received[auth_req_id] = body
                self._cond.notify_all()
                return 204
            expected = [t for t in self._expected if hmac.compare_digest(bearer.encode(), t.encode())]
            if not expected:
                return 401  # a known token, but not for this auth_req_id, and not awaiting one
            held = self._held.setdefault(expected[0], [])
            if len(held) >= self.MAX_HELD:
                return 503
            held.append((auth_req_id, body))  # released by bind() if the auth_req_id matches
            return 204

    def wait(self, auth_req_id: str, *, timeout: float) -> dict[str, Any]:
        """Block until the notification for ``auth_req_id`` arrives (or TimeoutError).

        A timeout ends the wait for good: the request's token is unbound and a later
        notification for it is refused (401); a ping agent can still poll the token endpoint."""
        with self._cond:
            if not self._cond.wait_for(lambda: auth_req_id in self._received, timeout=timeout):
                # Without this, every timed-out request kept its bound token, and a late
                # notification for it was stored, forever (the inbox grew without bound).
                self._bound.pop(auth_req_id, None)
                self._received.pop(auth_req_id, None)
                raise TimeoutError(f"no notification for the request within {timeout} s")
            self._bound.pop(auth_req_id, None)  # CIBA notifies once; later posts are refused
            return self._received.pop(auth_req_id)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _any_equal(value: str, candidates: list[str]) -> bool:
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(value.encode(), candidate.encode())
    return found
