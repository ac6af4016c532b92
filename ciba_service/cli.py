"""``ciba-service``: serve, manage users, passkeys and clients, act as an agent, run the demo.

Everything heavy (the server, the store, pydantic, JWT, Rich's live display) is imported inside
the command that needs it, so ``--help`` and the small commands start in a fraction of a second.

A user's mistake (a missing file, bad JSON, an unreachable service, a configuration error) ends
in one line on stderr that says what is wrong and a non-zero exit, never a traceback: commands
raise :class:`CliError` (or a library's own error, which :func:`main` says in one line)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core

if TYPE_CHECKING:
    from ciba_service.config import ConfigChoice, Settings
    from ciba_service.server.admin import UserAdministration
    from ciba_service.server.provider import Provider

__all__ = ["CliError", "app", "main"]


# Flags show no value placeholder in --help (Typer would print "<bool>" beside each of them).
_display_type = typer.core.TyperOption.display_type_rich


def _flag_without_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]


def _examples(*lines: str) -> str:
    """A command's epilog: its examples, one per line."""
    # "\b" keeps click from re-wrapping the paragraph.
    return "Examples:\n\n\b\n" + "\n".join(f"  $ {line}" for line in lines)


app = typer.Typer(
    no_args_is_help=True,
    help="Just-in-time, passkey-approved authorization for AI agents.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog="Configuration: --config FILE, else $CIBA_CONFIG, else ./ciba-service.toml, "
    "$XDG_CONFIG_HOME/ciba-service/config.toml, /etc/ciba-service/config.toml (the first found).",
)
users_app = typer.Typer(no_args_is_help=True, help="Users of the approval side (embedded mode).")
passkeys_app = typer.Typer(no_args_is_help=True, help="The users' passkeys: list and revoke.")
audit_app = typer.Typer(no_args_is_help=True, help="What operators did to users and passkeys.")
clients_app = typer.Typer(no_args_is_help=True, help="Agent (OAuth client) registration helpers.")
agent_app = typer.Typer(no_args_is_help=True, help="Act as an agent: request approval for an action.")
receipts_app = typer.Typer(no_args_is_help=True, help="Approval receipts.")
hook_app = typer.Typer(no_args_is_help=True, help="Coding-agent hooks: approval before a sensitive tool call.")
app.add_typer(users_app, name="users")
app.add_typer(passkeys_app, name="passkeys")
app.add_typer(audit_app, name="audit")
app.add_typer(clients_app, name="clients")
app.add_typer(agent_app, name="agent")
app.add_typer(receipts_app, name="receipts")
app.add_typer(hook_app, name="hook")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file (default: $CIBA_CONFIG, else ./ciba-service.toml, "
        "$XDG_CONFIG_HOME/ciba-service/config.toml, /etc/ciba-service/config.toml).",
    ),
]
ByOption = Annotated[
    str | None,
    typer.Option("--by", help="Who does this, for the audit record (default: your OS user name)."),
]


class CliError(Exception):
    """A mistake the user can fix: said in one line, exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _say(message: str) -> None:
    """One plain line on stderr (never Rich markup: a value such as "[red]" prints as itself)."""
    typer.echo(message, err=True)


def _version(value: bool) -> None:
    if value:
        from ciba_service import __version__

        typer.echo(f"ciba-service {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Just-in-time, passkey-approved authorization for AI agents."""


# configuration and the data directory ---------------------------------------------------------
def _settings(config: Path | None) -> tuple[Settings, ConfigChoice]:
    from pydantic import ValidationError

    from ciba_service.config import explain_config_error, find_config, load_settings

    choice = find_config(config)
    try:
        settings = load_settings(choice.path)
    except ValidationError as exc:
        raise explain_config_error(exc, path=choice.path) from None
    if choice.path is None:
        looked = ", ".join(str(p) for p in choice.searched)
        _say(
            f"no configuration file (--config, CIBA_CONFIG, {looked}): using the defaults, "
            f"data directory {settings.data_dir.resolve()}"
        )
    return settings, choice


