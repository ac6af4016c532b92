"""The authorization server: :class:`~ciba_service.server.provider.Provider` is the one
interface the web layer calls in both modes, holding an issuer strategy
(:mod:`~ciba_service.server.embedded` or :mod:`~ciba_service.server.keycloak`). The protocol
steps live in modules named after them: ``backchannel`` (CIBA 7), ``grant`` (CIBA 10/11),
``tokens``, ``client_auth``/``client_secrets``, ``user_code``, ``introspection``, ``discovery``,
``delivery`` (ping/push), ``notify`` (the user's notice), ``approval/`` (the passkey approval).
``wiring.build_provider`` builds one from settings."""

from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider

__all__ = ["Provider", "build_provider"]
