"""``ciba-service``: serve, manage users and clients, act as an agent, run the demo."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import jwt
import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from ciba_service.config import Settings, load_settings
from ciba_service.core.security import digest_secret, hash_secret, new_id
from ciba_service.server.provider import Provider

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, help="Just-in-time, passkey-approved authorization for AI agents.")
users_app = typer.Typer(no_args_is_help=True, help="Users of the approval side (embedded mode).")
clients_app = typer.Typer(no_args_is_help=True, help="Agent (OAuth client) registration helpers.")
agent_app = typer.Typer(no_args_is_help=True, help="Act as an agent: request approval for an action.")
receipts_app = typer.Typer(no_args_is_help=True, help="Approval receipts.")
hook_app = typer.Typer(no_args_is_help=True, help="Coding-agent hooks: approval before a sensitive tool call.")
app.add_typer(users_app, name="users")
app.add_typer(clients_app, name="clients")
app.add_typer(agent_app, name="agent")
app.add_typer(receipts_app, name="receipts")
app.add_typer(hook_app, name="hook")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file (default: $CIBA_CONFIG)."),
]
err = Console(stderr=True)


def _provider(config: Path | None) -> Provider:
    from ciba_service.server.wiring import build_provider

    try:
        return build_provider(_settings(config))
    except ValueError as exc:
        err.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
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
    """Run the service (embedded mode unless configured otherwise)."""
    from urllib.parse import urlsplit

    import uvicorn

    from ciba_service.server.tokens import SigningKey
    from ciba_service.web.app import build_app
    from ciba_service.web.serving import OneWriteHttpToolsProtocol

    settings = _settings(config)
    err.print(f"ciba-service {settings.mode} mode, issuer {settings.issuer}, data in {settings.data_dir}")
    public = urlsplit(settings.public_base_url)
    public_port = public.port or {"http": 80, "https": 443}.get(public.scheme)
    if public.hostname in ("localhost", "127.0.0.1") and public_port != port:
        # Links, discovery and the WebAuthn origin all come from the configured URL.
        err.print(f"[yellow]warning:[/] the issuer/public URL says port {public_port} but this listens on {port}")
    if not settings.clients and settings.mode == "embedded":
        err.print("[yellow]warning:[/] no clients are configured: no agent can authenticate")
    try:
        app_ = build_app(settings)
    except ValueError as exc:
        err.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    # httptools (C HTTP parser) and uvloop (libuv event loop) when installed: the pure-Python
    # h11 parser and asyncio loop cost a third of the request time under load.
    # The access log is off unless asked for: a line per request costs ~5% of the time under
    # load, and would show every authorization_pending poll (a 400, as CIBA 11 says) as an error.
    serving: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "http": OneWriteHttpToolsProtocol,
        "loop": "auto",
        "access_log": access_log,
    }
    if workers == 1:
        uvicorn.run(app_, **serving)
        return
    # Several processes: each builds its own app from the same configuration (the signing key
    # and the store were created above, so workers only open them; SQLite runs in WAL mode and
    # every guarded step is one transaction, Redis one script).
    if config is not None:
        os.environ["CIBA_CONFIG"] = str(config.resolve())
    SigningKey.load_or_create(settings.data_dir / "signing-key.pem")
    uvicorn.run("ciba_service.web.app:app_from_environment", factory=True, workers=workers, **serving)


@users_app.command("add")
def users_add(
    name: str,
    display_name: Annotated[str | None, typer.Option(help="Name shown on the passkey prompt.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a user and print a one-time passkey enrollment link."""
    from ciba_service.core.errors import ApprovalError

    provider = _provider(config)
    try:
        _, link = provider.add_user(username=name, display_name=display_name)
    except ApprovalError as exc:
        err.print(f"[red]{exc.description}[/]")
        raise typer.Exit(1) from None
    typer.echo(link)


@users_app.command("enroll-link")
def users_enroll_link(name: str, config: ConfigOption = None) -> None:
    """Print a new one-time enrollment link for an existing user (another passkey)."""

    provider = _provider(config)
    user = provider.store.find_user(name)
    if user is None:
        err.print(f"[red]no user {name!r}[/]")
        raise typer.Exit(1)
    typer.echo(provider.new_enrollment_link(user))


@users_app.command("set-user-code")
def users_set_user_code(
    name: str,
    config: ConfigOption = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the user's code.")] = False,
) -> None:
    """Set (prompted, hidden) or clear the CIBA user_code a user gives to agents."""

    provider = _provider(config)
    user = provider.store.find_user(name)
    if user is None:
        err.print(f"[red]no user {name!r}[/]")
        raise typer.Exit(1)
    code = None if clear else typer.prompt("user_code", hide_input=True, confirmation_prompt=True)
    provider.set_user_code(user, code)
    typer.echo("user_code cleared" if clear else "user_code set")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """List users and how many passkeys each has."""

    provider = _provider(config)
    for user in provider.store.list_users():
        count = len(provider.store.passkeys_for(user.user_id))
        typer.echo(f"{user.username}\t{user.user_id}\tpasskeys={count}\tenabled={user.enabled}")


