"""Registered protocol identifiers, named once for both sides (service and agent)."""

from __future__ import annotations

__all__ = ["CIBA_GRANT_TYPE"]

# OpenID CIBA Core 1.0, section 10.1: the grant type of the token request.
CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"
