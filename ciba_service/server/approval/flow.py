"""The user's side of a request (DESIGN.md, "The approval, precisely"): the page's view, the
approval with a passkey, the denial, and the receipt check. The same in both modes; what
happens after a decision (tokens for the agent, or Keycloak's callback) is the issuer's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ciba_service.core.binding import binding_document, canonical_preimage, challenge_for
from ciba_service.core.errors import ApprovalAlreadyDecided, ApprovalExpired, ApprovalNotFound, AssertionRejected
from ciba_service.core.model import BackchannelRequest, RequestStatus
from ciba_service.rfc9396 import describe_entry, entry_fields
from ciba_service.server.approval.assertion import authentication_options, verify_approval
from ciba_service.server.approval.branding import service_branding
from ciba_service.server.approval.receipt import reverify_receipt
from ciba_service.server.context import ServerContext

__all__ = ["Approvals"]


class Approvals:
    def __init__(
        self,
        context: ServerContext,
        *,
        before_approve: Callable[[BackchannelRequest], None],
        after_decision: Callable[[str], None],
    ) -> None:
        self._context = context
        # Issuer hooks: refresh what the approval relies on (keycloak: the user's passkeys),
        # and tell the agent or Keycloak about a decision.
        self._before_approve = before_approve
        self._after_decision = after_decision

    def _request(self, approval_id: str) -> BackchannelRequest:
        request = self._context.store.find_request_by_approval_id(approval_id)
        if request is None:
            raise ApprovalNotFound("unknown approval request")
        return request

    def _require_pending(self, request: BackchannelRequest) -> None:
        if request.status is not RequestStatus.PENDING:
            raise ApprovalAlreadyDecided(f"this request was already decided ({request.status.value})")
        if self._context.now() >= request.expires_at:
            raise ApprovalExpired("this request has expired")

    def view(self, approval_id: str) -> dict[str, Any]:
        """Everything the approval page shows, and the WebAuthn options it needs."""
        context = self._context
        request = self._request(approval_id)
        user = context.store.get_user(request.user_id)
        if user is None:
            raise ApprovalNotFound("unknown user")
        status = request.status.value
        if request.status is RequestStatus.PENDING and context.now() >= request.expires_at:
            status = "expired"
        document = binding_document(request=request, issuer=context.settings.issuer)
        challenge = challenge_for(canonical_preimage(document))
        view: dict[str, Any] = {
            "status": status,
            "service": service_branding(context.settings),
            "client_id": request.client_id,
            "client_name": request.client_name,
            "username": user.username,
            "display_name": user.display_name,
            "binding_message": request.binding_message,
            # Per entry: the sentence with every field (``text``), and how the page lays it out
            # (``entry_fields``: paths and labels only; the page reads the values from ``detail``,
            # which it checks against the signed document).
            "entries": [
                {
                    "text": describe_entry(e, registry=context.registry),
                    **entry_fields(e, registry=context.registry),
                    "detail": e,
                }
                for e in request.authorization_details
            ],
            "expires_at": request.expires_at,
            # The page counts down against the server's clock, not the device's.
            "server_time": context.now(),
            "binding_document": document,
        }
        if status == "pending":
            remaining_ms = max(1000, (request.expires_at - context.now()) * 1000)
            view["publicKey"] = authentication_options(
                challenge=challenge,
                rp_id=context.settings.webauthn_rp_id,
                passkeys=context.store.passkeys_for(user.user_id),
                timeout_ms=min(remaining_ms, 300_000),
            )
        return view

    def approve(self, approval_id: str, credential: dict[str, Any]) -> dict[str, Any]:
        context = self._context
        store = context.store
        request = self._request(approval_id)
        self._before_approve(request)
        self._require_pending(request)
        user = store.get_user(request.user_id)
        if user is None or not user.enabled:
            # Disabled after the request was made (`users disable`): nothing of theirs approves.
            raise AssertionRejected("this user is disabled: the request cannot be approved")
        verified = verify_approval(
            request=request,
            user=user,
            passkeys=store.passkeys_for(user.user_id),
            credential=credential,
            issuer=context.settings.issuer,
            expected_rp_id=context.settings.webauthn_rp_id,
            expected_origins=context.settings.accepted_origins,
            now=context.now(),
        )
        # Counter first, as a compare-and-set: two assertions racing with the same counter
        # value (a cloned authenticator) cannot both pass.
        if not store.update_sign_count(
            verified.passkey.credential_id, old=verified.passkey.sign_count, new=verified.new_sign_count
        ):
            raise AssertionRejected("signature counter changed concurrently; try again")
        if not store.decide(
            request.request_id, status=RequestStatus.APPROVED, now=context.now(), receipt=verified.receipt
        ):
            raise ApprovalAlreadyDecided("this request was already decided")
        context.events.decision("approved")
        self._after_decision(request.request_id)
        return {"status": "approved", "receipt": verified.receipt.receipt_id}

    def deny(self, approval_id: str) -> dict[str, Any]:
        context = self._context
        request = self._request(approval_id)
        self._require_pending(request)
        if not context.store.decide(request.request_id, status=RequestStatus.DENIED, now=context.now()):
            raise ApprovalAlreadyDecided("this request was already decided")
        context.events.decision("denied")
        self._after_decision(request.request_id)
        return {"status": "denied"}

    def verify_receipt(self, receipt_id: str) -> dict[str, Any]:
        receipt = self._context.store.get_receipt(receipt_id)
        if receipt is None:
            raise ApprovalNotFound("unknown receipt")
        document = reverify_receipt(receipt)
        return {"receipt": receipt_id, "valid": True, "binding_document": document}
