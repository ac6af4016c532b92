"""An example protected API: an IAM service that updates or deletes a policy, or rotates a
service account's key, only with a token approved for exactly that operation. Used by the
demo and the tests; a template for resource servers (see ``RESOURCE_SERVER.md``).

One token may carry a plan (several ``authorization_details`` entries approved with one
passkey gesture): each call consumes the entry that covers it, so the plan runs step by step
and no step runs twice. DPoP-bound tokens (``cnf.jkt``) are accepted with a proof per call;
with ``TokenVerifier(dpop_nonces=...)`` the proofs must carry this server's ``DPoP-Nonce``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from ciba_service.rs import RequestedAction, TokenVerifier, VerifiedToken
from ciba_service.rs.fastapi import install_error_handler, require_action

__all__ = ["IAM_LOCATION", "create_example_api"]

# The location this resource server answers for; approvals name it in `locations`.
IAM_LOCATION = "https://iam.example.test/"


def create_example_api(verifier: TokenVerifier, *, public_url: str | None = None) -> FastAPI:
    """``public_url``: the origin agents call (for DPoP ``htu``) when behind a proxy."""
    app = FastAPI(title="example IAM API (protected by ciba-service tokens)")
    install_error_handler(app)
    policies: dict[str, dict[str, Any]] = {}
    rotations: dict[str, int] = {}

    def policy_action(verb: str, policy_id: str) -> RequestedAction:
        return RequestedAction(type="iam_policy", actions=[verb], identifier=policy_id, locations=[IAM_LOCATION])

    def update_policy(policy_id: str) -> RequestedAction:
        return policy_action("update", policy_id)

    def delete_policy(policy_id: str) -> RequestedAction:
        return policy_action("delete", policy_id)

    def rotate_key(account: str) -> RequestedAction:
        return RequestedAction(type="key_rotation", actions=["rotate"], identifier=account, locations=[IAM_LOCATION])

    # Dependencies are given as defaults, not in Annotated[...]: with postponed annotations
    # FastAPI cannot resolve names local to this factory.
    may_update = Depends(require_action(verifier, update_policy, public_url=public_url))
    may_delete = Depends(require_action(verifier, delete_policy, public_url=public_url))
    may_rotate = Depends(require_action(verifier, rotate_key, public_url=public_url))

    @app.put("/policies/{policy_id}")
    async def put_policy(policy_id: str, token: VerifiedToken = may_update) -> dict[str, Any]:
        policies[policy_id] = {"updated_by": token.subject, "approval": token.claims.get("approval")}
        return {"policy": policy_id, "status": "updated", "by": token.subject}

    @app.delete("/policies/{policy_id}")
    async def remove_policy(policy_id: str, token: VerifiedToken = may_delete) -> dict[str, Any]:
        policies.pop(policy_id, None)
        return {"policy": policy_id, "status": "deleted", "by": token.subject}

    @app.post("/service-accounts/{account}/key/rotate")
    async def rotate(account: str, token: VerifiedToken = may_rotate) -> dict[str, Any]:
        rotations[account] = rotations.get(account, 0) + 1
        return {"service_account": account, "status": "rotated", "by": token.subject}

    return app
