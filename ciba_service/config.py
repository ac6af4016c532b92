"""Configuration: a TOML file (``--config``, ``CIBA_CONFIG``, or the first of
:func:`config_search_path`) and ``CIBA_*`` environment variables, the latter winning. Every option
is documented in the README.

A configuration that cannot work is refused with :class:`ConfigError`, whose message names the
file, the key and the fix (``configuration.py`` errors are read by operators, not programs)."""

from __future__ import annotations

import contextvars
import difflib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ciba_service.core.protocol import TERMINAL_ORIGIN_SCHEME
from ciba_service.rfc9396.registry import AuthorizationDetailsTypeConfig

__all__ = [
    "ClientConfig",
    "ConfigChoice",
    "ConfigError",
    "KeycloakConfig",
    "Settings",
    "config_search_path",
    "explain_config_error",
    "find_config",
    "load_settings",
    "unauthenticatable_clients",
]

# The parsed configuration file, for the settings source (see Settings.settings_customise_sources).
_config_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("ciba_config_data", default=None)


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

    # Opt-in (a privacy choice, README "Tokens"): the name of a claim that carries the user's
    # username in the access and ID tokens, for resource servers' audit logs (e.g.
    # "preferred_username"). Unset, tokens name the user only by the opaque ``sub``. Embedded
    # mode only: in keycloak mode Keycloak mints the tokens and the realm's mappers decide.
    token_username_claim: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_:.-]{0,63}$")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        data = _config_data.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if data is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=data))
        return tuple(sources)

    @field_validator("token_username_claim")
    @classmethod
    def _not_a_registered_claim(cls, value: str | None) -> str | None:
        if value in _RESERVED_CLAIMS:
            raise ValueError(f"{value!r} is a claim the service sets itself; pick another name (preferred_username)")
        return value

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


_RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "scope", "auth_time", "acr", "amr"}
    | {"authorization_details", "approval", "cnf", "at_hash", "nonce", "azp"}
)


# where the configuration comes from ----------------------------------------------------------
CONFIG_ENV = "CIBA_CONFIG"


def config_search_path() -> list[Path]:
    """Where a command looks for its configuration when neither ``--config`` nor
    ``$CIBA_CONFIG`` names one, in order: the working directory (a project's own file), the
    user's (XDG) configuration directory, then the system-wide file."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [
        Path("ciba-service.toml"),
        Path(xdg) / "ciba-service" / "config.toml",
        Path("/etc/ciba-service/config.toml"),
    ]


@dataclass(frozen=True, kw_only=True)
class ConfigChoice:
    """The configuration file a command uses (None: defaults and ``CIBA_*`` only), and why."""

    path: Path | None
    source: str  # "--config", "CIBA_CONFIG", "found", or "none"
    searched: tuple[Path, ...] = ()


def find_config(explicit: Path | None = None) -> ConfigChoice:
    """``explicit`` (``--config``), else ``$CIBA_CONFIG``, else the first file of
    :func:`config_search_path` that exists. A file named explicitly must exist."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"configuration file {explicit} not found (--config)")
        return ConfigChoice(path=explicit, source="--config")
    named = os.environ.get(CONFIG_ENV)
    if named:
        if not Path(named).is_file():
            raise ConfigError(f"configuration file {named} not found (CIBA_CONFIG)")
        return ConfigChoice(path=Path(named), source=CONFIG_ENV)
    searched = tuple(config_search_path())
    for candidate in searched:
        if candidate.is_file():
            return ConfigChoice(path=candidate, source="found", searched=searched)
    return ConfigChoice(path=None, source="none", searched=searched)


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Build settings from ``config_file`` (or ``$CIBA_CONFIG``), the environment and overrides.

    Relative paths in the file (``data_dir``, ``spiffe_bundle_path``, ``pep_policy``) are
    relative to the file's directory, so every command reading one file finds the same data
    whatever its working directory. A file that is missing or not TOML raises
    :class:`ConfigError`; values that do not validate raise pydantic's ``ValidationError``
    (:func:`explain_config_error` says it with the file and the key)."""
    named = os.environ.get(CONFIG_ENV)
    path = config_file or (Path(named) if named else None)
    data: dict[str, Any] | None = None
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"configuration file {path} not found")
        text = path.read_text(encoding="utf-8")
        data = _parse_toml(path, text)
        for key in ("data_dir", "spiffe_bundle_path", "pep_policy"):
            value = data.get(key)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                data[key] = str(path.parent / value)
    token = _config_data.set(data)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    finally:
        _config_data.reset(token)


def explain_config_error(exc: ValidationError, *, path: Path | None) -> ConfigError:
    """``exc`` (from :func:`load_settings` reading ``path``) as an operator reads it: each
    problem with the file (or environment variable) and key it comes from, and the fix."""
    text = path.read_text(encoding="utf-8") if path is not None and path.is_file() else ""
    try:
        data = tomllib.loads(text) if text else {}
    except tomllib.TOMLDecodeError:
        data = {}
    return ConfigError(_describe_errors(exc, path=path, text=text, data=data))


# configuration errors, said so an operator can fix them --------------------------------------
class ConfigError(ValueError):
    """The configuration cannot work; the message names the file, the key and the fix."""


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = f"{path}: not valid TOML: {exc}"
        line_no = re.search(r"line (\d+)", str(exc))
        if line_no:
            lines = text.splitlines()
            number = int(line_no.group(1))
            line = lines[number - 1] if 0 < number <= len(lines) else ""
            bare = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*=\s*([^\s\"'\[{0-9+-].*?)\s*(#.*)?$", line)
            if bare and bare.group(2) not in ("true", "false", "inf", "nan"):
                message += f'; a text value must be quoted: {bare.group(1)} = "{bare.group(2)}"'
        raise ConfigError(message) from None


def _model_for(table: tuple[int | str, ...]) -> type[BaseModel]:
    """The model whose keys belong in ``table`` (the top level, a client, [keycloak], a type)."""
    if table[:1] == ("clients",):
        return ClientConfig
    if table[:1] == ("keycloak",):
        return KeycloakConfig
    if table[:1] == ("authorization_details_types",) and len(table) >= 2:
        return AuthorizationDetailsTypeConfig
    return Settings


def _key_name(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """``clients[1].issuer``, with the client's id when the file gives one."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(loc) >= 2 and loc[0] == "clients" and isinstance(loc[1], int):
        clients = data.get("clients")
        if isinstance(clients, list) and loc[1] < len(clients) and isinstance(clients[loc[1]], dict):
            client_id = clients[loc[1]].get("client_id")
            if client_id:
                out += f" (client {client_id!r})"
    return out