def _require_data(settings: Settings, choice: ConfigChoice) -> None:
    """Commands that only read never create an empty data directory: a fresh one would answer
    "no user" or "unknown receipt" about a service that keeps its data elsewhere."""
    data_dir = settings.data_dir
    missing = not data_dir.is_dir() or (settings.store == "sqlite" and not (data_dir / "ciba.sqlite3").is_file())
    if missing:
        where = f"configuration {choice.path}" if choice.path else "no configuration file"
        raise CliError(
            f"no service data in {data_dir.resolve()} ({where}); this command does not create it. "
            "Point it at the service's configuration (--config FILE or CIBA_CONFIG=FILE), "
            "or run `ciba-service serve` or `ciba-service users add` first",
            code=2,
        )


def _provider(config: Path | None, *, create: bool = False) -> Provider:
    from ciba_service.server.wiring import build_provider

    settings, choice = _settings(config)
    if not create:
        _require_data(settings, choice)
    with _configuration_errors():
        return build_provider(settings)


@contextmanager
def _configuration_errors() -> Iterator[None]:
    """What building the service refuses (an unknown type in a client, a bad policy file, a
    client that cannot authenticate) is a configuration error: said in one line, exit 2."""
    try:
        yield
    except ValueError as exc:
        if isinstance(exc, UnicodeError):
            raise
        raise CliError(f"configuration error: {exc}", code=2) from None


def _actor(by: str | None) -> str:
    if by:
        return by
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (some containers)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _admin(config: Path | None, by: str | None, *, create: bool = False) -> UserAdministration:
    from ciba_service.server.admin import UserAdministration

    return UserAdministration(_provider(config, create=create), actor=_actor(by))


def _when(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch)) if epoch else "-"


# serve ------------------------------------------------------------------------------------------
@app.command(
    epilog=_examples(
        "ciba-service serve                                  # ./ciba-service.toml, port 8000",
        "ciba-service serve --config /etc/ciba-service/config.toml --host 0.0.0.0 --port 8000",
    )
)
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (they share the store: SQLite WAL or Redis).")
    ] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (uvicorn's access log); errors are logged either way.")
    ] = False,
) -> None:
    """Run the service (embedded mode unless configured otherwise).

    Approval links appear in this log (notifier = "console", the default) unless a webhook is
    configured."""
    from urllib.parse import urlsplit

    import uvicorn

    from ciba_service.server.tokens import SigningKey
    from ciba_service.web.app import build_app
    from ciba_service.web.serving import HotPathHttpToolsProtocol

    settings, choice = _settings(config)
    with _configuration_errors():
        app_ = build_app(settings)
    source = f"config {choice.path}" if choice.path else "no config file"
    _say(
        f"ciba-service {settings.mode} mode, issuer {settings.issuer}, {source}, data in {settings.data_dir.resolve()}"
    )
    public = urlsplit(settings.public_base_url)
    public_port = public.port or {"http": 80, "https": 443}.get(public.scheme)
    if public.hostname in ("localhost", "127.0.0.1") and public_port != port:
        # Links, discovery and the WebAuthn origin all come from the configured URL.
        _say(f"warning: the issuer/public URL says port {public_port} but this listens on {port}")
    if not settings.clients and settings.mode == "embedded":
        _say("warning: no clients are configured: no agent can authenticate (see `ciba-service clients hash-secret`)")
    if settings.token_username_claim and settings.mode == "keycloak":
        _say("warning: token_username_claim is ignored in keycloak mode: Keycloak's mappers decide the token's claims")
    # httptools (C HTTP parser) and uvloop (libuv event loop) when installed: the pure-Python
    # h11 parser and asyncio loop cost a third of the request time under load.
    # The access log is off unless asked for: a line per request costs ~5% of the time under
    # load, and would show every authorization_pending poll (a 400, as CIBA 11 says) as an error.
    serving: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "http": HotPathHttpToolsProtocol,
        "loop": "auto",
        "access_log": access_log,
    }
    if workers == 1:
        uvicorn.run(app_, **serving)
        return
    # Several processes: each builds its own app from the same configuration (the signing key
    # and the store were created above, so workers only open them; SQLite runs in WAL mode and
    # every guarded step is one transaction, Redis one script).
    if choice.path is not None:
        os.environ["CIBA_CONFIG"] = str(choice.path.resolve())
    SigningKey.load_or_create(settings.data_dir / "signing-key.pem")
    uvicorn.run("ciba_service.web.app:app_from_environment", factory=True, workers=workers, **serving)


