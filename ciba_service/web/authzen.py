"""Routes for policy enforcement points (PEPs): the AuthZEN 1.0 policy decision point over the
tool-call mapping (``pep_policy``), and the approval link a PEP relays to its user.

- ``GET /.well-known/authzen-configuration``: PDP metadata (AuthZEN 1.0 section 9).
- ``POST /access/v1/evaluation`` and ``/access/v1/evaluations``: JSON in, decisions out
  (logic in :mod:`ciba_service.pep.authzen`); errors are HTTP 400/401/403 with the message as a
  plain-text body, as AuthZEN 1.0's HTTPS binding says; ``X-Request-ID`` is echoed.
- ``POST /pep/approval-link``: ``auth_req_id`` (form) in, that request's approval page out, for
  the client that made the request, while it is pending.

PEPs authenticate with client credentials (``Authorization: Basic``, a client registered in
``[[clients]]`` whose id is listed in ``pep_clients``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ciba_service.core.errors import InvalidClient, InvalidRequest, OAuthError, UnauthorizedClient
from ciba_service.core.model import RequestStatus
from ciba_service.core.params import Params
from ciba_service.core.security import auth_req_id_key
from ciba_service.jose.jwks import JwksCache, KeySource, StaticKeys
from ciba_service.pep.authzen import AuthZenError, PolicyDecisionPoint
from ciba_service.pep.policy import Policy, load_policy
from ciba_service.rs import TokenVerifier
from ciba_service.server.provider import Provider
from ciba_service.web.http import NO_STORE, BodyTooLarge, FormParams, offload, read_limited

__all__ = ["pep_routes"]

MAX_BODY = 64 * 1024


def _verifier(provider: Provider) -> TokenVerifier:
    settings = provider.settings
    audience = settings.pep_audience or settings.default_audience
    if provider.mode == "keycloak":
        issuer = settings.keycloak.issuer
        keys: KeySource = JwksCache(f"{issuer}/protocol/openid-connect/certs")
        return TokenVerifier(issuer=issuer, audience=audience, keys=keys, algorithms=("RS256",), clock=provider.now)
    return TokenVerifier(
        issuer=settings.issuer, audience=audience, keys=StaticKeys(provider.jwks()), clock=provider.now
    )


def _subject_matches(provider: Provider) -> Any:
    def matches(subject_id: str, claims: Mapping[str, Any]) -> bool:
        if provider.mode == "keycloak":
            return claims.get("preferred_username") == subject_id
        user = provider.store.get_user(str(claims.get("sub")))
        return user is not None and user.username == subject_id

    return matches


def _authenticate_pep(provider: Provider, params: Params, authorization: str | None) -> str:
    caller = provider.context.authenticate_client(params, authorization)
    # Only registered PEPs: the PDP reveals policy, and the link lets its holder see the action.
    if caller.client.client_id not in provider.settings.pep_clients:
        raise UnauthorizedClient("this client is not a registered policy enforcement point")
    return caller.client.client_id


def _text_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return PlainTextResponse(message, status_code=status, headers={**NO_STORE, **(headers or {})})


def pep_routes(provider: Provider, *, policy: Policy | None = None) -> APIRouter:
    """The PEP routes; the PDP's only when a policy is given or ``pep_policy`` names one
    (read and checked now: a bad mapping stops the start, naming the file and the tool)."""
    router = APIRouter()
    settings = provider.settings
    if policy is None and settings.pep_policy is not None:
        policy = load_policy(settings.pep_policy, known_types=list(provider.registry.types))

    @router.post("/pep/approval-link")
    async def approval_link(request: Request, params: FormParams) -> JSONResponse:
        """The approval page of the caller's own pending request, for a PEP to relay."""

        def find() -> dict[str, Any]:
            client_id = _authenticate_pep(provider, params, request.headers.get("authorization"))
            auth_req_id = params.required("auth_req_id")
            if provider.mode == "keycloak":
                raise InvalidRequest("approval links are relayed in embedded mode only")
            found = provider.store.find_request_by_auth_req_id(auth_req_id_key(auth_req_id))
            # Another client's request is "unknown", not "forbidden": ids do not leak across clients.
            if found is None or found.client_id != client_id:
                raise InvalidRequest("unknown auth_req_id")
            if found.status is not RequestStatus.PENDING or found.expires_at <= provider.now():
                raise InvalidRequest("the request is no longer pending")
            return {
                "approval_url": f"{settings.public_base_url}/approve/{found.approval_id}",
                "expires_at": found.expires_at,
            }

        return JSONResponse(await offload(find)(), headers=NO_STORE)

    if policy is None:
        return router
    pdp = PolicyDecisionPoint(
        policy=policy,
        verifier=_verifier(provider),
        backchannel_authentication_endpoint=f"{settings.issuer}/bc-authorize",
        subject_matches=_subject_matches(provider),
    )

    @router.get("/.well-known/authzen-configuration")
    async def configuration() -> JSONResponse:
        return JSONResponse(
            {
                "policy_decision_point": settings.issuer,
                "access_evaluation_endpoint": f"{settings.issuer}/access/v1/evaluation",
                "access_evaluations_endpoint": f"{settings.issuer}/access/v1/evaluations",
            },
            headers={"Cache-Control": "max-age=300"},
        )

    async def answer(request: Request, batch: bool) -> Response:
        request_id = request.headers.get("x-request-id")
        echo = {"X-Request-ID": request_id} if request_id and len(request_id) <= 256 else {}
        try:
            await offload(_authenticate_pep)(provider, Params([]), request.headers.get("authorization"))
        except UnauthorizedClient as exc:
            return _text_error(403, exc.description, echo)  # authenticated, but not a PEP
        except OAuthError as exc:
            # invalid_client (401 with its Basic challenge), or a malformed Authorization header.
            status = 401 if isinstance(exc, InvalidClient) else 400
            return _text_error(status, exc.description, {**exc.headers(), **echo})
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _text_error(400, "the request body must be application/json", echo)
        try:
            body = json.loads(await read_limited(request, MAX_BODY))
        except BodyTooLarge:
            return _text_error(400, f"the request body is larger than {MAX_BODY} bytes", echo)
        except (ValueError, RecursionError):
            return _text_error(400, "the request body is not JSON", echo)
        try:
            result = await offload(pdp.evaluations if batch else pdp.evaluation)(body)
        except AuthZenError as exc:
            return _text_error(exc.status, exc.message, echo)
        return JSONResponse(result, headers={**NO_STORE, **echo})

    @router.post("/access/v1/evaluation")
    async def evaluation(request: Request) -> Response:
        return await answer(request, batch=False)

    @router.post("/access/v1/evaluations")
    async def evaluations(request: Request) -> Response:
        return await answer(request, batch=True)

    return router
