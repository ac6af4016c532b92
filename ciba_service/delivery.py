"""Bounded, redirect-free retrying POSTs: ping and push delivery to the client's notification
endpoint (CIBA 10.2, 10.3), and the webhook that carries the approval link to the user.

The endpoint receives ``auth_req_id`` (ping) or the whole token response (push) with the
client's ``client_notification_token`` as bearer. Both senders share one policy,
:class:`RetryingPoster`: redirects are never followed (a 3xx could send a token or an approval
link to a third party); 4xx answers are final (401/403 mean the registration is wrong, and
retrying a refusal only hammers the receiver); transient failures (connection errors, timeouts,
5xx, 429) are retried with exponential backoff a bounded number of times; nothing is retried
after a 2xx (the receiver must not act twice on one decision).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["DeliveryResult", "NotificationSender", "RetryingPoster"]

log = logging.getLogger("ciba_service.delivery")

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
    ) -> DeliveryResult:
        """POST ``payload`` to ``url`` until a 2xx, a final refusal or the last attempt; never
        raises for HTTP or transport failures. ``what`` and ``shown_url`` name the delivery in
        logs (``shown_url`` for URLs that hold a secret)."""
        shown = shown_url or url
        delay = self._backoff
        status: int | None = None
        reason = ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._http.post(
                    url, json=payload, headers=headers or {}, follow_redirects=False, timeout=self._timeout
                )
            except httpx.TransportError as exc:
                status, reason = None, type(exc).__name__
            else:
                status = response.status_code
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
        return self.post(url, payload=payload, headers={"Authorization": f"Bearer {bearer}"})