# users ------------------------------------------------------------------------------------------
@users_app.command(
    "add", epilog=_examples("ciba-service users add alice", 'ciba-service users add bob --display-name "Bob B."')
)
def users_add(
    name: str,
    display_name: Annotated[str | None, typer.Option(help="Name shown on the passkey prompt.")] = None,
    config: ConfigOption = None,
    by: ByOption = None,
) -> None:
    """Create a user and print a one-time passkey enrollment link (open it in the user's browser)."""
    from ciba_service.core.errors import ApprovalError

    admin = _admin(config, by, create=True)
    try:
        link = admin.add_user(name, display_name=display_name)
    except ApprovalError as exc:
        raise CliError(exc.description) from None
    typer.echo(link)


@users_app.command("enroll-link", epilog=_examples("ciba-service users enroll-link alice"))
def users_enroll_link(name: str, config: ConfigOption = None, by: ByOption = None) -> None:
    """Print a new one-time enrollment link for an existing user (another passkey)."""
    from ciba_service.core.errors import ApprovalError

    try:
        typer.echo(_admin(config, by).enrollment_link(name))
    except ApprovalError as exc:
        raise CliError(exc.description) from None


@users_app.command(
    "set-user-code",
    epilog=_examples("ciba-service users set-user-code alice", "ciba-service users set-user-code alice --clear"),
)
def users_set_user_code(
    name: str,
    config: ConfigOption = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the user's code.")] = False,
    by: ByOption = None,
) -> None:
    """Set (prompted, hidden) or clear the CIBA user_code a user gives to agents."""
    admin = _admin(config, by)
    admin.user(name)  # a precise "no user" before prompting
    code = None if clear else typer.prompt("user_code", hide_input=True, confirmation_prompt=True)
    admin.set_user_code(name, code)
    typer.echo("user_code cleared" if clear else "user_code set")


@users_app.command("list", epilog=_examples("ciba-service users list"))
def users_list(config: ConfigOption = None) -> None:
    """List users, how many passkeys each has, and whether they are enabled."""
    provider = _provider(config)
    for user in provider.store.list_users():
        count = len(provider.store.passkeys_for(user.user_id))
        typer.echo(f"{user.username}\t{user.user_id}\tpasskeys={count}\tenabled={user.enabled}")


@users_app.command("disable", epilog=_examples("ciba-service users disable alice --by ops-oncall"))
def users_disable(name: str, config: ConfigOption = None, by: ByOption = None) -> None:
    """Disable a user: agents can no longer ask them, and their pending requests cannot be approved."""
    changed = _admin(config, by).set_enabled(name, enabled=False)
    typer.echo(f"{name} disabled" if changed else f"{name} was already disabled")


@users_app.command("enable", epilog=_examples("ciba-service users enable alice"))
def users_enable(name: str, config: ConfigOption = None, by: ByOption = None) -> None:
    """Enable a disabled user again."""
    changed = _admin(config, by).set_enabled(name, enabled=True)
    typer.echo(f"{name} enabled" if changed else f"{name} was already enabled")


# passkeys ---------------------------------------------------------------------------------------
@passkeys_app.command("list", epilog=_examples("ciba-service passkeys list alice"))
def passkeys_list(name: str, config: ConfigOption = None) -> None:
    """List a user's passkeys: credential id, created, signature counter, transports."""
    passkeys = _admin(config, None).passkeys(name)
    if not passkeys:
        _say(f"{name} has no passkey (`ciba-service users enroll-link {name}`)")
    for p in passkeys:
        transports = ",".join(p.transports) or "-"
        typer.echo(
            f"{p.credential_id}\tcreated={_when(p.created_at)}\tsign_count={p.sign_count}\ttransports={transports}"
        )


@passkeys_app.command("revoke", epilog=_examples("ciba-service passkeys revoke alice Xk3v9q --by ops-oncall"))
def passkeys_revoke(
    name: str,
    credential_id: Annotated[str, typer.Argument(help="The credential id (or a unique prefix of 6+ characters).")],
    config: ConfigOption = None,
    by: ByOption = None,
) -> None:
    """Revoke a passkey (lost or stolen authenticator): it no longer approves anything.

    Receipts of approvals it made stay verifiable (they keep their own copy of the public key)."""
    info = _admin(config, by).revoke_passkey(name, credential_id)
    typer.echo(f"revoked passkey {info.credential_id} of {name}")


