"""The state interface. The protocol core talks to this and nothing else, so a Redis store
can replace SQLite without touching it.

One small interface per concern (users, passkeys, enrollments, requests, callbacks, the notice
outbox, receipts, intents, channel refusals, single use, attempts, user codes), and
:class:`Store`, all of them together: what both stores implement. A component that needs one
concern can say so by asking for that interface.

Every state transition that guards a security property is a single compare-and-set here
(``decide``, ``mark_issued``, ``consume_enrollment``, ``update_sign_count``, ``claim_outbox``,
``take_refusal``), so two concurrent calls can never both win, whatever the backing store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ciba_service.core.model import (
    ApprovalReceipt,
    AuditRecord,
    BackchannelRequest,
    CallbackState,
    ChannelRefusal,
    Enrollment,
    Intent,
    OutboxEntry,
    Passkey,
    RequestStatus,
    User,
)

__all__ = [
    "Store",
    "UserStore",
    "PasskeyStore",
    "EnrollmentStore",
    "RequestStore",
    "CallbackStore",
    "OutboxStore",
    "ReceiptStore",
    "IntentStore",
    "RefusalStore",
    "SingleUseStore",
    "AttemptStore",
    "UserCodeStore",
    "AuditStore",
]


class UserStore(ABC):
    """Users: local ones, or mirrored from the IdP in Keycloak mode."""

    @abstractmethod
    def add_user(self, user: User) -> None: ...

    @abstractmethod
    def get_user(self, user_id: str) -> User | None: ...

    @abstractmethod
    def find_user(self, username: str) -> User | None: ...

    @abstractmethod
    def list_users(self) -> list[User]: ...

    @abstractmethod
    def upsert_user(self, user: User) -> None:
        """Insert or refresh a user mirrored from the IdP."""

    @abstractmethod
    def set_user_enabled(self, user_id: str, *, enabled: bool, audit: AuditRecord) -> bool:
        """Enable or disable a user, recording ``audit`` in the same atomic step (an operator's
        change is never unrecorded). False, and nothing recorded, if there is no such user."""


class PasskeyStore(ABC):
    """Passkeys and their signature counters."""

    @abstractmethod
    def add_passkey(self, passkey: Passkey) -> None: ...

    @abstractmethod
    def passkeys_for(self, user_id: str) -> list[Passkey]: ...

    @abstractmethod
    def find_passkey(self, credential_id: bytes) -> Passkey | None: ...

    @abstractmethod
    def update_sign_count(self, credential_id: bytes, *, old: int, new: int) -> bool:
        """Set the counter only if it still is ``old``; False if another use raced us."""

    @abstractmethod
    def upsert_passkey(self, passkey: Passkey) -> None:
        """Insert or refresh a mirrored passkey, never lowering the stored counter (a stale
        IdP copy must not reopen the window for a cloned authenticator)."""

    @abstractmethod
    def replace_passkeys(self, user_id: str, passkeys: list[Passkey]) -> None:
        """Make the user's mirrored passkeys exactly ``passkeys`` (upserted, counters never
        lowered); any other passkey of the user is deleted: a credential revoked at the IdP
        must stop approving at once."""

    @abstractmethod
    def revoke_passkey(self, credential_id: bytes, *, user_id: str, audit: AuditRecord) -> bool:
        """Delete the passkey of ``user_id`` with this credential id, recording ``audit`` in the
        same atomic step: from then on no assertion of it verifies. False, and nothing recorded,
        if the user has no such passkey. Receipts keep their own copy of the public key, so
        approvals made with it stay verifiable."""


class EnrollmentStore(ABC):
    """Enrollment links (one passkey registration each)."""

    @abstractmethod
    def add_enrollment(self, enrollment: Enrollment) -> None: ...

    @abstractmethod
    def get_enrollment(self, token_hash: str) -> Enrollment | None: ...

    @abstractmethod
    def set_enrollment_challenge(self, token_hash: str, challenge: bytes) -> None: ...

    @abstractmethod
    def consume_enrollment(self, token_hash: str, *, now: int) -> bool:
        """Mark the link used; False if it was used or expired already."""


class RequestStore(ABC):
    """Backchannel requests through their life: pending, decided, issued, revoked."""

    @abstractmethod
    def add_request(self, request: BackchannelRequest, *, outbox: OutboxEntry | None = None) -> None:
        """Store a new request; with ``outbox``, its user's notice in the same atomic step (see
        :class:`OutboxStore`): an acknowledged request never lacks its notice. The entry's
        ``request_id`` must be the request's."""

    @abstractmethod
    def get_request(self, request_id: str) -> BackchannelRequest | None: ...

    @abstractmethod
    def find_request_by_auth_req_id(self, auth_req_id_hash: str) -> BackchannelRequest | None: ...

    @abstractmethod
    def find_request_by_approval_id(self, approval_id: str) -> BackchannelRequest | None: ...

    @abstractmethod
    def find_request_by_jti(self, jti: str) -> BackchannelRequest | None: ...

    @abstractmethod
    def record_poll(self, request_id: str, *, now: int, interval: int) -> None:
        """Remember the poll time and the (possibly raised) interval."""

    @abstractmethod
    def decide(
        self,
        request_id: str,
        *,
        status: RequestStatus,
        now: int,
        receipt: ApprovalReceipt | None = None,
    ) -> bool:
        """Move a pending request to approved/denied, storing the receipt in the same step.
        False if it was not pending any more (decided once, CIBA 7.3 / DESIGN 5)."""

    @abstractmethod
    def mark_issued(self, request_id: str, *, jti: str) -> bool:
        """Approved -> issued; False if a token was already issued for it."""

    @abstractmethod
    def set_upstream(self, request_id: str, upstream: dict[str, Any]) -> None: ...

    @abstractmethod
    def revoke_request(self, request_id: str) -> None:
        """Mark the token issued for this request revoked (auth_req_id redeemed twice)."""

    @abstractmethod
    def delete_request(self, request_id: str) -> None: ...


