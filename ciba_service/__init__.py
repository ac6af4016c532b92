"""Just-in-time, passkey-approved authorization for AI agents (OpenID CIBA + RFC 9396)."""

__version__ = "0.1.0"
