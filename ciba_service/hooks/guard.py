"""The decision every coding-agent hook makes, whatever the agent's wire format: evaluate the
call against the policy; for a call that needs approval send the backchannel request, say on
the agent's side what is waiting, wait, verify the token, and answer allow or deny with a reason.

It fails closed: an unreachable service, a timeout, a refusal, a token that does not carry the
exact call, a broken policy, any error at all: the answer is *deny*, with a reason the agent
can show.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ciba_service.agent import AccessDenied, AgentError, CibaAgent, RequestExpired, ServiceUnreachable
from ciba_service.hooks.policy import Denied, Free, NeedsApproval, PolicyError, ToolCall, ToolPolicy, display
from ciba_service.jose.jwks import JwksCache
from ciba_service.rs import RequestedAction, ResourceError, TokenVerifier

__all__ = ["Guard", "ServiceConfig", "Verdict"]

# The binding message's alphabet: letters and digits only, so it is the same on every screen and
# passes Keycloak's binding_message pattern too.
_TAG = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """``allow`` (approved with a passkey), ``deny``, or ``defer`` (no objection: the agent's
    own permission rules decide)."""

    decision: Literal["allow", "deny", "defer"]
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Where to ask and who approves: the policy file's ``[service]`` table, then ``CIBA_HOOK_*``
    environment variables. The client secret comes from the environment only
    (``CIBA_HOOK_CLIENT_SECRET``): the policy file usually sits in the repository."""

    issuer: str
    client_id: str
    client_secret: str
    login_hint: str
    timeout: float = 240.0
    requested_expiry: int | None = None
    audience: str = "resource-api"
    token_issuer: str | None = None
    jwks_uri: str | None = None
    algorithms: tuple[str, ...] = ("ES256",)
    auth_method: str = "client_secret_basic"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ServiceConfig:
        env = os.environ if environ is None else environ
        known = {
            "issuer",
            "client_id",
            "login_hint",
            "timeout",
            "requested_expiry",
            "audience",
            "token_issuer",
            "jwks_uri",
            "algorithms",
            "auth_method",
        }
        unknown = set(data) - known
        if unknown:
            secret = " (the client secret belongs in CIBA_HOOK_CLIENT_SECRET)" if "client_secret" in unknown else ""
            raise PolicyError(f"unknown [service] keys: {', '.join(sorted(unknown))}{secret}")

        def setting(name: str) -> str:
            value = env.get(f"CIBA_HOOK_{name.upper()}") or data.get(name)
            if not isinstance(value, str) or not value:
                raise PolicyError(f"[service] {name} (or CIBA_HOOK_{name.upper()}) is required")
            return value

        secret_value = env.get("CIBA_HOOK_CLIENT_SECRET", "")
        if not secret_value:
            raise PolicyError("set CIBA_HOOK_CLIENT_SECRET to the hook client's secret")
        timeout = data.get("timeout", 240)
        expiry = data.get("requested_expiry")
        algorithms = data.get("algorithms", ["ES256"])
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
            raise PolicyError("[service] timeout must be 1 to 3600 seconds")
        if expiry is not None and (not isinstance(expiry, int) or isinstance(expiry, bool) or expiry < 1):
            raise PolicyError("[service] requested_expiry must be a positive integer")
        if not isinstance(algorithms, list) or not all(a in ("ES256", "RS256", "PS256") for a in algorithms):
            raise PolicyError("[service] algorithms must list ES256, RS256 or PS256")
        optional = {name: data.get(name) for name in ("token_issuer", "jwks_uri")}
        for name, value in optional.items():
            if value is not None and not isinstance(value, str):
                raise PolicyError(f"[service] {name} must be a string")
        return cls(
            issuer=setting("issuer").rstrip("/"),
            client_id=setting("client_id"),
            client_secret=secret_value,
            login_hint=setting("login_hint"),
            timeout=float(timeout),
            requested_expiry=expiry,
            audience=str(data.get("audience", "resource-api")),
            token_issuer=optional["token_issuer"],
            jwks_uri=optional["jwks_uri"],
            algorithms=tuple(algorithms),
            auth_method=str(data.get("auth_method", "client_secret_basic")),
        )


