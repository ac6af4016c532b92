"""The terminal approver: the user's decoupled device without a browser (``ciba-service approve``).

It does what the approval page does, in the user's terminal, with a FIDO2 security key over
CTAP2 (python-fido2):

1. fetch the pending request the user was sent a link to (``GET <approval link>/details``);
2. check it before showing it: the WebAuthn challenge is SHA-256(JCS(binding document)), and
   the client, the binding message and every ``authorization_details`` entry shown are the
   ones in that document (what is shown is what is signed);
3. show the client, the binding message and every field of every entry, escaped so that no
   string from the request can drive the terminal;
4. ask the key for an assertion with user verification required (PIN or built-in UV) and user
   presence (a touch), with clientDataJSON's origin the terminal approver's own
   (:func:`~ciba_service.core.protocol.terminal_origin`), which the service accepts only when
   configured (``approval_origins``); the RP ID is checked against the link's origin first,
   as a browser would;
5. submit it (``POST <approval link>/approve``).

Nothing here can approve without the key: the assertion needs the user's touch and PIN on a
device the agent process cannot reach, and the approval link goes to the user, not the agent.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from fido2.client import ClientDataCollector, ClientError, Fido2Client, PinRequiredError, UserInteraction
from fido2.ctap import CtapDevice, CtapError
from fido2.ctap2.pin import ClientPin
from fido2.rpid import verify_rp_id
from fido2.webauthn import (
    CollectedClientData,
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions,
)

from ciba_service.agent.device import ChallengeMismatch, check_challenge
from ciba_service.core.protocol import terminal_origin

__all__ = [
    "ApprovalRefused",
    "Ctap2Authenticator",
    "KeyNotEnrolled",
    "NoSecurityKey",
    "NotPending",
    "PinBlocked",
    "RelyingPartyMismatch",
    "RequestView",
    "TerminalApprovalError",
    "UserVerificationUnavailable",
    "ViewMismatch",
    "WrongPin",
    "approve",
    "deny",
    "describe",
    "enroll",
    "find_devices",
    "read_request",
    "shown",
]

_FLAG_UP, _FLAG_UV = 0x01, 0x04
# A view is a few KiB (at most 10 entries of 8 KiB in all); refuse to parse more.
_MAX_VIEW = 256 * 1024


class TerminalApprovalError(Exception):
    """The terminal approver refused or could not complete; the message says why, for the user."""


class NotPending(TerminalApprovalError):
    """The request was already decided, or has expired."""


class ViewMismatch(TerminalApprovalError):
    """What the service would show is not what the key would sign."""


class RelyingPartyMismatch(TerminalApprovalError):
    """The request asks for an RP ID the link's origin may not use."""


class NoSecurityKey(TerminalApprovalError):
    """No FIDO2 security key is connected."""


class KeyNotEnrolled(TerminalApprovalError):
    """The key holds no passkey of the requested user for this service."""


class WrongPin(TerminalApprovalError):
    """The key refused the PIN."""


class PinBlocked(TerminalApprovalError):
    """The key's PIN is blocked (too many wrong PINs)."""


class UserVerificationUnavailable(TerminalApprovalError):
    """The key cannot verify the user (no PIN set, no built-in UV), or the user gave no PIN,
    or did not touch the key."""


class ApprovalRefused(TerminalApprovalError):
    """The service refused the assertion or the decision."""


# --- what the user is shown ------------------------------------------------------------------


def shown(value: object) -> str:
    """``value`` as text that cannot drive the terminal: control and format characters
    (escape sequences, bidi overrides, zero-width characters) and line breaks are written as
    ``\\uXXXX``. Stops a request from rewriting what the terminal shows (an ANSI sequence that
    erases "delete" and prints "read"; a right-to-left override that reverses a name)."""
    text = value if isinstance(value, str) else _json_text(value)
    return "".join(
        f"\\u{ord(ch):04x}" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else ch
        for ch in text
    )