# audit ------------------------------------------------------------------------------------------
@audit_app.command(
    "list", epilog=_examples("ciba-service audit list", "ciba-service audit list --user alice --limit 10")
)
def audit_list(
    config: ConfigOption = None,
    user: Annotated[str | None, typer.Option("--user", help="Only the records about this user.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many records, newest first.")] = 50,
) -> None:
    """Show who did what to users and passkeys (newest first): time, operator, action, user, detail."""
    for record in _admin(config, None).audit(limit=limit, username=user):
        detail = " ".join(f"{k}={v}" for k, v in record.detail.items())
        typer.echo(f"{_when(record.at)}\t{record.actor}\t{record.action}\t{detail}")


# clients ----------------------------------------------------------------------------------------
def _toml_string(value: str) -> str:
    # A JSON string of printable text is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=True)


@clients_app.command(
    "hash-secret",
    # A secret given as an argument is caught and refused with the reason, not "unexpected argument".
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=_examples(
        "ciba-service clients hash-secret                    # generate; secret on stderr, TOML on stdout",
        "ciba-service clients hash-secret --client-id ops-agent --secret-file agent.secret >> ciba-service.toml",
        "ciba-service clients hash-secret --stdin < typed-secret.txt",
    ),
)
def clients_hash_secret(
    ctx: typer.Context,
    from_stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the secret from stdin (prompted, hidden, on a terminal).")
    ] = False,
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="Print a whole [[clients]] table for this client id.")
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option("--secret-file", help="Write the generated secret to this new file (mode 0600), not stderr."),
    ] = None,
) -> None:
    """Print client_secret_hash as TOML, for the configuration's [[clients]] entry.

    Without --stdin a secret is generated (256 bits), shown once on stderr (or written to
    --secret-file) and stored as one SHA-256 (sha256$...): nothing can guess it, so a slow KDF
    would only cost CPU on every request. A secret you chose (--stdin) may be guessable, so it
    gets scrypt. The secret is never taken from the command line: it would stay in your shell
    history."""
    from ciba_service.core.security import digest_secret, hash_secret, new_id

    if ctx.args:
        raise CliError(
            "a secret on the command line stays in your shell history: pipe it in with --stdin "
            "(ciba-service clients hash-secret --stdin < file), or omit it to generate one",
            code=2,
        )
    if from_stdin and secret_file is not None:
        raise CliError("--secret-file is for a generated secret; with --stdin you already have yours", code=2)
    if from_stdin:
        if sys.stdin.isatty():
            value = typer.prompt("client secret", hide_input=True, confirmation_prompt=True, err=True)
        else:
            value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise CliError("no secret on stdin (one line expected)", code=2)
        _say("note: a secret you chose is hashed with scrypt; omit --stdin to get a generated one")
        stored = hash_secret(value)
    else:
        value = new_id(32)
        stored = digest_secret(value)
        if secret_file is not None:
            try:
                fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise CliError(f"{secret_file} exists: the secret is not written over it", code=2) from None
            with os.fdopen(fd, "w") as out:
                out.write(value + "\n")
            _say(f"the client secret is in {secret_file} (mode 0600); the service keeps only its hash")
        else:
            _say(f"client secret (shown once; give it to the agent, the service keeps only its hash): {value}")
    if client_id is not None:
        typer.echo(f"\n[[clients]]\nclient_id = {_toml_string(client_id)}")
    typer.echo(f"client_secret_hash = {_toml_string(stored)}")


# agent ------------------------------------------------------------------------------------------
def _authorization_details(value: str) -> Any:
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            value = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read --authorization-details file {path}: {exc.strerror or exc}", code=2) from None
        except UnicodeDecodeError:
            raise CliError(f"--authorization-details file {path} is not UTF-8 text", code=2) from None
        where = f"file {path}"
    else:
        where = "value"
    try:
        details = json.loads(value)
    except ValueError as exc:
        raise CliError(f"--authorization-details {where} is not JSON: {exc}", code=2) from None
    if not isinstance(details, list) or not details or not all(isinstance(d, dict) for d in details):
        raise CliError(
            f"--authorization-details {where} must be a JSON array of objects, "
            'e.g. [{"type": "iam_policy", "actions": ["update"], "identifier": "policy-42"}]',
            code=2,
        )
    return details


