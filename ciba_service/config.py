"""Configuration: a TOML file (``CIBA_CONFIG`` or ``--config``) and ``CIBA_*`` environment
variables, the latter winning. Every option is documented in the README."""

from __future__ import annotations

import contextvars
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ciba_service.core.protocol import TERMINAL_ORIGIN_SCHEME
from ciba_service.rfc9396.registry import AuthorizationDetailsTypeConfig

__all__ = [
    "ClientConfig",
    "KeycloakConfig",
    "Settings",
    "load_settings",
]

_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("ciba_config_file", default=None)


class ClientConfig(BaseModel):
    """An agent (OAuth client) registered with the service."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str
    # scrypt hash made by `ciba-service clients hash-secret`; the plain secret is never stored.
    # Empty in keycloak mode, where Keycloak authenticates the client; here the entry then
    # only narrows the client's authorization_details types.
    client_secret_hash: str = ""
    name: str = ""
    # client_secret_basic / client_secret_post (either, for a client with a secret hash),
    # private_key_jwt (RFC 7523, keys in `jwks`) or spiffe_jwt (a JWT-SVID whose SPIFFE ID
    # is `spiffe_id`, verified against the configured trust bundle).
    token_endpoint_auth_method: Literal[
        "client_secret_basic", "client_secret_post", "private_key_jwt", "spiffe_jwt"
    ] = "client_secret_basic"
    jwks: dict[str, Any] | None = None
    spiffe_id: str | None = None
    grant_types: list[str] = Field(default_factory=lambda: ["urn:openid:params:grant-type:ciba"])
    backchannel_token_delivery_mode: Literal["poll", "ping", "push"] = "poll"
    backchannel_client_notification_endpoint: str | None = None
    # When set, /bc-authorize accepts only signed authentication requests (CIBA 7.1.1).
    backchannel_authentication_request_signing_alg: Literal["ES256", "PS256"] | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid"])
    authorization_details_types: list[str] = Field(default_factory=list)
    audience: str | None = None
    # May call the RFC 7662 introspection endpoint (resource servers register as clients).
    introspection: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ClientConfig:
        mode = self.backchannel_token_delivery_mode
        if mode in ("ping", "push") and not self.backchannel_client_notification_endpoint:
            raise ValueError(f"client {self.client_id}: {mode} mode needs backchannel_client_notification_endpoint")
        if self.token_endpoint_auth_method == "private_key_jwt" and not self.jwks:
            raise ValueError(f"client {self.client_id}: private_key_jwt needs jwks")
        if self.token_endpoint_auth_method == "spiffe_jwt" and not self.spiffe_id:
            raise ValueError(f"client {self.client_id}: spiffe_jwt needs spiffe_id")
        if self.backchannel_authentication_request_signing_alg and not self.jwks:
            raise ValueError(f"client {self.client_id}: signed requests need jwks")
        return self


class KeycloakConfig(BaseModel):
    """Keycloak mode: where the realm is, and the companion's own service account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = "http://localhost:8180"
    realm: str = "agents"
    # The companion client: a service account with realm-management `view-users` only.
    admin_client_id: str = "ciba-companion"
    admin_client_secret: str = ""
    # How long users and passkeys read from the admin API are trusted before re-reading.
    user_cache_ttl: int = Field(default=30, ge=0)
    timeout: float = Field(default=10.0, gt=0)
    # Bounded retries of the decision callback, only when it provably never reached Keycloak.
    callback_attempts: int = Field(default=4, ge=1)

    @field_validator("base_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CIBA_", env_nested_delimiter="__", extra="forbid", frozen=True)

    mode: Literal["embedded", "keycloak"] = "embedded"
    environment: Literal["development", "production"] = "development"
    issuer: str = "http://localhost:8000"
    # Where users' browsers reach the service; the WebAuthn origin is derived from it.
    public_url: str = ""
    rp_id: str = ""
    rp_name: str = "CIBA approvals"
    # Who is asking, on the approval and enrollment pages: the service's name (rp_name when
    # empty) and its logo, an https URL or a path on this service (the pages' CSP allows
    # images from exactly that origin).
    display_name: str = Field(default="", max_length=80)
    logo_url: str = Field(default="", max_length=2048)
    data_dir: Path = Path(".ciba-data")
    # Where state lives: "sqlite" (data_dir/ciba.sqlite3, one instance) or "redis" (every
    # instance pointed at the same redis_url and redis_prefix shares it; see README, Scaling out).
    store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str | None = Field(default=None, repr=False)  # may carry a password
    # One segment ending in ":": two prefixes can then never nest ("ciba:" and "ciba:user:"
    # would let one deployment's keys collide with another's records).
    redis_prefix: str = Field(default="ciba:", pattern=r"^[A-Za-z0-9_.-]+:$")
    access_token_lifetime: int = Field(default=120, ge=10, le=300)
    default_audience: str = "resource-api"
    request_expiry_default: int = Field(default=300, ge=10)
    request_expiry_max: int = Field(default=600, ge=10)
    poll_interval: int = Field(default=2, ge=1)
    binding_message_max_length: int = Field(default=64, ge=1, le=256)
    enrollment_ttl: int = Field(default=900, ge=60)
    max_authorization_details: int = Field(default=10, ge=1)
    max_authorization_details_bytes: int = Field(default=8192, ge=256)
    notifier: Literal["console", "webhook", "none"] = "console"
    webhook_url: str = ""
    webhook_timeout: float = 5.0
    # Seconds one instance holds a user's notice it is sending (the outbox lease): no other
    # instance sends it meanwhile; if it is not confirmed delivered by then (the instance died,
    # or the notifier failed), the next sweep of any instance sharing the store sends it again.
    # Keep it above the longest delivery (the webhook's retries: about 4 x webhook_timeout).
    notice_lease: int = Field(default=60, ge=1)
    clients: list[ClientConfig] = Field(default_factory=list)
    authorization_details_types: dict[str, AuthorizationDetailsTypeConfig] = Field(default_factory=dict)
    # Configured types are added to (or replace, by name) the built-in ones unless this is false.
    include_default_types: bool = True
    keycloak: KeycloakConfig = Field(default_factory=KeycloakConfig)
    # SPIFFE: the trust bundle (a JWKS document, as SPIFFE bundle endpoints serve it) that
    # JWT-SVID client assertions must be signed with, and its trust domain.
    spiffe_trust_domain: str = ""
    spiffe_bundle_path: Path | None = None
    # CIBA user_code (7.1): off unless enabled; users then set one with `users set-user-code`.
    backchannel_user_code_parameter_supported: bool = False
    # Online guessing of a user's user_code: after this many wrong codes for one user within
    # the window (seconds), that user's requests are refused without checking the code.
    user_code_max_failures: int = Field(default=5, ge=1)
    user_code_failure_window: int = Field(default=900, ge=1)
    # Client assertions and request objects older than this are refused (replay window).
    max_assertion_lifetime: int = Field(default=300, ge=30)
    # Bounded retries of ping/push notifications (transient failures only).
    notification_timeout: float = Field(default=5.0, gt=0)
    notification_attempts: int = Field(default=4, ge=1)
    # WebAuthn origins accepted besides the approval page's own, in the approval and the
    # enrollment ceremonies: native approvers, such as the terminal approver
    # (``ciba-cli:https://ciba.example.com``, see ``ciba-service approve``). Exact strings; none
    # by default, so a native client's assertion is refused until its origin is declared.
    approval_origins: list[str] = Field(default_factory=list, max_length=16)
    # Policy enforcement points (README, "Use it as an AuthZEN PDP" and "Protect an MCP
    # server"): the tool-call mapping file the AuthZEN PDP decides with (none: no PDP routes),
    # the clients allowed to call the PDP and to fetch the approval link of their own pending
    # requests (to relay it to their user by MCP URL elicitation), and the audience of the
    # approval tokens the PDP accepts (default_audience when unset).
    pep_policy: Path | None = None
    pep_clients: list[str] = Field(default_factory=list)
    pep_audience: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("issuer", "public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("logo_url")
    @classmethod
    def _logo_is_https_or_ours(cls, value: str) -> str:
        _check_logo_url(value)
        return value

    @model_validator(mode="after")
    def _production_checks(self) -> Settings:
        if self.request_expiry_default > self.request_expiry_max:
            raise ValueError("request_expiry_default must not exceed request_expiry_max")
        if self.environment == "production":
            # WebAuthn needs a secure context; a plain-http origin outside loopback would let a
            # network attacker serve the approval page and relay assertions.
            for url in (self.issuer, self.public_base_url):
                if urlsplit(url).scheme != "https":
                    raise ValueError(f"{url!r} must be https in production")
            if self.notifier == "webhook" and urlsplit(self.webhook_url).scheme != "https":
                raise ValueError("webhook_url must be https in production")
        if self.notifier == "webhook" and not self.webhook_url:
            raise ValueError("notifier = 'webhook' needs webhook_url")
        for client in self.clients:
            if client.token_endpoint_auth_method == "spiffe_jwt" and not (
                self.spiffe_bundle_path and self.spiffe_trust_domain
            ):
                raise ValueError(
                    f"client {client.client_id} uses spiffe_jwt: set spiffe_trust_domain and spiffe_bundle_path"
                )
            endpoint = client.backchannel_client_notification_endpoint
            if endpoint:
                _check_notification_endpoint(endpoint, production=self.environment == "production")
        for origin in self.approval_origins:
            _check_approval_origin(origin, production=self.environment == "production")
        if self.store == "redis" and not self.redis_url:
            raise ValueError("store = 'redis' needs redis_url (CIBA_REDIS_URL)")
        if self.mode == "keycloak" and not self.keycloak.admin_client_secret:
            raise ValueError("keycloak mode needs keycloak.admin_client_secret (CIBA_KEYCLOAK__ADMIN_CLIENT_SECRET)")
        return self

    @property
    def public_base_url(self) -> str:
        return self.public_url or self.issuer

    @property
    def expected_origin(self) -> str:
        parts = urlsplit(self.public_base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def accepted_origins(self) -> list[str]:
        """Every clientDataJSON origin an approval or enrollment may carry: the page's, then the
        configured native approvers'."""
        return [self.expected_origin, *(o for o in self.approval_origins if o != self.expected_origin)]

    @property
    def webauthn_rp_id(self) -> str:
        return self.rp_id or (urlsplit(self.public_base_url).hostname or "localhost")

    def client(self, client_id: str) -> ClientConfig | None:
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None


def _check_logo_url(url: str) -> None:
    """The logo is shown on the approval page: an https URL (no credentials, no fragment) or a
    path on this service. Never plain http (a network attacker could swap the picture the user
    trusts), data: or javascript: URLs, or a scheme-relative ``//host`` path."""
    if not url:
        return
    if any(ch.isspace() or not ch.isprintable() or ch in "\"'<>\\" for ch in url):
        raise ValueError(f"logo_url {url!r} must be a plain URL (no spaces, quotes or backslashes)")
    if url.startswith("/") and not url.startswith("//"):
        return
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password or parts.fragment:
        raise ValueError(f"logo_url {url!r} must be https://host/... (no credentials or fragment) or a path /...")


def _check_notification_endpoint(url: str, *, production: bool) -> None:
    # CIBA 10.2/10.3 deliver tokens and auth_req_ids to this URL: https only, except plain http
    # to loopback during development (nothing crosses a network there).
    parts = urlsplit(url)
    if parts.fragment or not parts.hostname:
        raise ValueError(f"notification endpoint {url!r} must be an absolute URL without fragment")
    if parts.scheme == "https":
        return
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme == "http" and loopback and not production:
        return
    raise ValueError(f"notification endpoint {url!r} must be https (http only to loopback in development)")


_WEB_ORIGIN = re.compile(r"^(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$")
_OPAQUE_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*:[\x21-\x7e]{1,256}$")


def _check_approval_origin(origin: str, *, production: bool) -> None:
    """An approval origin is compared as an exact string; refuse what could only be a mistake
    that widens it (a wildcard, a path, a plain-http origin off loopback in production)."""
    if not _OPAQUE_ORIGIN.fullmatch(origin) or "*" in origin:
        raise ValueError(f"approval_origins: {origin!r} is not an origin (no wildcards, spaces or paths)")
    web = origin.removeprefix(f"{TERMINAL_ORIGIN_SCHEME}:")
    if web != origin or origin.startswith(("http:", "https:")):
        # A web origin, or the terminal approver's origin of one: scheme://host[:port], lower case,
        # nothing after (clientDataJSON origins never carry a path, so one would never match).
        match = _WEB_ORIGIN.fullmatch(web)
        if match is None:
            raise ValueError(f"approval_origins: {origin!r} must end in scheme://host[:port], lower case, no path")
        loopback = match.group(2) in ("localhost", "127.0.0.1", "[::1]")
        if match.group(1) == "http" and (production or not loopback):
            # A plain-http page off loopback can be served by anyone on the network path.
            raise ValueError(f"approval_origins: {origin!r} must be https (http only to loopback in development)")


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Build settings from ``config_file`` (or ``$CIBA_CONFIG``), the environment and overrides."""
    import os

    path = config_file or (Path(os.environ["CIBA_CONFIG"]) if os.environ.get("CIBA_CONFIG") else None)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"configuration file {path} not found")
    token = _config_file.set(path)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    finally:
        _config_file.reset(token)