class CallbackStore(ABC):
    """What the sweeps read and claim: decisions and expiries to deliver (Keycloak callbacks,
    ping/push notifications), each delivered once."""

    @abstractmethod
    def claim_callback(self, request_id: str) -> bool:
        """NONE -> SENDING; False if somebody already claimed it (one decision, once)."""

    @abstractmethod
    def set_callback_state(self, request_id: str, state: CallbackState) -> None: ...

    @abstractmethod
    def expired_pending(self, *, now: int) -> list[BackchannelRequest]:
        """Pending requests past their expiry whose callback was not claimed yet."""

    @abstractmethod
    def count_pending(self, *, now: int) -> int:
        """How many requests wait for a decision and have not expired (a metrics gauge)."""

    @abstractmethod
    def pending_notifications(self, *, now: int) -> list[BackchannelRequest]:
        """Ping/push requests decided or expired whose notification was not claimed yet."""


class OutboxStore(ABC):
    """The user's notices not yet delivered (the outbox). An entry is written with its request
    (:meth:`RequestStore.add_request`), claimed by one sender at a time under a lease, and
    deleted once delivered or once its request is no longer pending: the user is told once in
    normal operation, and at least once when a sender dies (its lease runs out, another sends)."""

    @abstractmethod
    def claim_outbox(self, request_id: str, *, now: int, lease: int) -> OutboxEntry | None:
        """Atomically: if the entry is there, its lease has run out (``claimed_until <= now``)
        and its request is still pending and unexpired, lease it until ``now + lease`` (one more
        attempt) and return it. An entry whose request is decided, expired or gone is deleted.
        None when nothing was claimed (another sender holds it, or it is gone)."""

    @abstractmethod
    def mark_outbox_delivered(self, request_id: str) -> None:
        """The notifier confirmed delivery: the entry is done (deleted), never sent again."""

    @abstractmethod
    def outbox_due(self, *, now: int, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` entries whose lease has run out, oldest lease first (read only: the
        sweep claims each before sending, and the claim drops those no longer worth sending)."""


class ReceiptStore(ABC):
    """Approval receipts (written by :meth:`RequestStore.decide`, in the same step as the decision)."""

    @abstractmethod
    def get_receipt(self, receipt_id: str) -> ApprovalReceipt | None: ...


class IntentStore(ABC):
    """Intents (Keycloak mode): each binds one channel request."""

    @abstractmethod
    def add_intent(self, intent: Intent) -> None: ...

    @abstractmethod
    def take_intent(self, intent_id: str, *, now: int) -> Intent | None:
        """Return and delete an unexpired intent: each intent binds one channel request."""

    @abstractmethod
    def delete_intent(self, intent_id: str) -> None: ...


class RefusalStore(ABC):
    """Keycloak mode: why the authentication channel refused an intent, for the forwarding call,
    which may run on another instance than the channel call."""

    @abstractmethod
    def keep_refusal(self, refusal: ChannelRefusal, *, now: int) -> None:
        """Record (or replace) the refusal for its intent until ``expires_at``; refusals expired
        by ``now`` may be forgotten on the way (the store stays bounded)."""

    @abstractmethod
    def take_refusal(self, intent_id: str, *, now: int) -> ChannelRefusal | None:
        """Return and delete the unexpired refusal for ``intent_id``: it is reported once."""


class SingleUseStore(ABC):
    """Single use of assertion, request-object and DPoP proof identifiers."""

    @abstractmethod
    def use_once(self, key: str, *, expires_at: int, now: int) -> bool:
        """Record ``key`` until ``expires_at``; False if it was recorded before (a replay)."""


class AttemptStore(ABC):
    """Attempt records in a sliding window, shared by every instance (online guessing limits)."""

    @abstractmethod
    def reserve_attempt(self, key: str, *, attempt_id: str, now: int, window: int, limit: int) -> bool:
        """Atomically: forget attempts on ``key`` older than ``window`` seconds, then record
        ``attempt_id`` at ``now`` unless ``limit`` attempts remain; False when none was
        recorded. Shared by every instance on the store (online guessing limits)."""

    @abstractmethod
    def cancel_attempt(self, key: str, *, attempt_id: str) -> None:
        """Forget one recorded attempt (it turned out not to count)."""


class UserCodeStore(ABC):
    """Hashes of the users' user codes."""

    @abstractmethod
    def set_user_code(self, user_id: str, code_hash: str | None) -> None: ...

    @abstractmethod
    def get_user_code(self, user_id: str) -> str | None: ...


class AuditStore(ABC):
    """The operators' actions on users and passkeys (see :class:`AuditRecord`), kept for good."""

    @abstractmethod
    def add_audit(self, record: AuditRecord) -> None: ...

    @abstractmethod
    def audit_records(self, *, limit: int, subject: str | None = None) -> list[AuditRecord]:
        """The latest ``limit`` records, newest first; only those about ``subject`` when given."""


class Store(
    UserStore,
    PasskeyStore,
    EnrollmentStore,
    RequestStore,
    CallbackStore,
    OutboxStore,
    ReceiptStore,
    IntentStore,
    RefusalStore,
    SingleUseStore,
    AttemptStore,
    UserCodeStore,
    AuditStore,
):
    """Persistent state of the service: every concern above in one store. A component that
    needs only one concern may ask for that interface instead (e.g. :class:`RequestStore`)."""

    # True when no call waits on a network or for long (SQLite: a local file, statements of
    # microseconds): the web layer may then call the store on its event loop rather than hop to
    # a thread for every request. A networked store (Redis) keeps the hop.
    serves_inline: bool = False

    def find_approver(self, *, user_id: str | None = None, username: str | None = None) -> tuple[User, bool] | None:
        """The user named by ``user_id`` (or else ``username``) and whether they hold a passkey
        (can approve), or None: what ``/bc-authorize`` needs, in one read where the store can
        (SQLite overrides this); by default a user read and a passkey list."""
        user = self.get_user(user_id) if user_id is not None else self.find_user(username or "")
        if user is None:
            return None
        has_passkey = bool(self.passkeys_for(user.user_id))
        return user, has_passkey

    def close(self) -> None:  # an optional hook: not abstract
        """Release resources."""
