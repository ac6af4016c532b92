"""The resource-server library: verify approved-action access tokens without the service
running. The guide is ``RESOURCE_SERVER.md``; everything a resource server needs is named here::

    from ciba_service.rs import JwksCache, RequestedAction, TokenVerifier

- :mod:`~ciba_service.rs.verifier`: :class:`TokenVerifier`, :class:`VerifiedToken`.
- :mod:`~ciba_service.rs.matching`: :class:`RequestedAction` (and
  :class:`InvalidRequestedAction`, raised when one is built from values JSON cannot carry),
  :class:`FieldRule`, :func:`action_matches`.
- :mod:`~ciba_service.rs.errors`: :class:`ResourceError` and its subclasses.
- :mod:`~ciba_service.rs.introspection`: :class:`TokenIntrospection` (RFC 7662).
- :mod:`~ciba_service.rs.replay`: :class:`RedisReplayCache`; :class:`InMemoryReplayCache` and
  the :class:`ReplayCache` interface come from ``ciba_service.core.replay``.
- keys (:class:`JwksCache`, :class:`StaticKeys`) from ``ciba_service.jose.jwks``, DPoP nonces
  (:class:`DPoPNonces`) from ``ciba_service.rfc9449``.

The FastAPI glue (``require_action``, ``install_error_handler``) is in
:mod:`ciba_service.rs.fastapi` only, and is not imported here: a resource server on another
framework does not load FastAPI (nor, through it, pydantic).
"""

from ciba_service.core.replay import InMemoryReplayCache, ReplayCache, ReplayStoreUnavailable
from ciba_service.jose.jwks import JwksCache, JwksUnavailable, KeySource, StaticKeys, VerificationKey
from ciba_service.rfc9449 import DPoPNonces
from ciba_service.rs.errors import (
    InsufficientAuthorization,
    InsufficientUserAuthentication,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    ResourceError,
    ResourceUnavailable,
    UseDPoPNonce,
)
from ciba_service.rs.introspection import TokenIntrospection
from ciba_service.rs.matching import (
    Comparator,
    FieldRule,
    FieldRules,
    InvalidRequestedAction,
    RequestedAction,
    action_matches,
)
from ciba_service.rs.replay import RedisReplayCache
from ciba_service.rs.verifier import TokenVerifier, VerifiedToken

__all__ = [
    "Comparator",
    "DPoPNonces",
    "FieldRule",
    "FieldRules",
    "InMemoryReplayCache",
    "InsufficientAuthorization",
    "InsufficientUserAuthentication",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidRequestedAction",
    "InvalidToken",
    "JwksCache",
    "JwksUnavailable",
    "KeySource",
    "MissingToken",
    "RedisReplayCache",
    "ReplayCache",
    "ReplayStoreUnavailable",
    "RequestedAction",
    "ResourceError",
    "ResourceUnavailable",
    "StaticKeys",
    "TokenIntrospection",
    "TokenVerifier",
    "UseDPoPNonce",
    "VerificationKey",
    "VerifiedToken",
    "action_matches",
]
