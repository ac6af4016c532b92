"""Delivering the approval link to the user's decoupled device.

The link is keyed by the approval id, never by the ``auth_req_id`` (only the agent holds
that, and with it the agent could redeem the token; the user device needs neither)."""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TextIO

import httpx

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
    """POSTs the notice as JSON to a configured URL (a chat or push bridge)."""

    def __init__(self, url: str, *, timeout: float = 5.0, client: httpx.Client | None = None) -> None:
        self._url = url
        self._timeout = timeout
        self._client = client

    def notify(self, notice: ApprovalNotice) -> None:
        payload = {"event": "approval_requested", **asdict(notice)}
        try:
            if self._client is not None:
                response = self._client.post(self._url, json=payload, timeout=self._timeout)
            else:
                # Redirects not followed: a redirect could send the link to a third party.
                response = httpx.post(self._url, json=payload, timeout=self._timeout, follow_redirects=False)
            if response.status_code >= 300:
                log.warning("webhook %s answered %s", self._url, response.status_code)
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed: %s", self._url, exc)