def _table_line(text: str, table: str, index: int) -> int | None:
    """The line of the ``index``-th ``[[table]]`` header (1-based), if the text has one."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]", line):
            if seen == index:
                return number
            seen += 1
    return None


def _describe_errors(exc: ValidationError, *, path: Path | None, text: str, data: dict[str, Any]) -> str:
    where = f"{path}: " if path is not None else ""
    problems: list[str] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if not loc:  # a rule across keys (e.g. store = "redis" without redis_url)
            problems.append(f"{where}{message}")
            continue
        key = _key_name(loc, data)
        source = where if loc[0] in data else ""
        env = f"CIBA_{str(loc[0]).upper()}"
        if not source and env in os.environ:
            source = f"environment variable {env}: "
        if error["type"] == "extra_forbidden":
            name = str(loc[-1])
            if len(loc) >= 2 and name in Settings.model_fields and name not in _model_for(loc[:-1]).model_fields:
                table = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
                header = f"[[{table}]]" if loc[0] == "clients" else f"[{table}]"
                line = _table_line(text, str(loc[0]), loc[1]) if isinstance(loc[1], int) else None
                at = f" on line {line}" if line else ""
                problems.append(
                    f"{source}{key}: `{name}` is a top-level setting, but it comes after the {header} header{at}, "
                    f"and in TOML a key after a table header belongs to that table: move `{name} = …` above the "
                    "first [table] or [[table]] header"
                )
                continue
            if loc[0] == "clients" and name == "client_secret":
                problems.append(
                    f"{source}{key}: the service never stores a client's secret, only its hash: replace this "
                    "line with the client_secret_hash line `ciba-service clients hash-secret --stdin` prints "
                    "for it (the secret on its stdin)"
                )
                continue
            model = _model_for(loc[:-1])
            close = difflib.get_close_matches(name, list(model.model_fields), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else f"; known keys: {', '.join(model.model_fields)}"
            problems.append(f"{source}{key}: unknown key{hint}")
            continue
        shown = error.get("input")
        value = f" (got {shown!r})" if error["type"] != "missing" and not isinstance(shown, dict | list) else ""
        problems.append(f"{source}{key}: {message}{value}")
    return "; ".join(problems) if len(problems) == 1 else "\n  " + "\n  ".join(problems)


# clients that could never authenticate ------------------------------------------------------
_HASH = re.compile(r"^(sha256\$[A-Za-z0-9_-]{43}|scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]{43})$")


def unauthenticatable_clients(settings: Settings) -> list[str]:
    """Why each configured client could never authenticate (embedded mode; in keycloak mode
    Keycloak authenticates clients and an entry only narrows their policy): no credentials, a
    secret where its hash goes, a placeholder. One line per client, naming it and the fix."""
    if settings.mode != "embedded":
        return []
    problems = []
    fix = "generate one with `ciba-service clients hash-secret` and paste its client_secret_hash line"
    for client in settings.clients:
        name = f"client {client.client_id!r}"
        method = client.token_endpoint_auth_method
        stored = client.client_secret_hash
        if method in ("private_key_jwt", "spiffe_jwt"):
            continue  # ClientConfig requires their jwks or spiffe_id; a secret hash is not used
        if not stored:
            problems.append(
                f"{name} has no credentials: set client_secret_hash ({fix}), or jwks with "
                'token_endpoint_auth_method = "private_key_jwt", or spiffe_id with "spiffe_jwt"'
            )
        elif "…" in stored or "..." in stored or "REPLACE" in stored.upper() or stored in ("sha256$", "scrypt$"):
            problems.append(f"{name}: client_secret_hash {stored!r} is a placeholder from the documentation: {fix}")
        elif not _HASH.fullmatch(stored):
            problems.append(
                f"{name}: client_secret_hash is not a hash (it must start with sha256$ or scrypt$; a secret "
                "must never be stored in the configuration): pipe the secret into "
                "`ciba-service clients hash-secret --stdin`, or generate a new one with `ciba-service clients "
                "hash-secret`, and paste the client_secret_hash line it prints"
            )
    return problems