class _Progress:
    """The wait, shown: a live status line on a terminal; otherwise one line per state change
    (logs and CI keep a readable record, without a line per second)."""

    def __init__(self, *, binding_message: str | None, expires_in: int) -> None:
        self._bm = f", binding message {binding_message}" if binding_message else ""
        self._state: str | None = None
        self._live: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(stderr=True), refresh_per_second=4, transient=True)
        else:
            _say(f"request sent{self._bm}; expires in {expires_in} s")

    def __enter__(self) -> _Progress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def tick(self, state: str, remaining: float) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(f"⏳ {state}{self._bm}: {int(remaining)} s left"))
        elif state != self._state:
            self._state = state
            _say(f"{state}{self._bm} ({int(remaining)} s left)")


@agent_app.command(
    "request",
    epilog=_examples(
        "CIBA_AGENT_CLIENT_SECRET=... ciba-service agent request --client-id ops-agent --login-hint alice "
        '--binding-message OPS-1 -a \'[{"type":"iam_policy","actions":["update"],"identifier":"policy-42"}]\'',
        "ciba-service agent request --client-id ops-agent --login-hint alice -a @action.json --show-claims",
    ),
)
def agent_request(
    authorization_details: Annotated[
        str, typer.Option("--authorization-details", "-a", help="JSON array, or @file.json.")
    ],
    login_hint: Annotated[str, typer.Option(help="The user who must approve.")],
    client_id: Annotated[
        str, typer.Option(envvar="CIBA_AGENT_CLIENT_ID", help="The agent's client id, as configured in [[clients]].")
    ],
    issuer: Annotated[str, typer.Option(envvar="CIBA_AGENT_ISSUER", help="The service's issuer URL.")] = (
        "http://localhost:8000"
    ),
    client_secret: Annotated[
        str, typer.Option(envvar="CIBA_AGENT_CLIENT_SECRET", help="Prefer the environment variable.")
    ] = "",
    binding_message: Annotated[
        str | None, typer.Option(help="A short code the user checks on the approval page.")
    ] = None,
    scope: Annotated[str, typer.Option()] = "openid",
    requested_expiry: Annotated[int | None, typer.Option(help="Seconds the request may wait for the user.")] = None,
    show_claims: Annotated[bool, typer.Option("--show-claims", help="Print the decoded claims.")] = False,
    dpop_key: Annotated[
        Path | None,
        typer.Option("--dpop-key", help="P-256 PEM key (created if missing): bind the token to it (DPoP)."),
    ] = None,
) -> None:
    """Send a backchannel request, wait for the user's decision, print the token on stdout."""
    details = _authorization_details(authorization_details)
    if not client_secret:
        raise CliError("set CIBA_AGENT_CLIENT_SECRET (or --client-secret) to the agent's client secret", code=2)
    from ciba_service.agent import AuthorizationError, CibaAgent

    key = _dpop_key(dpop_key) if dpop_key else None
    agent = CibaAgent(issuer=issuer, client_id=client_id, client_secret=client_secret, dpop_key=key)
    try:
        pending = agent.request(
            login_hint=login_hint,
            authorization_details=details,
            binding_message=binding_message,
            scope=scope,
            requested_expiry=requested_expiry,
        )
        with _Progress(binding_message=pending.binding_message, expires_in=pending.expires_in) as progress:
            token = agent.wait(pending, on_tick=progress.tick)
    except AuthorizationError as exc:
        unreachable = exc.error == "temporarily_unavailable" and exc.status is None
        reason = f"cannot reach {issuer}: {exc.description}" if unreachable else f"{exc.error}: {exc.description or ''}"
        raise CliError(reason.rstrip(": ")) from None
    finally:
        agent.close()
    typer.echo(token["access_token"])
    _say(f"approved: token_type {token.get('token_type')}, expires_in {token.get('expires_in')} s")
    if show_claims:
        import jwt

        claims = jwt.decode(token["access_token"], options={"verify_signature": False})
        _say(json.dumps(claims, indent=2))


def _dpop_key(path: Path) -> Any:
    from ciba_service.server.tokens import SigningKey

    try:
        return SigningKey.load_or_create(path).private_key
    except (ValueError, TypeError) as exc:
        raise CliError(f"--dpop-key {path} is not a P-256 private key in PEM: {exc}", code=2) from None


# the user's side from a terminal ----------------------------------------------------------------
def _security_keys() -> list[Any]:
    """The connected FIDO2 security keys (tests replace this with a software CTAP2 device)."""
    from ciba_service.agent.terminal import find_devices

    return find_devices()


