"""Embedded mode: the service is its own CIBA OpenID Provider (the zero-setup default)."""

from ciba_service.server.embedded.issuer import EmbeddedIssuer

__all__ = ["EmbeddedIssuer"]
