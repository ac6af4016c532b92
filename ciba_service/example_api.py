"""An example protected API: an IAM service that updates a policy only with a token approved
for exactly that update. Used by the demo and the tests; a template for resource servers."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from .resource import RequestedAction, TokenVerifier, VerifiedToken
from .rs_fastapi import install_error_handler, require_action

__all__ = ["IAM_LOCATION", "create_example_api"]

# The location this resource server answers for; approvals name it in `locations`.
IAM_LOCATION = "https://iam.example.test/"


def create_example_api(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI(title="example IAM API (protected by ciba-service tokens)")
    install_error_handler(app)
    policies: dict[str, dict[str, Any]] = {}

    def update_policy(policy_id: str) -> RequestedAction:
        return RequestedAction(type="iam_policy", actions=["update"], identifier=policy_id, locations=[IAM_LOCATION])

    def delete_policy(policy_id: str) -> RequestedAction:
        return RequestedAction(type="iam_policy", actions=["delete"], identifier=policy_id, locations=[IAM_LOCATION])

    # Dependencies are given as defaults, not in Annotated[...]: with postponed annotations
    # FastAPI cannot resolve names local to this factory.
    may_update = Depends(require_action(verifier, update_policy))
    may_delete = Depends(require_action(verifier, delete_policy))

    @app.put("/policies/{policy_id}")
    async def put_policy(policy_id: str, token: VerifiedToken = may_update) -> dict[str, Any]:
        policies[policy_id] = {"updated_by": token.subject, "approval": token.claims.get("approval")}
        return {"policy": policy_id, "status": "updated", "by": token.subject}

    @app.delete("/policies/{policy_id}")
    async def remove_policy(policy_id: str, token: VerifiedToken = may_delete) -> dict[str, Any]:
        policies.pop(policy_id, None)
        return {"policy": policy_id, "status": "deleted", "by": token.subject}

    return app
