"""Delivering the approval link to the user's decoupled device.

The link is keyed by the approval id, never by the ``auth_req_id`` (only the agent holds
that, and with it the agent could redeem the token; the user device needs neither)."""

from __future__ import annotations

import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from .delivery import DeliveryResult, RetryingPoster

__all__ = ["ApprovalNotice", "ConsoleNotifier", "Notifier", "NullNotifier", "WebhookNotifier"]

log = logging.getLogger("ciba_service.notify")


@dataclass(frozen=True, kw_only=True)
class ApprovalNotice:
    username: str
    client_id: str
    client_name: str
    binding_message: str | None
    actions: list[str]
    approval_url: str
    expires_at: int


class Notifier(ABC):
    @abstractmethod
    def notify(self, notice: ApprovalNotice) -> None:
        """Deliver the notice; never raise (a failed notification leaves the request pending
        until it expires, which the agent sees as ``expired_token``)."""


class NullNotifier(Notifier):
    def notify(self, notice: ApprovalNotice) -> None:
        return None


class ConsoleNotifier(Notifier):
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def notify(self, notice: ApprovalNotice) -> None:
        stream = self._stream or sys.stderr
        lines = [f"[approval] {notice.client_name} asks {notice.username} to approve:"]
        lines += [f"  - {a}" for a in notice.actions]
        if notice.binding_message:
            lines.append(f"  binding message: {notice.binding_message}")
        lines.append(f"  open: {notice.approval_url}")
        print("\n".join(lines), file=stream, flush=True)


class WebhookNotifier(Notifier):
    """POSTs the notice as JSON to a configured URL (a chat or push bridge), under the same retry
    policy as ping/push delivery (:class:`~ciba_service.delivery.RetryingPoster`): connection
    errors, timeouts, 5xx and 429 are retried with backoff; a 2xx, a 4xx or a redirect (never
    followed: it could send the approval link to a third party) ends it.

    ``notify`` only queues the delivery on the notifier's own small thread pool: retries take
    seconds, and run on the web server's shared thread pool (where ``BackgroundTasks`` run
    them) they could starve the endpoints that offload work there."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        client: httpx.Client | None = None,
        attempts: int = 4,
        backoff: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
        executor: Executor | None = None,
    ) -> None:
        self._url = url
        # Chat webhooks often carry their secret in the path: logs name only scheme and host.
        parts = urlsplit(url)
        self._shown_url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"
        self._poster = RetryingPoster(http=client, timeout=timeout, attempts=attempts, backoff=backoff, sleep=sleep)
        self._executor = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="ciba-webhook")

    def notify(self, notice: ApprovalNotice) -> None:
        try:
            self._executor.submit(self.deliver, notice)
        except RuntimeError:  # the pool is shut down (the service is stopping)
            log.warning("webhook %s: not delivered, the notifier is closed", self._shown_url)

    def deliver(self, notice: ApprovalNotice) -> DeliveryResult:
        """Deliver now, on the calling thread, with retries; logs and never raises."""
        payload = {"event": "approval_requested", **asdict(notice)}
        try:
            result = self._poster.post(self._url, payload=payload, what="webhook", shown_url=self._shown_url)
        except Exception:  # never let a notifier bug surface as a failed request
            log.exception("webhook %s failed", self._shown_url)
            return DeliveryResult(delivered=False, attempts=0, status_code=None, reason="error")
        if not result.delivered:
            log.warning(
                "webhook %s: approval link for %s not delivered after %d attempt(s) (%s)",
                self._shown_url,
                notice.username,
                result.attempts,
                result.reason,
            )
        return result

    def close(self, *, wait: bool = True) -> None:
        """Stop taking notices; with ``wait``, finish the queued ones first."""
        self._executor.shutdown(wait=wait)
