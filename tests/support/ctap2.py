"""A software CTAP2 security key for tests: python-fido2's ``CtapDevice`` interface, speaking
real CTAP2 over CBOR (``fido2.cbor``), with real P-256 keys and signatures (cryptography).

It implements what a FIDO2 key does for the terminal approver: ``authenticatorGetInfo``,
``authenticatorMakeCredential``, ``authenticatorGetAssertion``, ``authenticatorSelection`` and
``authenticatorClientPIN`` with PIN/UV auth protocol 2 (key agreement, ``pinHashEnc``,
``getPinUvAuthTokenUsingPinWithPermissions``, retries and blocking), so python-fido2's
``Fido2Client`` runs its real code path against it. User presence is a callable (the touch);
user verification is the PIN (a key without a PIN cannot verify the user).

Test code only: it holds its keys in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from threading import Event
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fido2 import cbor
from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID

ERR = CtapError.ERR
AAGUID = bytes.fromhex("c1ba5e5e0000400080000000000000a1")
FLAG_UP, FLAG_UV, FLAG_AT = 0x01, 0x04, 0x40
PERMISSION_MC, PERMISSION_GA = 0x01, 0x02
MAX_PIN_RETRIES = 8


class CtapFailure(Exception):
    def __init__(self, code: ERR) -> None:
        super().__init__(code.name)
        self.code = code


@dataclass
class StoredCredential:
    credential_id: bytes
    rp_id: str
    user: dict[str, Any]
    private_key: ec.EllipticCurvePrivateKey
    sign_count: int = 0


@dataclass
class PinToken:
    value: bytes
    permissions: int
    rp_id: str | None


def _cose(public_key: ec.EllipticCurvePublicKey, alg: int) -> dict[int, Any]:
    numbers = public_key.public_numbers()
    return {1: 2, 3: alg, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}


def _public_from_cose(key: dict[int, Any]) -> ec.EllipticCurvePublicKey:
    if key.get(1) != 2 or key.get(-1) != 1:
        raise CtapFailure(ERR.INVALID_PARAMETER)
    x, y = int.from_bytes(key[-2], "big"), int.from_bytes(key[-3], "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


class _PinProtocolTwo:
    """CTAP 2.1, 6.5.7: PIN/UV auth protocol 2, the authenticator's half."""

    VERSION = 2

    def __init__(self) -> None:
        self.regenerate()

    def regenerate(self) -> None:
        self.key_agreement = ec.generate_private_key(ec.SECP256R1())

    def cose_key(self) -> dict[int, Any]:
        return _cose(self.key_agreement.public_key(), -25)

    def shared_secret(self, platform_key: dict[int, Any]) -> bytes:
        z = self.key_agreement.exchange(ec.ECDH(), _public_from_cose(platform_key))

        def hkdf(info: bytes) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"\0" * 32, info=info).derive(z)

        return hkdf(b"CTAP2 HMAC key") + hkdf(b"CTAP2 AES key")

    @staticmethod
    def decrypt(secret: bytes, data: bytes) -> bytes:
        iv, body = data[:16], data[16:]
        if len(body) == 0 or len(body) % 16:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        decryptor = Cipher(algorithms.AES(secret[32:]), modes.CBC(iv)).decryptor()
        return decryptor.update(body) + decryptor.finalize()

    @staticmethod
    def encrypt(secret: bytes, data: bytes) -> bytes:
        iv = os.urandom(16)
        encryptor = Cipher(algorithms.AES(secret[32:]), modes.CBC(iv)).encryptor()
        return iv + encryptor.update(data) + encryptor.finalize()

    @staticmethod
    def authenticate(key: bytes, message: bytes) -> bytes:
        return hmac.new(key[:32], message, hashlib.sha256).digest()