@clients_app.command("hash-secret")
def clients_hash_secret(
    secret: Annotated[str | None, typer.Argument(help="Secret to hash; a new one is generated if omitted.")] = None,
) -> None:
    """Print a client secret (when generated) and its hash for `client_secret_hash`.

    A generated secret (256 bits) is stored as one SHA-256: nothing can guess it, so a slow
    KDF would only cost CPU on every request. A secret you type may be guessable, so it gets
    scrypt (checked once per process and cached; see the README's security notes)."""
    if secret is None:
        secret = new_id(32)
        typer.echo(f"client_secret = {secret}")
        typer.echo(f"client_secret_hash = {digest_secret(secret)}")
        return
    typer.echo("note: a secret you chose is hashed with scrypt; omit it to get a generated one", err=True)
    typer.echo(f"client_secret_hash = {hash_secret(secret)}")


@agent_app.command("request")
def agent_request(
    authorization_details: Annotated[
        str, typer.Option("--authorization-details", "-a", help="JSON array, or @file.json.")
    ],
    login_hint: Annotated[str, typer.Option(help="The user who must approve.")],
    issuer: Annotated[str, typer.Option(envvar="CIBA_AGENT_ISSUER")] = "http://localhost:8000",
    client_id: Annotated[str, typer.Option(envvar="CIBA_AGENT_CLIENT_ID")] = "demo-agent",
    client_secret: Annotated[
        str, typer.Option(envvar="CIBA_AGENT_CLIENT_SECRET", help="Prefer the environment variable.")
    ] = "",
    binding_message: Annotated[str | None, typer.Option()] = None,
    scope: Annotated[str, typer.Option()] = "openid",
    requested_expiry: Annotated[int | None, typer.Option()] = None,
    show_claims: Annotated[bool, typer.Option("--show-claims", help="Print the decoded claims.")] = False,
    dpop_key: Annotated[
        Path | None,
        typer.Option("--dpop-key", help="P-256 PEM key (created if missing): bind the token to it (DPoP)."),
    ] = None,
) -> None:
    """Send a backchannel request, wait for the user's decision, print the token."""
    from ciba_service.agent import AgentError, CibaAgent
    from ciba_service.server.tokens import SigningKey

    raw = (
        Path(authorization_details[1:]).read_text() if authorization_details.startswith("@") else authorization_details
    )
    try:
        details = json.loads(raw)
    except ValueError as exc:
        err.print(f"[red]--authorization-details is not JSON: {exc}[/]")
        raise typer.Exit(2) from None
    if not client_secret:
        err.print("[red]set CIBA_AGENT_CLIENT_SECRET (or --client-secret)[/]")
        raise typer.Exit(2)
    key = SigningKey.load_or_create(dpop_key).private_key if dpop_key else None
    agent = CibaAgent(issuer=issuer, client_id=client_id, client_secret=client_secret, dpop_key=key)
    try:
        pending = agent.request(
            login_hint=login_hint,
            authorization_details=details,
            binding_message=binding_message,
            scope=scope,
            requested_expiry=requested_expiry,
        )
        status = Text()
        with Live(status, console=err, refresh_per_second=4, transient=True) as live:

            def on_tick(state: str, remaining: float) -> None:
                bm = f" binding message [{pending.binding_message}]" if pending.binding_message else ""
                live.update(Text(f"⏳ {state}:{bm} {int(remaining)} s left"))

            token = agent.wait(pending, on_tick=on_tick)
    except AgentError as exc:
        err.print(f"[red]{exc.error}[/]: {exc.description or ''}")
        raise typer.Exit(1) from None
    finally:
        agent.close()
    typer.echo(token["access_token"])
    err.print(f"token_type {token.get('token_type')}, expires_in {token.get('expires_in')} s")
    if show_claims:
        claims = jwt.decode(token["access_token"], options={"verify_signature": False})
        err.print_json(json.dumps(claims))


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


@app.command()
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


@app.command("enroll-key")
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


@hook_app.command("claude-code")
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


@receipts_app.command("verify")
def receipts_verify(receipt_id: str, config: ConfigOption = None) -> None:
    """Re-verify a stored approval receipt (signature over the recorded preimage)."""
    from ciba_service.core.errors import ApprovalError

    provider = _provider(config)
    try:
        result = provider.verify_receipt(receipt_id)
    except ApprovalError as exc:
        err.print(f"[red]invalid:[/] {exc.description}")
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2))


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON summary line on stdout.")] = False,
) -> None:
    """Run the whole flow in embedded mode and show each step."""
    from ciba_service.demo.run import run_demo

    started = time.monotonic()
    summary: dict[str, Any] = run_demo(as_json=as_json)
    ok = all(summary.get(k) for k in ("approved", "token_accepted", "replay_refused", "other_action_refused"))
    if not as_json:
        err.print(f"demo finished in {time.monotonic() - started:.1f}s: {'OK' if ok else 'FAILED'}")
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app(sys.argv[1:])
