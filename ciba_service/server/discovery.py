"""The discovery document (OpenID Connect Discovery 1.0 with the CIBA, RAR and RFC 8414
members). Each issuer strategy builds its own from :func:`common_metadata`, so a mode names
exactly the endpoints it serves."""

from __future__ import annotations

from typing import Any

from ciba_service.core.protocol import CIBA_GRANT_TYPE
from ciba_service.server.context import ServerContext

__all__ = ["common_metadata"]


def common_metadata(context: ServerContext) -> dict[str, Any]:
    """What holds in both modes: the backchannel endpoint is always this service's, and the
    authorization_details types are the ones this service validates."""
    settings = context.settings
    iss = settings.issuer
    return {
        "backchannel_authentication_endpoint": f"{iss}/bc-authorize",
        "grant_types_supported": [CIBA_GRANT_TYPE],
        "scopes_supported": ["openid"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "acr_values_supported": ["phr"],
        "authorization_details_types_supported": sorted(context.registry.types),
    }