def _read_pin() -> str | None:
    """The key's PIN, read from the terminal (/dev/tty when there is one), never echoed."""
    import getpass

    return getpass.getpass("PIN of your security key (empty to cancel): ") or None


def _terminal_authenticator() -> Any:
    from ciba_service.agent.terminal import Ctap2Authenticator, NoSecurityKey

    devices = _security_keys()
    if not devices:
        raise NoSecurityKey("no FIDO2 security key found: plug one in (USB) and try again")
    if len(devices) > 1:
        typer.echo(f"{len(devices)} security keys found; using the first", err=True)
    return Ctap2Authenticator(
        devices[0], read_pin=_read_pin, on_touch=lambda: typer.echo("Touch your security key to approve.", err=True)
    )


@app.command(
    epilog=_examples(
        "ciba-service approve https://ciba.example.com/approve/AbC...",
        "ciba-service approve --deny https://ciba.example.com/approve/AbC...",
    )
)
def approve(
    link: Annotated[str, typer.Argument(help="The approval link you were sent (https://…/approve/…).")],
    deny_request: Annotated[bool, typer.Option("--deny", help="Deny the request instead.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before using the key.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the service.")] = 10.0,
) -> None:
    """Approve (or deny) a request from the terminal, with a FIDO2 security key (CTAP2).

    Shows the client, the binding message and every field of the action, checks that the
    WebAuthn challenge is the digest of exactly that, then asks the key for a user-verified
    assertion (PIN and touch). The service must list this approver's origin,
    ``ciba-cli:<its web origin>``, in ``approval_origins``."""
    import httpx

    from ciba_service.agent import terminal

    with httpx.Client(timeout=timeout, follow_redirects=False) as http:
        try:
            view = terminal.read_request(http, link)
            # Plain echo, never Rich markup: a field such as "[red]" must print as itself.
            for line in terminal.describe(view):
                typer.echo(line, err=True)
            if deny_request:
                result = terminal.deny(http, view)
            else:
                if not yes and not typer.confirm("Approve this request with your security key?", err=True):
                    typer.echo("not approved; nothing was sent", err=True)
                    raise typer.Exit(1)
                result = terminal.approve(http, view, _terminal_authenticator())
        except terminal.TerminalApprovalError as exc:
            typer.echo(f"not approved: {exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(json.dumps(result))
    typer.echo(result.get("status", ""), err=True)


@app.command("enroll-key", epilog=_examples("ciba-service enroll-key https://ciba.example.com/enroll/AbC..."))
def enroll_key(
    link: Annotated[str, typer.Argument(help="A one-time enrollment link (https://…/enroll/…).")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the service.")] = 10.0,
) -> None:
    """Register a FIDO2 security key (CTAP2) as your passkey, from the terminal.

    The key makes a new credential with user verification (PIN); the service must list
    ``ciba-cli:<its web origin>`` in ``approval_origins``."""
    import httpx

    from ciba_service.agent import terminal

    with httpx.Client(timeout=timeout, follow_redirects=False) as http:
        try:
            typer.echo("Touch your security key when it blinks.", err=True)
            result = terminal.enroll(http, link, _terminal_authenticator())
        except terminal.TerminalApprovalError as exc:
            typer.echo(f"not enrolled: {exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(json.dumps(result))


@hook_app.command("claude-code", epilog=_examples("ciba-service hook claude-code < event.json"))
def hook_claude_code(
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            envvar="CIBA_HOOK_POLICY",
            help="Policy file (default: $CLAUDE_PROJECT_DIR/.claude/ciba-policy.toml, else in ./.claude/).",
        ),
    ] = None,
) -> None:
    """Claude Code PreToolUse hook: reads the event on stdin, answers allow/deny JSON on stdout.

    Install it with ``"command": "ciba-service hook claude-code || exit 2"`` (see the README,
    "Guard a coding agent"): it exits 0 with its decision, or 2, and denies whenever anything
    fails."""
    from ciba_service.hooks.claude_code import run

    if policy is None:
        project = os.environ.get("CLAUDE_PROJECT_DIR") or "."
        policy = Path(project) / ".claude" / "ciba-policy.toml"
    raise typer.Exit(run(sys.stdin.buffer, sys.stdout, sys.stderr, policy_path=policy))


@hook_app.command(
    "copilot",
    epilog=_examples(
        "ciba-service hook copilot < event.json",
        "ciba-service hook copilot --policy .github/hooks/ciba-policy.toml < event.json",
    ),
)
def hook_copilot(
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            envvar="CIBA_HOOK_POLICY",
            help="Policy file (default: ./.github/hooks/ciba-policy.toml).",
        ),
    ] = None,
) -> None:
    """GitHub Copilot CLI preToolUse hook: reads the event on stdin, answers allow/deny JSON.

    Install it in .github/hooks/ciba.json as {"type": "command", "bash": "ciba-service hook
    copilot", "timeoutSec": 300} (see the README, "Guard a coding agent"). Copilot CLI runs the
    call when a hook fails or times out, so this hook always answers, denying on any failure."""
    from ciba_service.hooks.copilot import run

    raise typer.Exit(run(sys.stdin.buffer, sys.stdout, sys.stderr, policy_path=policy or _COPILOT_POLICY))


