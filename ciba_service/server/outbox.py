"""The outbox: an acknowledged request always reaches its user.

The user's notice (the approval link) is written to the store in the same atomic step as the
request it is for (:meth:`~ciba_service.store.base.RequestStore.add_request` with ``outbox=``),
already leased to the instance that answers the agent: that instance sends it right after
answering (:meth:`Outbox.send`, off the request path) and nobody else may send it before the lease
runs out. The entry is deleted only when the notifier confirms delivery
(:meth:`~ciba_service.server.notify.Notifier.send`).

If the instance dies after answering (``kill -9``, a crash, a lost webhook queue) or the notifier
fails, the entry stays. The periodic sweep of any instance sharing the store (:meth:`Outbox.sweep`)
claims entries whose lease has run out (one claimer at a time: a compare-and-set with a new
lease) and sends them again, as long as their request is still pending and unexpired; entries of
decided or expired requests are dropped by the claim. So the user is told exactly once in normal
operation and at least once after a crash (twice only when a sender died, or outlived its lease,
after delivering but before recording it).

With a notifier that tells nobody (``notifier = "none"``, :attr:`Notifier.delivers` False) there is
nothing to deliver, so nothing to keep: no entry is written (:meth:`Outbox.entry` gives None) and
nothing is sent or deleted after answering. With any other notifier the entry is written in the
request's own transaction, as above.
"""

from __future__ import annotations

import logging

from ciba_service.core.model import BackchannelRequest, OutboxEntry
from ciba_service.server.context import ServerContext
from ciba_service.server.notify import ApprovalNotice
from ciba_service.store import StoreUnavailable

__all__ = ["Outbox"]

log = logging.getLogger("ciba_service.server.outbox")


class Outbox:
    """Writes, sends and re-sends the users' notices. ``batch`` bounds how many entries one
    sweep claims."""

    def __init__(self, context: ServerContext, *, batch: int = 100) -> None:
        self._context = context
        self._batch = batch

    @property
    def lease(self) -> int:
        """Seconds a sender holds an entry: longer than a delivery can take (the webhook's retries
        included), so a live sender is never doubled; after it, another sender takes over."""
        return self._context.settings.notice_lease

    @property
    def needed(self) -> bool:
        """Whether the notifier delivers anything, so notices must be kept until it has."""
        return self._context.notifier.delivers

    def entry(self, request: BackchannelRequest, notice: ApprovalNotice) -> OutboxEntry | None:
        """The outbox entry to store with ``request``, leased to this instance (which sends it
        right after answering, see :meth:`send`); None when the notifier tells nobody."""
        if not self.needed:
            return None
        now = self._context.now()
        return OutboxEntry(
            request_id=request.request_id,
            # Its fields are flat (strings, numbers, a list of strings): a shallow copy will do.
            notice={**vars(notice), "actions": list(notice.actions)},
            created_at=now,
            expires_at=request.expires_at,
            claimed_until=now + self.lease,
            attempts=1,
        )

    def send(self, request_id: str, notice: ApprovalNotice) -> None:
        """Hand a notice this instance holds the lease of to the notifier; the entry is deleted
        when the notifier confirms delivery. Never raises: an entry not confirmed is sent again
        by a sweep once its lease has run out. With a notifier that tells nobody, nothing: no
        entry was written."""
        if not self.needed:
            return
        try:
            self._context.notifier.send(notice, lambda: self._delivered(request_id))
        except Exception:  # a notifier bug must not lose the notice: the sweep retries it
            log.exception("notice for request %s not delivered; it is retried after its lease", request_id)

    def _delivered(self, request_id: str) -> None:
        try:
            self._context.store.mark_outbox_delivered(request_id)
        except StoreUnavailable as exc:
            # Delivered, but not recorded: the notice will be sent again after the lease
            # (at least once; the store being down is the rare case where the user sees it twice).
            log.error("notice for request %s delivered, but the store could not record it: %s", request_id, exc)

    def deliver(self, request_id: str) -> bool:
        """Claim the entry of ``request_id`` and send it; False when there was nothing to claim
        (another sender holds it, it was delivered, or its request is decided or expired)."""
        entry = self._context.store.claim_outbox(request_id, now=self._context.now(), lease=self.lease)
        if entry is None:
            return False
        try:
            notice = ApprovalNotice(**entry.notice)
        except TypeError:
            # Written by a version whose notice had other fields: it can never be sent as it is.
            log.error("outbox entry for request %s is unreadable; dropped", request_id)
            self._context.store.mark_outbox_delivered(request_id)
            return False
        if entry.attempts > 1:
            log.info("re-sending the notice for request %s (attempt %d)", request_id, entry.attempts)
        self.send(request_id, notice)
        return True

    def sweep(self) -> int:
        """Send every entry whose lease has run out (on any instance sharing the store): the
        notices a crashed instance, a failed delivery or a full webhook queue left behind.
        Returns how many were claimed and handed to the notifier."""
        due = self._context.store.outbox_due(now=self._context.now(), limit=self._batch)
        return sum(1 for entry in due if self.deliver(entry.request_id))
