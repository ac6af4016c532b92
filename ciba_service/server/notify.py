"""Delivering the approval link to the user's decoupled device.

The link is keyed by the approval id, never by the ``auth_req_id`` (only the agent holds
that, and with it the agent could redeem the token; the user device needs neither)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TextIO

import httpx

from ciba_service.server.delivery import DeliveryResult, RetryingPoster, shown

__all__ = ["ApprovalNotice", "ConsoleNotifier", "Notifier", "NullNotifier", "WebhookNotifier"]

log = logging.getLogger("ciba_service.server.notify")


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
    # Whether this notifier tells anyone anything. A notifier that never delivers (``none``)
    # needs no outbox: the service then writes no entry at all (server/outbox.py).
    delivers = True

    @abstractmethod
    def notify(self, notice: ApprovalNotice) -> None:
        """Deliver the notice; never raise (a failed notification leaves the request pending
        until it expires, which the agent sees as ``expired_token``)."""

    def send(self, notice: ApprovalNotice, on_delivered: Callable[[], None]) -> None:
        """Deliver the notice and call ``on_delivered`` once it is delivered; never call it when
        delivery failed (the service's outbox then sends the notice again later). By default:
        :meth:`notify`, then ``on_delivered`` once it returned. A notifier that delivers later
        (a queue) overrides this to call ``on_delivered`` when it really has."""
        self.notify(notice)
        on_delivered()

    def close(self, *, wait: bool = True) -> None:
        """Release what the notifier holds (the service is stopping); nothing by default.
        With ``wait=False`` it must not wait for pending deliveries."""
        return None


class NullNotifier(Notifier):
    delivers = False

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
    policy as ping/push delivery (:class:`~ciba_service.server.delivery.RetryingPoster`): connection
    errors, timeouts, 5xx and 429 are retried with backoff; a 2xx, a 4xx or a redirect (never
    followed: it could send the approval link to a third party) ends it.

    ``notify`` only queues the delivery on the notifier's own small thread pool: retries take
    seconds, and run on the web server's shared thread pool (where ``BackgroundTasks`` run
    them) they could starve the endpoints that offload work there. The queue is bounded
    (``max_queued``): beyond it a notice is dropped with a warning (the service's outbox sends
    it again after its lease, see :mod:`ciba_service.server.outbox`). A notice whose
    ``expires_at`` has passed is not sent, nor retried any more. :meth:`send` reports a delivery
    only after the webhook accepted it."""

    # A client looping on /bc-authorize against a hanging bridge (each notice can take ~22 s of
    # attempts) would otherwise grow the queue, and memory, without bound.
    MAX_QUEUED = 100

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
        max_queued: int = MAX_QUEUED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        # Chat webhooks often carry their secret in the path: logs name only scheme and host.
        self._shown_url = shown(url)
        self._poster = RetryingPoster(http=client, timeout=timeout, attempts=attempts, backoff=backoff, sleep=sleep)
        self._executor = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="ciba-webhook")
        self._max_queued = max_queued
        self._clock = clock
        self._lock = threading.Lock()
        self._queued = 0  # submitted, not yet started nor cancelled
        self._stopping = False  # close(wait=False): in-flight deliveries stop retrying

    def notify(self, notice: ApprovalNotice) -> None:
        self._submit(notice, None)

    def send(self, notice: ApprovalNotice, on_delivered: Callable[[], None]) -> None:
        """Queue the delivery; ``on_delivered`` runs on the notifier's thread once the webhook
        accepted the notice (after any retries), never when it was dropped or failed."""
        self._submit(notice, on_delivered)

    def _submit(self, notice: ApprovalNotice, on_delivered: Callable[[], None] | None) -> None:
        with self._lock:
            if self._queued >= self._max_queued:
                log.warning(
                    "webhook %s: approval link for %s dropped, %d notices already queued",
                    self._shown_url,
                    notice.username,
                    self._queued,
                )
                return
            self._queued += 1
        started = threading.Event()

        def run() -> DeliveryResult:
            self._dequeue(started)
            result = self.deliver(notice)
            if result.delivered and on_delivered is not None:
                try:
                    on_delivered()
                except Exception:  # e.g. the store is down: the notice may be sent again later
                    log.exception("webhook %s: delivered, but recording the delivery failed", self._shown_url)
            return result

        try:
            future = self._executor.submit(run)
        except RuntimeError:  # the pool is shut down (the service is stopping)
            self._dequeue(started)
            log.warning("webhook %s: not delivered, the notifier is closed", self._shown_url)
            return
        future.add_done_callback(lambda _: self._dequeue(started))  # also when cancelled by close()

    def _dequeue(self, started: threading.Event) -> None:
        with self._lock:
            if not started.is_set():
                started.set()
                self._queued -= 1

    def _stale(self, notice: ApprovalNotice) -> bool:
        # Stops approval links from reaching the user after the request expired (a long queue,
        # a slow bridge), and retries from outliving close(wait=False).
        return self._stopping or notice.expires_at <= self._clock()

    def deliver(self, notice: ApprovalNotice) -> DeliveryResult:
        """Deliver now, on the calling thread, with retries; logs and never raises."""
        payload = {"event": "approval_requested", **asdict(notice)}
        try:
            result = self._poster.post(
                self._url,
                payload=payload,
                what="webhook",
                shown_url=self._shown_url,
                stale=lambda: self._stale(notice),
            )
        except Exception:  # never let a notifier bug surface as a failed request
            log.exception("webhook %s failed", self._shown_url)
            return DeliveryResult(delivered=False, attempts=0, status_code=None, reason="error")
        if result.reason == "stale":
            log.warning(
                "webhook %s: approval link for %s not delivered, the request expired or the notifier closed",
                self._shown_url,
                notice.username,
            )
        elif not result.delivered:
            log.warning(
                "webhook %s: approval link for %s not delivered after %d attempt(s) (%s)",
                self._shown_url,
                notice.username,
                result.attempts,
                result.reason,
            )
        return result

    def close(self, *, wait: bool = True) -> None:
        """Stop taking notices; with ``wait``, finish the queued ones first. Without, drop the
        queued ones and stop retrying those in flight (each ends within one request timeout):
        a shutdown does not wait out a backlog against a hanging bridge."""
        if not wait:
            self._stopping = True
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
