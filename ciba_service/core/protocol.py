"""Registered protocol identifiers, named once for both sides (service and agent)."""

from __future__ import annotations

__all__ = ["CIBA_GRANT_TYPE", "TERMINAL_ORIGIN_SCHEME", "terminal_origin"]

# OpenID CIBA Core 1.0, section 10.1: the grant type of the token request.
CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"

# The WebAuthn origin of the terminal approver (``ciba-service approve``): its own scheme, then
# the web origin of the service it talked to, e.g. ``ciba-cli:https://ciba.example.com``. A
# native client is not a browser: any program can write any origin into clientDataJSON, so the
# service accepts this one only when it is configured (``approval_origins``), and it names the
# service the approver fetched the request from, so an assertion the approver made while
# talking to another host is refused here.
TERMINAL_ORIGIN_SCHEME = "ciba-cli"


def terminal_origin(web_origin: str) -> str:
    """The terminal approver's origin when it talks to the service at ``web_origin``."""
    return f"{TERMINAL_ORIGIN_SCHEME}:{web_origin}"
