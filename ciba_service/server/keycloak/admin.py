"""Keycloak's admin API, read as the companion's service account: users and their passkeys
(``webauthn-passwordless`` credentials), mirrored into the local store so a user approves with
the passkey they already log in with."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ciba_service.core.model import Passkey, User
from ciba_service.core.security import b64url_decode_lenient
from ciba_service.server.context import ServerContext

__all__ = ["PASSKEY_CREDENTIAL_TYPE", "KeycloakAdmin", "UserMirror", "passkey_from_keycloak"]

log = logging.getLogger("ciba_service.server.keycloak")

PASSKEY_CREDENTIAL_TYPE = "webauthn-passwordless"


def _b64_any(value: str) -> bytes:
    """Keycloak stores ``credentialId`` in standard base64 and the COSE key in base64url."""
    if "-" in value or "_" in value:
        return b64url_decode_lenient(value)
    return base64.b64decode(value + "=" * (-len(value) % 4))


def passkey_from_keycloak(credential: Mapping[str, Any], *, user_id: str) -> Passkey | None:
    """Convert one admin-API credential representation; None if it is not a usable passkey."""
    if credential.get("type") != PASSKEY_CREDENTIAL_TYPE:
        return None
    try:
        data = json.loads(str(credential.get("credentialData") or "{}"))
        return Passkey(
            credential_id=_b64_any(str(data["credentialId"])),
            user_id=user_id,
            public_key=_b64_any(str(data["credentialPublicKey"])),
            sign_count=int(data.get("counter", 0)),
            transports=[],
            created_at=int(credential.get("createdDate", 0)) // 1000,
        )
    except (KeyError, ValueError, TypeError, binascii.Error):
        log.warning("unreadable WebAuthn credential %s of user %s", credential.get("id"), user_id)
        return None


class KeycloakAdmin:
    """The two admin-API reads we need, as the companion's service account.

    We talk to the admin API with httpx rather than python-keycloak: python-keycloak's
    synchronous client is built on ``requests`` (a second HTTP stack that respx cannot stub)
    and its asynchronous one would pull the protocol core onto asyncio, for two GETs.
    """

    def __init__(
        self,
        *,
        base_url: str,
        realm: str,
        client_id: str,
        client_secret: str,
        http: httpx.Client,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = base_url
        self._realm = realm
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = http
        self._clock = clock
        self._token: str | None = None
        self._token_exp = 0.0
        self._lock = threading.Lock()

    def _access_token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() > self._token_exp - 30:
                response = self._http.post(
                    f"{self._base}/realms/{self._realm}/protocol/openid-connect/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self._client_id, self._client_secret),
                )
                if response.status_code != 200:
                    raise httpx.HTTPStatusError(
                        f"service-account token refused: {response.status_code}",
                        request=response.request,
                        response=response,
                    )
                body = response.json()
                self._token = str(body["access_token"])
                self._token_exp = self._clock() + int(body.get("expires_in", 60))
            return self._token

    def _get(self, path: str) -> httpx.Response:
        url = f"{self._base}/admin/realms/{self._realm}{path}"
        response = self._http.get(url, headers={"Authorization": f"Bearer {self._access_token()}"})
        if response.status_code == 401:  # token revoked or expired early: one fresh try
            with self._lock:
                self._token = None
            response = self._http.get(url, headers={"Authorization": f"Bearer {self._access_token()}"})
        return response

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        response = self._get(f"/users/{user_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        user: dict[str, Any] = response.json()
        return user

    def get_credentials(self, user_id: str) -> list[dict[str, Any]]:
        response = self._get(f"/users/{user_id}/credentials")
        response.raise_for_status()
        credentials: list[dict[str, Any]] = response.json()
        return credentials


class UserMirror:
    """A Keycloak user and exactly their passkeys, copied into the local store for a short
    time (``user_cache_ttl``); forced fresh before every approval."""

    def __init__(self, context: ServerContext, admin: KeycloakAdmin, *, ttl: float) -> None:
        self._context = context
        self._admin = admin
        self._ttl = ttl
        self._synced: dict[str, float] = {}

    def sync(self, user_id: str, *, force: bool = False) -> User | None:
        """Mirror a Keycloak user and their passkeys into the local store (short TTL)."""
        now = self._context.clock()
        if not force and now - self._synced.get(user_id, -1e18) < self._ttl:
            return self._context.store.get_user(user_id)
        representation = self._admin.get_user(user_id)
        if representation is None:
            return None
        user = User(
            user_id=user_id,
            username=str(representation.get("username", "")),
            display_name=" ".join(p for p in (representation.get("firstName"), representation.get("lastName")) if p)
            or str(representation.get("username", "")),
            # Keycloak's WebAuthn user handle is the UTF-8 bytes of the user id.
            user_handle=user_id.encode("utf-8"),
            enabled=bool(representation.get("enabled", False)),
            created_at=int(representation.get("createdTimestamp", 0)) // 1000,
        )
        self._context.store.upsert_user(user)
        passkeys = [
            p
            for p in (passkey_from_keycloak(c, user_id=user_id) for c in self._admin.get_credentials(user_id))
            if p is not None
        ]
        # Exactly Keycloak's set: a passkey deleted there (lost device) stops approving here.
        self._context.store.replace_passkeys(user_id, passkeys)
        self._synced[user_id] = now
        return user