def _json_text(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fields(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    """Every leaf of an entry, as (dotted name, text): nothing signed goes unshown."""
    if isinstance(value, dict):
        if not value:
            yield prefix, "{}"
        for key in sorted(value):
            yield from _fields(f"{prefix}.{key}" if prefix else str(key), value[key])
    elif isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            yield prefix, ", ".join(shown(v) for v in value) if value else "(none)"
        else:
            for index, item in enumerate(value):
                yield from _fields(f"{prefix}[{index}]", item)
    else:
        yield prefix, shown(value)


@dataclass(frozen=True, kw_only=True)
class RequestView:
    """A pending request, checked: every field below is the one the key will sign."""

    approval_url: str
    web_origin: str
    issuer: str
    client_id: str
    client_name: str
    username: str
    binding_message: str | None
    entries: list[tuple[str, dict[str, Any]]]  # (the service's words, the signed entry)
    expires_at: int
    public_key: dict[str, Any]


def describe(view: RequestView, *, now: float | None = None) -> list[str]:
    """The lines the terminal shows: who asks, the binding message, each entry in words and
    then every one of its fields."""
    name = f"{shown(view.client_name)} ({shown(view.client_id)})" if view.client_name else shown(view.client_id)
    lines = [
        f"{name} asks {shown(view.username)} to approve, at {shown(view.issuer)}:",
        f"  binding message: {shown(view.binding_message) if view.binding_message is not None else '(none)'}",
    ]
    for index, (text, entry) in enumerate(view.entries, start=1):
        lines.append(f"  {index}. {shown(text)}")
        lines += [f"       {shown(key)}: {value}" for key, value in _fields("", entry)]
    remaining = max(0, view.expires_at - int(time.time() if now is None else now))
    lines.append(f"  expires in {remaining} s")
    return lines


def web_origin_of(url: str) -> str:
    parsed = httpx.URL(url)
    # Only a web service can be the relying party's origin (a file: or custom-scheme link is not).
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TerminalApprovalError(f"not an http(s) link: {shown(url)}")
    default = {"http": 80, "https": 443}[parsed.scheme]
    port = f":{parsed.port}" if parsed.port and parsed.port != default else ""
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}{port}"


def read_request(http: httpx.Client, approval_url: str, *, now: float | None = None) -> RequestView:
    """Fetch the view behind an approval link and check it; raises TerminalApprovalError."""
    approval_url = approval_url.rstrip("/")
    origin = web_origin_of(approval_url)
    try:
        response = http.get(f"{approval_url}/details", headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise TerminalApprovalError(f"cannot reach the service: {type(exc).__name__}") from None
    # Bounded: a hostile service must not make the approver parse megabytes.
    if len(response.content) > _MAX_VIEW:
        raise TerminalApprovalError("the service's answer is too large to be an approval request")
    try:
        view = response.json()
    except ValueError:
        view = None
    if response.status_code != 200 or not isinstance(view, dict):
        error = view.get("error_description") if isinstance(view, dict) else None
        raise TerminalApprovalError(f"the service answered HTTP {response.status_code}: {shown(error or '')}")
    return check_view(view, approval_url=approval_url, web_origin=origin, now=time.time() if now is None else now)


def check_view(view: dict[str, Any], *, approval_url: str, web_origin: str, now: float) -> RequestView:
    """The checks the page makes, and those a terminal needs because it prints the fields."""
    # A decided or expired request: nothing to sign (and a replayed old view signs nothing).
    if view.get("status") != "pending":
        raise NotPending(f"this request is {shown(view.get('status'))}; nothing to approve")
    document = view.get("binding_document")
    public_key = view.get("publicKey")
    # Without the document there is nothing to check the challenge against: sign nothing blind.
    if not isinstance(document, dict) or not isinstance(public_key, dict):
        raise ViewMismatch("the service sent no binding document or no WebAuthn options")
    # The challenge must be the digest of the document: otherwise the key would sign something
    # other than what is shown (a swapped action behind an honest-looking page).
    try:
        check_challenge(view)
    except ChallengeMismatch as exc:
        raise ViewMismatch(f"refused: {exc}") from None
    details = document.get("authorization_details")
    entries = view.get("entries")
    if not isinstance(details, list) or not isinstance(entries, list) or len(entries) != len(details):
        raise ViewMismatch("the entries shown are not the entries signed")
    words: list[tuple[str, dict[str, Any]]] = []
    for entry, signed in zip(entries, details, strict=True):
        # The service's words and the raw entry must describe the signed entry, or the user
        # would read one action and approve another.
        if not isinstance(entry, dict) or entry.get("detail") != signed or not isinstance(signed, dict):
            raise ViewMismatch("an entry shown is not the entry signed")
        words.append((str(entry.get("text", "")), signed))
    # The agent named and the code the user compares must be the signed ones (a trusted name
    # shown over another agent's request, a binding message that matches the wrong screen).
    for field in ("client_id", "binding_message"):
        if view.get(field) != document.get(field):
            raise ViewMismatch(f"the {field} shown is not the {field} signed")
    # Another version of the document may mean more than the fields this approver shows.
    if document.get("v") != 1:
        raise ViewMismatch(f"unknown binding document version {shown(document.get('v'))}")
    expires_at = document.get("exp")
    # The signed expiry, not the page's status: a stale view replayed as pending is refused.
    if not isinstance(expires_at, int) or expires_at <= now:
        raise NotPending("this request has expired")
    return RequestView(
        approval_url=approval_url,
        web_origin=web_origin,
        issuer=str(document.get("iss", "")),
        client_id=str(document["client_id"]),
        client_name=str(view.get("client_name") or ""),
        username=str(view.get("username", "")),
        binding_message=document.get("binding_message"),
        entries=words,
        expires_at=expires_at,
        public_key=public_key,
    )


# --- the security key ------------------------------------------------------------------------


def find_devices() -> list[CtapDevice]:
    """The FIDO2 security keys connected over USB HID."""
    from fido2.hid import CtapHidDevice

    return list(CtapHidDevice.list_devices())


class _TerminalClientData(ClientDataCollector):
    """clientDataJSON for the terminal approver: origin ``ciba-cli:<web origin>``; the RP ID
    must be one the link's web origin may use (the browser's rule, WebAuthn 5.1.4.1 step 8)."""

    def __init__(self, web_origin: str) -> None:
        self._web_origin = web_origin

    def collect_client_data(
        self, options: PublicKeyCredentialCreationOptions | PublicKeyCredentialRequestOptions
    ) -> tuple[CollectedClientData, str]:
        if isinstance(options, PublicKeyCredentialCreationOptions):
            rp_id, kind = options.rp.id, CollectedClientData.TYPE.CREATE
        else:
            rp_id, kind = options.rp_id, CollectedClientData.TYPE.GET
        # Stops a phishing host (a link to anything but the service) from obtaining a
        # signature for the service's RP ID: the same check a browser makes.
        if not rp_id or not verify_rp_id(rp_id, self._web_origin):
            raise RelyingPartyMismatch(f"{shown(self._web_origin)} may not ask for RP ID {shown(rp_id)}")
        data = CollectedClientData.create(
            type=kind, origin=terminal_origin(self._web_origin), challenge=options.challenge
        )
        return data, rp_id


class _Prompts(UserInteraction):
    def __init__(self, read_pin: Callable[[], str | None], on_touch: Callable[[], None]) -> None:
        self._read_pin = read_pin
        self._on_touch = on_touch

    def prompt_up(self) -> None:
        self._on_touch()

    def request_pin(self, permissions: ClientPin.PERMISSION, rp_id: str | None) -> str | None:
        return self._read_pin()

    def request_uv(self, permissions: ClientPin.PERMISSION, rp_id: str | None) -> bool:
        return True


class Ctap2Authenticator:
    """A FIDO2 security key over CTAP2, asked for assertions and credentials the way the
    approval page asks the browser, with user verification always required."""

    def __init__(
        self,
        device: CtapDevice,
        *,
        read_pin: Callable[[], str | None],
        on_touch: Callable[[], None] = lambda: None,
    ) -> None:
        self._device = device
        self._prompts = _Prompts(read_pin, on_touch)

    def _client(self, web_origin: str) -> Fido2Client:
        return Fido2Client(self._device, _TerminalClientData(web_origin), self._prompts)

    def get(self, options: dict[str, Any], *, web_origin: str) -> dict[str, Any]:
        """An assertion for PublicKeyCredentialRequestOptions JSON; raises TerminalApprovalError."""
        # Without an allow list the key would offer any discoverable credential it holds for the
        # RP, another user's included: the service always names the user's passkeys.
        if not options.get("allowCredentials"):
            raise KeyNotEnrolled("the user has no passkey registered with the service")
        # UV required whatever the service asked: a touch alone (someone else at the desk, or
        # a key left plugged in) must not approve.
        request = PublicKeyCredentialRequestOptions.from_dict({**options, "userVerification": "required"})
        with self._errors():
            selection = self._client(web_origin).get_assertion(request)
        response = selection.get_response(0)
        flags = bytes(response.response.authenticator_data)[32]
        # Defence in depth (the service checks too): never send an assertion without UP and UV.
        if not flags & _FLAG_UP or not flags & _FLAG_UV:
            raise UserVerificationUnavailable("the key did not verify the user (UP and UV are required)")
        return dict(response)

    def create(self, options: dict[str, Any], *, web_origin: str) -> dict[str, Any]:
        """A new credential for PublicKeyCredentialCreationOptions JSON (enrollment)."""
        selection = {**options.get("authenticatorSelection", {}), "userVerification": "required"}
        request = PublicKeyCredentialCreationOptions.from_dict({**options, "authenticatorSelection": selection})
        with self._errors():
            response = self._client(web_origin).make_credential(request)
        return dict(response)

    def _errors(self) -> _CtapErrors:
        return _CtapErrors(self._device)


class _CtapErrors:
    """Turns python-fido2's errors into what the user can act on."""

    def __init__(self, device: CtapDevice) -> None:
        self._device = device

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, PinRequiredError):
            raise UserVerificationUnavailable("no PIN given: the request was not approved") from None
        if isinstance(exc, ClientError):
            raise self._translate(exc) from None
        if isinstance(exc, CtapError):
            raise TerminalApprovalError(f"the security key failed: {shown(str(exc))}") from None

    def _translate(self, exc: ClientError) -> TerminalApprovalError:
        cause = exc.cause
        code = cause.code if isinstance(cause, CtapError) else None
        if code is CtapError.ERR.PIN_INVALID:
            return WrongPin(f"wrong PIN{self._retries()}; the request was not approved")
        if code in (CtapError.ERR.PIN_BLOCKED, CtapError.ERR.PIN_AUTH_BLOCKED):
            return PinBlocked("the key's PIN is blocked; reset or unblock the key")
        if exc.code is ClientError.ERR.DEVICE_INELIGIBLE:
            return KeyNotEnrolled("this key holds no passkey of the requested user for this service")
        if exc.code is ClientError.ERR.TIMEOUT or code is CtapError.ERR.OPERATION_DENIED:
            return UserVerificationUnavailable("the key was not touched in time")
        if exc.code is ClientError.ERR.CONFIGURATION_UNSUPPORTED:
            return UserVerificationUnavailable("this key cannot verify the user: set a PIN on it first")
        return TerminalApprovalError(f"the security key failed: {shown(repr(exc))}")

    def _retries(self) -> str:
        try:
            from fido2.ctap2.base import Ctap2

            retries, _ = ClientPin(Ctap2(self._device)).get_pin_retries()
        except (CtapError, ValueError, OSError):
            return ""
        return f" ({retries} attempts left before the key blocks)"


# --- the decision ----------------------------------------------------------------------------


def approve(http: httpx.Client, view: RequestView, authenticator: Ctap2Authenticator) -> dict[str, Any]:
    """Ask the key for the assertion over the checked view's challenge and submit it."""
    credential = authenticator.get(view.public_key, web_origin=view.web_origin)
    return _post(http, f"{view.approval_url}/approve", {"credential": credential})


def deny(http: httpx.Client, view: RequestView) -> dict[str, Any]:
    return _post(http, f"{view.approval_url}/deny", {})


def enroll(http: httpx.Client, enrollment_url: str, authenticator: Ctap2Authenticator) -> dict[str, Any]:
    """Register the key's new passkey through a one-time enrollment link."""
    enrollment_url = enrollment_url.rstrip("/")
    origin = web_origin_of(enrollment_url)
    try:
        answer = http.post(f"{enrollment_url}/options", json={})
    except httpx.HTTPError as exc:
        raise TerminalApprovalError(f"cannot reach the service: {type(exc).__name__}") from None
    options = _answer(answer)
    user = options.get("user")
    if not isinstance(user, dict) or not isinstance(options.get("challenge"), str):
        raise TerminalApprovalError("the service sent no registration options")
    credential = authenticator.create(options, web_origin=origin)
    return _post(http, f"{enrollment_url}/complete", {"credential": credential})


def _post(http: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        response = http.post(url, json=body)
    except httpx.HTTPError as exc:
        raise TerminalApprovalError(f"cannot reach the service: {type(exc).__name__}") from None
    return _answer(response)


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        result = response.json()
    except ValueError:
        result = None
    if response.status_code != 200 or not isinstance(result, dict):
        description = result.get("error_description") if isinstance(result, dict) else None
        raise ApprovalRefused(f"the service refused (HTTP {response.status_code}): {shown(description or '')}")
    return result