def _binding_message(tool_name: str) -> str:
    prefix = "".join(ch for ch in tool_name if ch.isascii() and ch.isalnum())[:12] or "TOOL"
    return f"{prefix}-{''.join(secrets.choice(_TAG) for _ in range(4))}"


class Guard:
    """One hook decision. ``service`` is read only when a call needs approval (a free call
    needs no secret); ``say`` writes to where the user of the agent sees it (stderr)."""

    def __init__(
        self,
        *,
        policy: ToolPolicy,
        service: Callable[[], ServiceConfig],
        say: Callable[[str], None],
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._policy = policy
        self._service = service
        self._say = say
        self._transport = transport

    def check(self, call: ToolCall) -> Verdict:
        decision = self._policy.evaluate(call)
        if isinstance(decision, Free):
            return Verdict(decision="defer")
        if isinstance(decision, Denied):
            return Verdict(decision="deny", reason=f"ciba-service policy: {decision.reason}")
        return self._approval(call, decision)

    def _approval(self, call: ToolCall, decision: NeedsApproval) -> Verdict:
        try:
            service = self._service()
        except PolicyError as exc:
            return self._deny(f"cannot ask for approval: {exc}")
        binding_message = _binding_message(call.tool_name)
        agent = CibaAgent(
            issuer=service.issuer,
            client_id=service.client_id,
            client_secret=service.client_secret,
            auth_method=service.auth_method,
            transport=self._transport,
            timeout=min(10.0, service.timeout),
        )
        try:
            pending = agent.request(
                login_hint=service.login_hint,
                authorization_details=decision.authorization_details,
                binding_message=binding_message,
                requested_expiry=service.requested_expiry,
            )
            self._say(
                f"ciba-service: waiting up to {int(min(service.timeout, pending.expires_in))} s for "
                f"{display(service.login_hint)} to approve with a passkey: {decision.words} "
                f"(binding message {binding_message}; the approval link was sent to the user)"
            )
            token = agent.wait(pending, timeout=service.timeout)
            self._verify(token, decision, service)
        except AccessDenied:
            return self._deny(f"{service.login_hint} denied this call (binding message {binding_message})")
        except RequestExpired as exc:
            return self._deny(f"no decision in time ({exc.error}); the call was not approved")
        except ServiceUnreachable as exc:
            return self._deny(f"the approval service is unreachable ({exc.description}); refused (fail closed)")
        except AgentError as exc:
            return self._deny(f"the approval service refused the request: {exc.error} {exc.description or ''}")
        except ResourceError as exc:
            return self._deny(f"the token does not carry this exact call: {exc.description}")
        finally:
            agent.close()
        return Verdict(
            decision="allow",
            reason=f"approved by {display(service.login_hint)} with a passkey (binding message {binding_message})",
        )

    def _verify(self, token: Mapping[str, Any], decision: NeedsApproval, service: ServiceConfig) -> None:
        """The token must be the service's, for this client, and carry exactly the requested
        call: stops a confused or compromised answer (another call's token) from allowing it."""
        with httpx.Client(transport=self._transport, follow_redirects=False, timeout=10.0) as http:
            verifier = TokenVerifier(
                issuer=service.token_issuer or service.issuer,
                audience=service.audience,
                keys=JwksCache(service.jwks_uri or f"{service.issuer}/jwks.json", client=http),
                algorithms=service.algorithms,
            )
            access_token = str(token.get("access_token", ""))
            for entry in decision.authorization_details:
                verifier.verify(access_token, _action(entry))

    def _deny(self, reason: str) -> Verdict:
        reason = display(reason.strip())
        self._say(f"ciba-service: {reason}")
        return Verdict(decision="deny", reason=f"ciba-service: {reason}")


def _action(entry: Mapping[str, Any]) -> RequestedAction:
    common = {"type", "actions", "locations", "identifier", "datatypes", "privileges"}
    return RequestedAction(
        type=str(entry["type"]),
        actions=list(entry["actions"]),
        locations=list(entry.get("locations", [])),
        identifier=entry.get("identifier"),
        datatypes=list(entry.get("datatypes", [])),
        privileges=list(entry.get("privileges", [])),
        fields={k: v for k, v in entry.items() if k not in common},
    )