_COPILOT_POLICY = Path(".github") / "hooks" / "ciba-policy.toml"


@receipts_app.command("verify")
def receipts_verify(receipt_id: str, config: ConfigOption = None) -> None:
    """Re-verify a stored approval receipt (signature over the recorded preimage).

    \b
    Examples:
      $ ciba-service receipts verify 9f3c...   # the receipt named in the token's approval claim
    """
    from ciba_service.core.errors import ApprovalError

    provider = _provider(config)
    try:
        result = provider.verify_receipt(receipt_id)
    except ApprovalError as exc:
        raise CliError(f"invalid: {exc.description}") from None
    typer.echo(json.dumps(result, indent=2))


@app.command(epilog=_examples("ciba-service demo", "ciba-service demo --json | tail -1"))
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON summary line on stdout.")] = False,
) -> None:
    """Run the whole flow in embedded mode and show each step."""
    from ciba_service.demo.run import run_demo

    started = time.monotonic()
    summary: dict[str, Any] = run_demo(as_json=as_json)
    ok = all(summary.get(k) for k in ("approved", "token_accepted", "replay_refused", "other_action_refused"))
    if not as_json:
        _say(f"demo finished in {time.monotonic() - started:.1f}s: {'OK' if ok else 'FAILED'}")
    raise typer.Exit(0 if ok else 1)


# one line for a user's mistake ------------------------------------------------------------------
def _failure(exc: Exception) -> tuple[str, int] | None:
    """The one line and exit code for an error a user can fix; None for a bug. Each library's
    error type is looked up only if that library was loaded (otherwise it was not raised)."""
    if isinstance(exc, CliError):
        return str(exc), exc.code
    mods = sys.modules
    config = mods.get("ciba_service.config")
    if config is not None and isinstance(exc, config.ConfigError):
        return f"configuration error: {exc}", 2
    admin = mods.get("ciba_service.server.admin")
    if admin is not None and isinstance(exc, admin.AdministrationError):
        return str(exc), 1
    store = mods.get("ciba_service.store.errors")
    if store is not None and isinstance(exc, store.StoreMisconfigured):
        return f"store misconfigured: {exc}", 2
    if store is not None and isinstance(exc, store.StoreUnavailable):
        return f"the store is unavailable: {exc}", 1
    errors = mods.get("ciba_service.core.errors")
    if errors is not None and isinstance(exc, errors.ApprovalError):
        return exc.description, 1
    httpx = mods.get("httpx")
    if httpx is not None and isinstance(exc, httpx.HTTPError):
        return f"cannot reach the service: {type(exc).__name__}: {exc}", 1
    if httpx is not None and isinstance(exc, httpx.InvalidURL):
        return f"not a usable URL: {exc}", 2
    if isinstance(exc, OSError):
        target = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{target}", 1
    return None


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app(sys.argv[1:], prog_name="ciba-service")
    except KeyboardInterrupt:
        _say("interrupted")
        raise SystemExit(130) from None
    except Exception as exc:
        failure = _failure(exc)
        if failure is None and os.environ.get("CIBA_DEBUG"):
            raise
        message, code = failure or (
            f"unexpected error: {type(exc).__name__}: {exc} (set CIBA_DEBUG=1 to see the traceback)",
            70,
        )
        _say(f"ciba-service: {message}")
        raise SystemExit(code) from None
