"""The domain model: what a backchannel request, a user, a passkey, an approval receipt and a
Keycloak-mode intent are. Plain frozen dataclasses (standard library only), shared by the
authorization server and its stores."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApprovalReceipt",
    "AuditRecord",
    "BackchannelRequest",
    "CallbackState",
    "ChannelRefusal",
    "Enrollment",
    "Intent",
    "OutboxEntry",
    "Passkey",
    "RequestStatus",
    "User",
]


class RequestStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    ISSUED = "issued"


class CallbackState(enum.StrEnum):
    """Keycloak mode: where the one decision callback stands."""

    NONE = "none"  # not sent; may be claimed
    SENDING = "sending"  # claimed by one sender; nobody else may send
    SENT = "sent"
    FAILED = "failed"  # not delivered, or outcome unknown: never re-sent (see keycloak.py)
    WITHHELD = "withheld"  # expired undecided: Keycloak expires its side itself, nothing is sent


@dataclass(frozen=True, kw_only=True)
class Intent:
    """Keycloak mode: a validated agent request waiting for Keycloak's channel call.

    Keycloak drops extra CIBA parameters over 200 characters, so the full
    ``authorization_details`` stays here and Keycloak carries only ``intent_id``."""

    intent_id: str
    client_id: str
    login_hint: str
    scope: str
    binding_message: str | None
    authorization_details: list[dict[str, Any]]
    created_at: int
    expires_at: int


@dataclass(frozen=True, kw_only=True)
class ChannelRefusal:
    """Keycloak mode: why the authentication channel refused the call for one intent, kept in
    the store until the forwarding call (on whichever instance) takes it. Keycloak tells the
    agent only "503 server_error" when the channel refuses; the forwarding call answers the
    agent with this OAuth error instead."""

    intent_id: str
    error: str  # the OAuth error code the agent gets (e.g. invalid_authorization_details)
    error_description: str
    expires_at: int  # kept no longer than this (the forwarding call takes it within seconds)


@dataclass(frozen=True, kw_only=True)
class OutboxEntry:
    """The user's notice (the approval link) for one request, not yet delivered.

    Written in the same step as its request, so a request the agent was told about always has
    its notice on record; deleted once the notifier confirmed delivery, or when the request is
    no longer pending. ``claimed_until`` is the lease of the one sender allowed to send it now:
    nobody else claims it before that time, and a sender that crashed is replaced after it."""

    request_id: str
    notice: dict[str, Any]  # the ApprovalNotice's fields
    created_at: int
    expires_at: int  # the request's expiry: the notice is worthless after it
    claimed_until: int = 0
    attempts: int = 0  # claims so far (the first one by the instance that answered the agent)


@dataclass(frozen=True, kw_only=True)
class User:
    user_id: str
    username: str
    display_name: str
    # WebAuthn user handle: random, never the username (WebAuthn L3 14.6.1, privacy).
    user_handle: bytes
    enabled: bool = True
    created_at: int = 0


@dataclass(frozen=True, kw_only=True)
class Passkey:
    credential_id: bytes
    user_id: str
    public_key: bytes  # COSE_Key
    sign_count: int
    transports: list[str] = field(default_factory=list)
    created_at: int = 0


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One operator action on users or passkeys (who did what, to whom, when), kept for good.

    ``actor`` is who ran it (the OS user of the command, or what ``--by`` said); ``action`` a
    dotted verb (``user.disabled``, ``passkey.revoked``); ``subject`` the user's id; ``detail``
    what else identifies the change (the username, a credential id)."""

    record_id: str
    at: int
    actor: str
    action: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Enrollment:
    token_hash: str
    user_id: str
    expires_at: int
    challenge: bytes | None = None
    used: bool = False


@dataclass(frozen=True, kw_only=True)
class BackchannelRequest:
    """One CIBA authentication request, from ``/bc-authorize`` to the token."""

    request_id: str
    # SHA-256 of the auth_req_id: a leaked database does not hand out redeemable ids.
    auth_req_id_hash: str
    approval_id: str
    client_id: str
    client_name: str
    user_id: str
    scope: str
    binding_message: str | None
    authorization_details: list[dict[str, Any]]
    created_at: int
    expires_at: int
    interval: int
    nonce: str
    status: RequestStatus = RequestStatus.PENDING
    last_poll_at: int | None = None
    decided_at: int | None = None
    receipt_id: str | None = None
    token_jti: str | None = None
    # keycloak mode: what the channel needs to answer Keycloak (see keycloak.py).
    upstream: dict[str, Any] = field(default_factory=dict)
    callback_state: CallbackState = CallbackState.NONE
    revoked: bool = False


@dataclass(frozen=True, kw_only=True)
class ApprovalReceipt:
    """Evidence of one approval that anyone with the public key can re-verify."""

    receipt_id: str
    request_id: str
    user_id: str
    credential_id: bytes
    credential_public_key: bytes
    preimage: bytes  # the JCS bytes whose SHA-256 was the WebAuthn challenge
    challenge: str  # base64url SHA-256 of preimage
    assertion: dict[str, Any]  # the PublicKeyCredential JSON as the browser sent it
    rp_id: str
    origin: str
    created_at: int
