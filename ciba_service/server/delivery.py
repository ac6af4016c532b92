"""Bounded, redirect-free retrying POSTs: ping and push delivery to the client's notification
endpoint (CIBA 10.2, 10.3), and the webhook that carries the approval link to the user.

The endpoint receives ``auth_req_id`` (ping) or the whole token response (push) with the
client's ``client_notification_token`` as bearer. Both senders share one policy,
:class:`RetryingPoster`: redirects are never followed (a 3xx could send a token or an approval
link to a third party); 4xx answers are final (401/403 mean the registration is wrong, and
retrying a refusal only hammers the receiver); transient failures (connection errors, timeouts,
5xx, 429) are retried with exponential backoff a bounded number of times; nothing is retried
after a 2xx (the receiver must not act twice on one decision).

The answer is judged on its status line alone: the body is never read (see
:meth:`RetryingPoster.post`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["DeliveryResult", "NotificationSender", "RetryingPoster"]

log = logging.getLogger("ciba_service.server.delivery")

# httpx logs every request at INFO on the "httpx" logger, full URL included ("HTTP Request: POST
# https://hooks.example.test/ciba/<secret> ..."): chat webhooks carry their secret in the path, and
# ping/push endpoints can carry tokens there too. Stops that leak into the service's logs: unless
# the operator configured the "httpx" logger themselves, only its warnings get through.
_httpx_log = logging.getLogger("httpx")
if _httpx_log.level == logging.NOTSET:
    _httpx_log.setLevel(logging.WARNING)

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class DeliveryResult:
    delivered: bool
    attempts: int
    status_code: int | None
    reason: str


class RetryingPoster:
    """POSTs JSON under the retry policy of this module (see its docstring); the one
    implementation behind ping/push delivery and the webhook notifier."""

    def __init__(
        self,
        *,
        http: httpx.Client | None = None,
        timeout: float = 5.0,
        attempts: int = 4,
        backoff: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # Bounded timeouts everywhere, also on a caller's client: a slow endpoint cannot hold
        # a worker for long.
        self._timeout = httpx.Timeout(timeout)
        self._http = http or httpx.Client(timeout=self._timeout, follow_redirects=False)
        self._attempts = attempts
        self._backoff = backoff
        self._sleep = sleep

    def post(
        self,
        url: str,
        *,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
        what: str = "notification",
        shown_url: str | None = None,
        stale: Callable[[], bool] | None = None,
    ) -> DeliveryResult:
        """POST ``payload`` to ``url`` until a 2xx, a final refusal or the last attempt; never
        raises for HTTP or transport failures. ``what`` and ``shown_url`` name the delivery in
        logs (``shown_url`` for URLs that hold a secret). ``stale`` is asked before each attempt:
        once it answers true (the notice expired, the service is stopping) nothing more is sent
        and the result's reason is ``"stale"``."""
        shown = shown_url or url
        delay = self._backoff
        status: int | None = None
        reason = ""
        for attempt in range(1, self._attempts + 1):
            if stale is not None and stale():
                # Stops an approval link from reaching the user after its request expired.
                log.info("%s to %s: stopped before attempt %d, no longer wanted", what, shown, attempt)
                return DeliveryResult(delivered=False, attempts=attempt - 1, status_code=status, reason="stale")
            status = None
            try:
                # Streamed, and closed as soon as the status line and headers are in: the body is
                # never read. That stops two failures: (1) a 2xx followed by a connection dropped
                # mid-body was a TransportError, retried, so the receiver acted twice; (2) httpx
                # timeouts bound each read, not the whole response, so a body dripped a byte at a
                # time held this worker indefinitely. What remains: a peer dripping the *headers*
                # byte by byte is still bounded only per read (``timeout`` per byte), and in
                # total only by h11's cap on the header size (16 KiB).
                with self._http.stream(
                    "POST", url, json=payload, headers=headers or {}, follow_redirects=False, timeout=self._timeout
                ) as response:
                    status = response.status_code
            except httpx.TransportError as exc:
                if status is None:
                    reason = type(exc).__name__
                # else: the status arrived, and only closing the connection failed: the answer stands
            if status is not None:
                if 200 <= status < 300:
                    return DeliveryResult(delivered=True, attempts=attempt, status_code=status, reason="ok")
                if status not in _TRANSIENT_STATUS:
                    kind = "redirect not followed" if 300 <= status < 400 else "refused"
                    log.warning("%s to %s %s: HTTP %s", what, shown, kind, status)
                    return DeliveryResult(delivered=False, attempts=attempt, status_code=status, reason=kind)
                reason = f"HTTP {status}"
            log.info("%s to %s attempt %d failed (%s)", what, shown, attempt, reason)
            if attempt < self._attempts:
                self._sleep(delay)
                delay *= 2
        return DeliveryResult(delivered=False, attempts=self._attempts, status_code=status, reason=reason)


class NotificationSender(RetryingPoster):
    """Ping and push to a client's notification endpoint, the client_notification_token as bearer."""

    def send(self, url: str, *, bearer: str, payload: dict[str, Any]) -> DeliveryResult:
        # Logs name scheme and host only: a client's notification endpoint may carry a secret
        # in its path, and logs travel further than the client registry.
        return self.post(url, payload=payload, headers={"Authorization": f"Bearer {bearer}"}, shown_url=shown(url))


def shown(url: str) -> str:
    """``url`` as logs may show it: scheme and host, no credentials, path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"
