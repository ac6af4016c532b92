"""Ping and push delivery to the client's notification endpoint (CIBA 10.2, 10.3).

The endpoint receives ``auth_req_id`` (ping) or the whole token response (push) with the
client's ``client_notification_token`` as bearer. Redirects are never followed (a 3xx could
send a token to a third party); 401/403 mean the client's registration is wrong and are not
retried; transient failures (connection errors, timeouts, 5xx, 429) are retried with
exponential backoff a bounded number of times; nothing is retried after a 2xx.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["DeliveryResult", "NotificationSender"]

log = logging.getLogger("ciba_service.delivery")

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class DeliveryResult:
    delivered: bool
    attempts: int
    status_code: int | None
    reason: str


class NotificationSender:
    def __init__(
        self,
        *,
        http: httpx.Client | None = None,
        timeout: float = 5.0,
        attempts: int = 4,
        backoff: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # Bounded timeouts everywhere; a slow endpoint cannot hold a worker for long.
        self._http = http or httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)
        self._attempts = attempts
        self._backoff = backoff
        self._sleep = sleep

    def send(self, url: str, *, bearer: str, payload: dict[str, Any]) -> DeliveryResult:
        delay = self._backoff
        status: int | None = None
        reason = ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._http.post(
                    url,
                    json=payload,
                    headers={"Authorization": f"Bearer {bearer}"},
                    follow_redirects=False,
                )
            except httpx.TransportError as exc:
                status, reason = None, type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return DeliveryResult(delivered=True, attempts=attempt, status_code=status, reason="ok")
                if status not in _TRANSIENT_STATUS:
                    kind = "redirect not followed" if 300 <= status < 400 else "refused"
                    log.warning("notification to %s %s: HTTP %s", url, kind, status)
                    return DeliveryResult(delivered=False, attempts=attempt, status_code=status, reason=kind)
                reason = f"HTTP {status}"
            log.info("notification to %s attempt %d failed (%s)", url, attempt, reason)
            if attempt < self._attempts:
                self._sleep(delay)
                delay *= 2
        return DeliveryResult(delivered=False, attempts=self._attempts, status_code=status, reason=reason)