@dataclass
class SoftCtap2Device(CtapDevice):
    """A FIDO2 security key in memory. ``pin``: set PIN (None: no PIN, so no UV);
    ``touch``: the user presence test (returns whether the user touched the key)."""

    pin: str | None = "1234"
    touch: Callable[[], bool] = lambda: True
    credentials: list[StoredCredential] = field(default_factory=list)
    pin_retries: int = MAX_PIN_RETRIES
    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._protocol = _PinProtocolTwo()
        self._token: PinToken | None = None

    @property
    def capabilities(self) -> int:
        return int(CAPABILITY.CBOR)

    @classmethod
    def list_devices(cls) -> Iterator[CtapDevice]:
        return iter(())

    # transport ---------------------------------------------------------------------------
    def call(
        self,
        cmd: int,
        data: bytes = b"",
        event: Event | None = None,
        on_keepalive: Callable[[STATUS], None] | None = None,
    ) -> bytes:
        if cmd != CTAPHID.CBOR or not data:
            return bytes([ERR.INVALID_COMMAND])
        command, payload = data[0], data[1:]
        try:
            request: dict[int, Any] = cbor.decode(payload) if payload else {}
            if not isinstance(request, dict):
                raise CtapFailure(ERR.CBOR_UNEXPECTED_TYPE)
            handler = {
                0x01: self._make_credential,
                0x02: self._get_assertion,
                0x04: self._get_info,
                0x06: self._client_pin,
                0x0B: self._selection,
            }.get(command)
            if handler is None:
                raise CtapFailure(ERR.INVALID_COMMAND)
            self.calls.append(handler.__name__.strip("_"))
            response = handler(request, on_keepalive)
        except CtapFailure as failure:
            return bytes([failure.code])
        return b"\x00" + (cbor.encode(response) if response else b"")

    # commands ----------------------------------------------------------------------------
    def _get_info(self, request: dict[int, Any], on_keepalive: Any) -> dict[int, Any]:
        return {
            1: ["FIDO_2_0", "FIDO_2_1"],
            3: AAGUID,
            4: {"rk": True, "up": True, "plat": False, "clientPin": self.pin is not None, "pinUvAuthToken": True},
            5: 2048,
            6: [2],
        }

    def _selection(self, request: dict[int, Any], on_keepalive: Any) -> dict[int, Any]:
        self._user_presence(on_keepalive)
        return {}

    def _user_presence(self, on_keepalive: Callable[[STATUS], None] | None) -> None:
        if on_keepalive is not None:
            on_keepalive(STATUS.UPNEEDED)
        if not self.touch():
            raise CtapFailure(ERR.OPERATION_DENIED)

    def _client_pin(self, request: dict[int, Any], on_keepalive: Any) -> dict[int, Any]:
        if request.get(1) != _PinProtocolTwo.VERSION:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        sub = request.get(2)
        if sub == 0x01:  # getPINRetries
            return {3: self.pin_retries}
        if sub == 0x02:  # getKeyAgreement
            return {1: self._protocol.cose_key()}
        if sub == 0x09:  # getPinUvAuthTokenUsingPinWithPermissions
            return self._pin_token(request)
        raise CtapFailure(ERR.INVALID_SUBCOMMAND)

    def _pin_token(self, request: dict[int, Any]) -> dict[int, Any]:
        if self.pin is None:
            raise CtapFailure(ERR.PIN_NOT_SET)
        if not request.get(9):
            raise CtapFailure(ERR.MISSING_PARAMETER)
        if self.pin_retries <= 0:
            raise CtapFailure(ERR.PIN_BLOCKED)
        secret = self._protocol.shared_secret(request[3])
        pin_hash = self._protocol.decrypt(secret, request[6])
        self.pin_retries -= 1
        if not hmac.compare_digest(pin_hash, hashlib.sha256(self.pin.encode()).digest()[:16]):
            # CTAP 2.1 6.5.5.5: a wrong PIN costs a retry and a new key agreement.
            self._protocol.regenerate()
            raise CtapFailure(ERR.PIN_BLOCKED if self.pin_retries <= 0 else ERR.PIN_INVALID)
        self.pin_retries = MAX_PIN_RETRIES
        self._token = PinToken(value=os.urandom(32), permissions=request[9], rp_id=request.get(10))
        return {2: self._protocol.encrypt(secret, self._token.value)}

    def _verified(self, request: dict[int, Any], *, param: int, data_hash: bytes, rp_id: str, permission: int) -> bool:
        """Whether pinUvAuthParam proves a PIN token with ``permission`` for ``rp_id``."""
        pin_auth = request.get(param)
        if pin_auth is None:
            return False
        token = self._token
        if token is None or not token.permissions & permission or (token.rp_id not in (None, rp_id)):
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        if not hmac.compare_digest(pin_auth, self._protocol.authenticate(token.value, data_hash)):
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        return True

    def _make_credential(self, request: dict[int, Any], on_keepalive: Any) -> dict[int, Any]:
        client_data_hash, rp, user, params = request[1], request[2], request[3], request[4]
        if not any(p.get("alg") == -7 for p in params):
            raise CtapFailure(ERR.UNSUPPORTED_ALGORITHM)
        uv = self._verified(request, param=8, data_hash=client_data_hash, rp_id=rp["id"], permission=PERMISSION_MC)
        if not uv and self.pin is not None:
            raise CtapFailure(ERR.PUAT_REQUIRED)  # CTAP 2.1: a protected key makes credentials with UV
        excluded = {c["id"] for c in request.get(5) or []}
        self._user_presence(on_keepalive)
        if any(c.credential_id in excluded and c.rp_id == rp["id"] for c in self.credentials):
            raise CtapFailure(ERR.CREDENTIAL_EXCLUDED)
        key = ec.generate_private_key(ec.SECP256R1())
        credential = StoredCredential(credential_id=os.urandom(32), rp_id=rp["id"], user=dict(user), private_key=key)
        self.credentials.append(credential)
        attested = AAGUID + len(credential.credential_id).to_bytes(2, "big") + credential.credential_id
        attested += cbor.encode(_cose(key.public_key(), -7))
        flags = FLAG_UP | FLAG_AT | (FLAG_UV if uv else 0)
        auth_data = hashlib.sha256(rp["id"].encode()).digest() + bytes([flags]) + (0).to_bytes(4, "big") + attested
        return {1: "none", 2: auth_data, 3: {}}

    def _get_assertion(self, request: dict[int, Any], on_keepalive: Any) -> dict[int, Any]:
        rp_id, client_data_hash = request[1], request[2]
        options = request.get(5) or {}
        uv = self._verified(request, param=6, data_hash=client_data_hash, rp_id=rp_id, permission=PERMISSION_GA)
        allowed = [c["id"] for c in request.get(3) or []]
        found = [c for c in self.credentials if c.rp_id == rp_id and (not allowed or c.credential_id in allowed)]
        up = options.get("up", True)
        if up:
            self._user_presence(on_keepalive)
        if not found:
            raise CtapFailure(ERR.NO_CREDENTIALS)
        credential = found[0]
        credential.sign_count += 1
        flags = (FLAG_UP if up else 0) | (FLAG_UV if uv else 0)
        auth_data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + credential.sign_count.to_bytes(4, "big")
        signature = credential.private_key.sign(auth_data + client_data_hash, ec.ECDSA(hashes.SHA256()))
        response: dict[int, Any] = {
            1: {"type": "public-key", "id": credential.credential_id},
            2: auth_data,
            3: signature,
        }
        if not allowed:
            response[4] = {"id": credential.user["id"]}
        return response
