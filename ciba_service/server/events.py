"""What the authorization server reports about itself (decisions, deliveries), for metrics.

The server calls an :class:`Events` object; the web layer plugs in Prometheus counters
(``ciba_service.web.metrics``). The default does nothing, so the protocol core has no metrics
dependency and tests need no registry."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Events", "NoEvents"]


class Events(Protocol):
    def decision(self, outcome: str) -> None:
        """A user's decision was recorded: ``approved`` or ``denied``."""

    def delivery(self, mode: str, *, delivered: bool, attempts: int) -> None:
        """A ping/push delivery ended after ``attempts`` attempts (``attempts - 1`` retries)."""


class NoEvents:
    def decision(self, outcome: str) -> None:
        return None

    def delivery(self, mode: str, *, delivered: bool, attempts: int) -> None:
        return None
