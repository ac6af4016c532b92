"""Wiring: settings in, a ready :class:`Provider` and ASGI app out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ciba_service.config import ConfigError, Settings, unauthenticatable_clients
from ciba_service.server.context import ServerContext
from ciba_service.server.embedded import EmbeddedIssuer
from ciba_service.server.issuer import Issuer
from ciba_service.server.keycloak import KeycloakIssuer
from ciba_service.server.notify import ConsoleNotifier, Notifier, NullNotifier, WebhookNotifier
from ciba_service.server.provider import Provider
from ciba_service.server.tokens import SigningKey
from ciba_service.store import RedisStore, SQLiteStore, Store

__all__ = ["build_notifier", "build_provider", "build_store"]

log = logging.getLogger("ciba_service")


def build_notifier(settings: Settings) -> Notifier:
    if settings.notifier == "webhook":
        return WebhookNotifier(settings.webhook_url, timeout=settings.webhook_timeout)
    if settings.notifier == "none":
        return NullNotifier()
    return ConsoleNotifier()


def build_store(settings: Settings, *, clock: Callable[[], float] = time.time) -> Store:
    if settings.store == "redis" and settings.redis_url:
        # A pending request outlives its expiry by the token lifetime plus an hour, so a sweep
        # after an outage still finds it; a decided one never expires.
        store = RedisStore.from_url(
            settings.redis_url,
            prefix=settings.redis_prefix,
            clock=clock,
            retain_after_expiry=settings.access_token_lifetime + 3600,
        )
        try:
            for warning in store.check_server():
                log.warning("%s", warning)
        except BaseException:
            store.close()
            raise
        return store
    return SQLiteStore(settings.data_dir / "ciba.sqlite3")


def build_provider(
    settings: Settings,
    *,
    store: Store | None = None,
    notifier: Notifier | None = None,
    clock: Callable[[], float] = time.time,
) -> Provider:
    # A client that can never authenticate is a configuration mistake: said at start, before
    # anything is created.
    refused = unauthenticatable_clients(settings)
    if refused:
        raise ConfigError("; ".join(refused))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The directory holds the signing key, users, passkeys and receipts: owner only.
    settings.data_dir.chmod(0o700)
    context = ServerContext(
        settings=settings,
        store=store or build_store(settings, clock=clock),
        # Instances sharing a Redis store must share this file too (README, Scaling out): the
        # private key never goes to Redis.
        signing_key=SigningKey.load_or_create(settings.data_dir / "signing-key.pem"),
        notifier=notifier or build_notifier(settings),
        clock=clock,
    )
    issuer: Issuer = KeycloakIssuer(context) if settings.mode == "keycloak" else EmbeddedIssuer(context)
    return Provider(context=context, issuer=issuer)
