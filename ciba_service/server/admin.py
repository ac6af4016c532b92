"""What an operator does to users and passkeys (the ``ciba-service users`` and ``passkeys``
commands): add a user, hand out an enrollment link, disable or enable a user, list and revoke a
passkey, set a user code. Every change is recorded in the store's audit (who, what, to whom,
when) in the same step as the change, and logged on ``ciba_service.audit``.

Keycloak mode mirrors users and passkeys from Keycloak: they are managed there (disabling the
user or deleting the credential in Keycloak stops the approvals within ``user_cache_ttl``), so
the changes here are refused, with that said; listing still works."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ciba_service.core.model import AuditRecord, Passkey, User
from ciba_service.core.security import b64url_encode, new_id
from ciba_service.server.provider import Provider

__all__ = ["AdministrationError", "PasskeyInfo", "UserAdministration"]

log = logging.getLogger("ciba_service.audit")

# A credential id is given in full or by a prefix at least this long (base64url characters).
MIN_CREDENTIAL_PREFIX = 6


class AdministrationError(Exception):
    """An operator's request that cannot be done; the message says why and what to do."""


@dataclass(frozen=True, kw_only=True)
class PasskeyInfo:
    credential_id: str  # base64url, as the operator types it back
    created_at: int
    sign_count: int
    transports: tuple[str, ...]


class UserAdministration:
    """An operator (``actor``: the OS user, or who ``--by`` names) acting on users and passkeys."""

    def __init__(self, provider: Provider, *, actor: str) -> None:
        self._provider = provider
        self._store = provider.store
        self.actor = actor

    # reading ----------------------------------------------------------------------------------
    def user(self, username: str) -> User:
        user = self._store.find_user(username)
        if user is None:
            known = ", ".join(sorted(u.username for u in self._store.list_users())[:10]) or "none yet"
            raise AdministrationError(f"no user {username!r} (users: {known}; add one with `ciba-service users add`)")
        return user

    def passkeys(self, username: str) -> list[PasskeyInfo]:
        return [_info(p) for p in self._store.passkeys_for(self.user(username).user_id)]

    def audit(self, *, limit: int = 50, username: str | None = None) -> list[AuditRecord]:
        subject = self.user(username).user_id if username else None
        return self._store.audit_records(limit=limit, subject=subject)

    # changing ---------------------------------------------------------------------------------
    def add_user(self, username: str, *, display_name: str | None = None) -> str:
        """Create the user; returns the one-time enrollment link."""
        user, link = self._provider.add_user(username=username, display_name=display_name)
        self._record(user, "user.added", display_name=user.display_name)
        return link

    def enrollment_link(self, username: str) -> str:
        user = self.user(username)
        if not user.enabled:
            raise AdministrationError(f"user {username!r} is disabled: enable it first (`ciba-service users enable`)")
        link = self._provider.new_enrollment_link(user)
        self._record(user, "user.enrollment_link")
        return link

    def set_enabled(self, username: str, *, enabled: bool) -> bool:
        """Enable or disable; False when the user already was so (nothing recorded)."""
        self._local_only("disable or enable the user in Keycloak (its admin console or API)")
        user = self.user(username)
        if user.enabled == enabled:
            return False
        audit = self._audit(user, "user.enabled" if enabled else "user.disabled")
        if not self._store.set_user_enabled(user.user_id, enabled=enabled, audit=audit):
            raise AdministrationError(f"no user {username!r}")
        self._log(audit)
        return True

    def revoke_passkey(self, username: str, credential_id: str) -> PasskeyInfo:
        """Delete one passkey of the user, named by its id (base64url) or a unique prefix."""
        self._local_only("delete the credential in Keycloak (the user's Credentials tab)")
        user = self.user(username)
        passkey = self._find_passkey(user, credential_id)
        info = _info(passkey)
        audit = self._audit(user, "passkey.revoked", credential_id=info.credential_id)
        if not self._store.revoke_passkey(passkey.credential_id, user_id=user.user_id, audit=audit):
            raise AdministrationError(f"passkey {info.credential_id} of {username!r} is already gone")
        self._log(audit)
        return info

    def set_user_code(self, username: str, code: str | None) -> None:
        user = self.user(username)
        self._provider.set_user_code(user, code)
        self._record(user, "user_code.cleared" if code is None else "user_code.set")

    # helpers ----------------------------------------------------------------------------------
    def _local_only(self, instead: str) -> None:
        if self._provider.mode == "keycloak":
            raise AdministrationError(f"users and passkeys are Keycloak's in keycloak mode: {instead}")

    def _find_passkey(self, user: User, credential_id: str) -> Passkey:
        wanted = credential_id.strip()
        passkeys = self._store.passkeys_for(user.user_id)
        exact = [p for p in passkeys if b64url_encode(p.credential_id) == wanted]
        if exact:
            return exact[0]
        if len(wanted) < MIN_CREDENTIAL_PREFIX:
            raise AdministrationError(
                f"give the credential id, or at least its first {MIN_CREDENTIAL_PREFIX} characters "
                f"(`ciba-service passkeys list {user.username}`)"
            )
        matches = [p for p in passkeys if b64url_encode(p.credential_id).startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise AdministrationError(
                f"user {user.username!r} has no passkey {wanted!r} (`ciba-service passkeys list {user.username}`)"
            )
        raise AdministrationError(f"{wanted!r} matches {len(matches)} passkeys of {user.username!r}: give more of it")

    def _audit(self, user: User, action: str, **detail: Any) -> AuditRecord:
        return AuditRecord(
            record_id=new_id(16),
            at=self._provider.now(),
            actor=self.actor,
            action=action,
            subject=user.user_id,
            detail={"username": user.username, **detail},
        )

    def _record(self, user: User, action: str, **detail: Any) -> None:
        audit = self._audit(user, action, **detail)
        self._store.add_audit(audit)
        self._log(audit)

    @staticmethod
    def _log(audit: AuditRecord) -> None:
        log.info("%s by %s: %s %s", audit.action, audit.actor, audit.subject, audit.detail)


def _info(passkey: Passkey) -> PasskeyInfo:
    return PasskeyInfo(
        credential_id=b64url_encode(passkey.credential_id),
        created_at=passkey.created_at,
        sign_count=passkey.sign_count,
        transports=tuple(passkey.transports),
    )
