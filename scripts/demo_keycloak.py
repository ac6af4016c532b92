"""`make demo-keycloak`: the embedded demo's flow, with a real Keycloak as the token issuer.

Starts the pinned Keycloak (scripts/keycloak.sh: fetch, build the mapper extension, import
realm-export/), runs ciba-service in keycloak mode as its HTTP authentication channel,
registers alice's passkey in Keycloak itself, has the agent ask for one exact action, approves
it on the companion's approval page with that same passkey, and checks the Keycloak-issued token
at a resource server. `--json` ends with one summary line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import jwt
from kc_harness import (
    AGENT_ID,
    AGENT_SECRET,
    KC_ISSUER,
    OIDC,
    free_port,
    register_passkey_over_http,
    running_companion,
    running_keycloak,
)

from ciba_service.agent import CibaAgent, device
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.demo.example_api import IAM_LOCATION
from ciba_service.rs import InsufficientAuthorization, InvalidToken, JwksCache, RequestedAction, TokenVerifier

ACTION: list[dict[str, Any]] = [
    {"type": "iam_policy", "actions": ["update"], "identifier": "policy-42", "locations": [IAM_LOCATION]}
]


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true", help="end with one JSON summary line")
    args = parser.parse_args()
    port = free_port()
    summary: dict[str, Any] = {}
    with running_keycloak(port), running_companion(port, Path(tempfile.mkdtemp(prefix="ciba-kc-"))) as companion:
        step("1. Keycloak is the OpenID Provider; ciba-service is its authentication channel")
        meta = httpx.get(f"{companion.base}/.well-known/openid-configuration").json()
        print(
            f"  issuer {meta['issuer']}\n  backchannel endpoint {meta['backchannel_authentication_endpoint']}"
            f"\n  token endpoint {meta['token_endpoint']}"
        )

        step("2. alice registers a passkey in Keycloak (its required action; software authenticator)")
        authenticator = SoftAuthenticator()
        register_passkey_over_http(authenticator)
        print("  passkey registered in Keycloak (webauthn-passwordless, UV required)")

        step("3. The agent asks for one exact action")
        agent = CibaAgent(issuer=companion.base, client_id=AGENT_ID, client_secret=AGENT_SECRET)
        pending = agent.request(login_hint="alice", authorization_details=ACTION, binding_message="KC-DEMO-1")
        print(
            f"  authorization_details {json.dumps(ACTION)}\n  Keycloak answered: expires_in "
            f"{pending.expires_in}s, interval {pending.interval}s"
        )

        step("4. alice approves on the approval page with the passkey she registered in Keycloak")
        result: dict[str, Any] = {}

        def user_device() -> None:
            notice = companion.inbox.next()
            with httpx.Client(timeout=10) as http:
                view = device.fetch_view(http, notice.approval_url)
                print(f"  the page shows: {view['entries'][0]['text']} (binding message {view['binding_message']})")
                result.update(device.approve(http, notice.approval_url, authenticator))
            print(f"  approved; receipt {result['receipt']}; decision sent to Keycloak")

        approver = threading.Thread(target=user_device)
        approver.start()
        token = agent.wait(pending)
        approver.join()
        agent.close()
        claims = jwt.decode(token["access_token"], options={"verify_signature": False})
        step("5. Keycloak issued the token, carrying the approved authorization_details")
        print(
            json.dumps(
                {k: claims.get(k) for k in ("iss", "aud", "azp", "exp", "authorization_details", "approval")}, indent=2
            )
        )

        step("6. A resource server verifies it with Keycloak's JWKS, for that action only, once")
        verifier = TokenVerifier(
            issuer=KC_ISSUER, audience="resource-api", keys=JwksCache(f"{OIDC}/certs"), algorithms=("RS256",)
        )
        exact = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[IAM_LOCATION])
        other = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-43", locations=[IAM_LOCATION])
        try:
            verifier.verify(token["access_token"], other)
            other_refused = False
        except InsufficientAuthorization:
            other_refused = True
        print(f"  update policy-43 refused: {other_refused}")
        accepted = verifier.verify(token["access_token"], exact).entry == ACTION[0]
        print(f"  update policy-42 accepted: {accepted}")
        try:
            verifier.verify(token["access_token"], exact)
            replay_refused = False
        except InvalidToken:
            replay_refused = True
        print(f"  the same token again refused: {replay_refused}")
        summary = {
            "approved": result.get("status") == "approved",
            "issuer": claims.get("iss"),
            "token_accepted": accepted,
            "replay_refused": replay_refused,
            "other_action_refused": other_refused,
            "authorization_details": claims.get("authorization_details"),
        }
    ok = all(summary[k] for k in ("approved", "token_accepted", "replay_refused", "other_action_refused"))
    ok = ok and summary["authorization_details"] == ACTION and summary["issuer"] == KC_ISSUER
    print(f"\n{'OK' if ok else 'FAILED'}", flush=True)
    if args.json:
        print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
