"""Step 3 of keycloak mode: after the decision we call Keycloak's ``/ext/ciba/auth/callback``
exactly once: ``SUCCEED`` with the approved ``authorization_details`` and the approval claim as
extra parameters (the ``ciba-session-note-json-mapper`` extension copies them into the access
token), ``UNAUTHORIZED`` on denial. Nothing on expiry: Keycloak expires the request itself and
the agent gets ``expired_token`` (a ``CANCELLED`` callback would turn that into
``access_denied``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx

from ciba_service.core.model import BackchannelRequest, CallbackState, RequestStatus
from ciba_service.server.context import ServerContext
from ciba_service.server.tokens import approval_claim

__all__ = ["CALLBACK_APPROVAL", "CALLBACK_AUTHORIZATION_DETAILS", "Callbacks"]

log = logging.getLogger("ciba_service.server.keycloak")

# Callback parameter names; Keycloak stores them as client-session notes
# `ciba_callback_response_param_<name>`, which the mapper turns into claims.
CALLBACK_AUTHORIZATION_DETAILS = "authorization_details"
CALLBACK_APPROVAL = "approval"


class Callbacks:
    def __init__(
        self,
        context: ServerContext,
        *,
        http: httpx.Client,
        oidc: str,
        attempts: int,
        sleep: Callable[[float], None],
    ) -> None:
        self._context = context
        self._http = http
        self._oidc = oidc
        self._attempts = attempts
        self.sleep = sleep

    def after_decision(self, request_id: str) -> None:
        store = self._context.store
        request = store.get_request(request_id)
        if request is None:
            return
        if request.status is RequestStatus.APPROVED:
            receipt = store.get_receipt(request.receipt_id or "")
            if receipt is None:
                # decide() stores the receipt with the approval, atomically; without it there is
                # nothing to prove the approval with, so nothing is sent (Keycloak expires it).
                log.error("approved request %s has no receipt; no callback sent", request_id)
                return
            approval = approval_claim(receipt, service=self._context.settings.issuer)
            payload = {
                "status": "SUCCEED",
                CALLBACK_AUTHORIZATION_DETAILS: json.dumps(request.authorization_details, separators=(",", ":")),
                CALLBACK_APPROVAL: json.dumps(approval, separators=(",", ":")),
            }
        elif request.status is RequestStatus.DENIED:
            payload = {"status": "UNAUTHORIZED"}
        else:
            return
        self.send(request, payload)

    def sweep_expired(self) -> int:
        """Close requests that expired undecided, without a callback. Returns how many.

        Our expiry is never later than Keycloak's (``expires_at`` is bounded by the channel
        token's ``exp``) and usually a little earlier (the intent is stored before Keycloak sees
        the request). Keycloak treats ``CANCELLED`` exactly like a denial, so a callback sent at
        our expiry would reach Keycloak while its request is still pending and the agent would be
        told ``access_denied`` instead of ``expired_token`` (CIBA section 11): the agent would
        think the user refused. Keycloak expires its side itself; we only claim the callback
        slot so that nothing can be sent for this request afterwards."""
        store = self._context.store
        count = 0
        for request in store.expired_pending(now=self._context.now()):
            if store.claim_callback(request.request_id):
                store.set_callback_state(request.request_id, CallbackState.WITHHELD)
                count += 1
        return count

    def send(self, request: BackchannelRequest, payload: dict[str, str]) -> bool:
        """POST the decision once. Keycloak deletes a request on a second callback, so a
        retry is made only when the previous attempt provably never reached Keycloak
        (connection refused or connect timeout); any other failure is final."""
        store = self._context.store
        if not store.claim_callback(request.request_id):
            return False
        token = request.upstream.get("channel_token", "")
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._http.post(
                    f"{self._oidc}/ext/ciba/auth/callback",
                    json=payload,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                log.warning("callback attempt %d for %s not delivered: %s", attempt, request.request_id, exc)
                if attempt < self._attempts:
                    self.sleep(delay)
                    delay *= 2
                continue
            except httpx.HTTPError as exc:
                # Sent but no answer: Keycloak may have processed it. Re-sending could delete
                # the approved request, so the outcome stays unknown and nothing is re-sent.
                log.error("callback for %s: outcome unknown (%s); not retried", request.request_id, exc)
                store.set_callback_state(request.request_id, CallbackState.FAILED)
                return False
            if 200 <= response.status_code < 300:
                store.set_callback_state(request.request_id, CallbackState.SENT)
                return True
            log.error(
                "callback for %s refused: %s %s",
                request.request_id,
                response.status_code,
                response.text[:200],
            )
            store.set_callback_state(request.request_id, CallbackState.FAILED)
            return False
        store.set_callback_state(request.request_id, CallbackState.FAILED)
        return False
