"""Keycloak mode: Keycloak is the OpenID Provider; this service forwards the agent's request,
is Keycloak's HTTP authentication channel, and sends the decision callback."""

from ciba_service.server.keycloak.admin import KeycloakAdmin, passkey_from_keycloak
from ciba_service.server.keycloak.forward import identify_client
from ciba_service.server.keycloak.issuer import KeycloakIssuer

__all__ = ["KeycloakAdmin", "KeycloakIssuer", "identify_client", "passkey_from_keycloak"]
