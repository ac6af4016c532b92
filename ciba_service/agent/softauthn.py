"""DEVELOPMENT ONLY: a software WebAuthn authenticator.

It implements the authenticator and client halves of the ceremonies for real (P-256 key,
COSE public key, authenticator data with UP/UV flags and a growing signature counter,
``none`` attestation, ES256 signatures over ``authData || SHA-256(clientDataJSON)``), so the
demo and tests exercise the server's verification exactly as a browser would. The private
keys live in memory or in a plain JSON file: never use it to protect anything real.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import encode_cbor

from ciba_service.core.security import b64url_decode_lenient, b64url_encode

__all__ = ["SoftAuthenticator"]

_FLAG_UP, _FLAG_UV, _FLAG_AT = 0x01, 0x04, 0x40
_AAGUID = b"\x00" * 16  # "none" attestation: no model claimed


@dataclass
class _Credential:
    credential_id: bytes
    rp_id: str
    user_handle: bytes
    private_key: ec.EllipticCurvePrivateKey
    sign_count: int = 0


@dataclass
class SoftAuthenticator:
    """A passkey store that signs in software. ``user_verified`` models the PIN/biometric."""

    user_verified: bool = True
    credentials: list[_Credential] = field(default_factory=list)

    # persistence (dev convenience) --------------------------------------------------
    def save(self, path: Path) -> None:
        data = [
            {
                "credential_id": b64url_encode(c.credential_id),
                "rp_id": c.rp_id,
                "user_handle": b64url_encode(c.user_handle),
                "sign_count": c.sign_count,
                "private_key": c.private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode("ascii"),
            }
            for c in self.credentials
        ]
        path.write_text(json.dumps({"DEVELOPMENT_ONLY": True, "credentials": data}, indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> SoftAuthenticator:
        data = json.loads(path.read_text())
        creds = []
        for c in data["credentials"]:
            key = serialization.load_pem_private_key(c["private_key"].encode("ascii"), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            creds.append(
                _Credential(
                    credential_id=b64url_decode_lenient(c["credential_id"]),
                    rp_id=c["rp_id"],
                    user_handle=b64url_decode_lenient(c["user_handle"]),
                    private_key=key,
                    sign_count=c["sign_count"],
                )
            )
        return cls(credentials=creds)

    # ceremonies ---------------------------------------------------------------------------
    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False},
            separators=(",", ":"),
        ).encode("utf-8")

    def _flags(self) -> int:
        return _FLAG_UP | (_FLAG_UV if self.user_verified else 0)

    def create(self, options: dict[str, Any], *, origin: str) -> dict[str, Any]:
        """``navigator.credentials.create`` for PublicKeyCredentialCreationOptions JSON."""
        rp_id = options["rp"]["id"]
        if -7 not in [p["alg"] for p in options["pubKeyCredParams"]]:
            raise ValueError("relying party does not accept ES256")
        key = ec.generate_private_key(ec.SECP256R1())
        cred = _Credential(
            credential_id=secrets.token_bytes(32),
            rp_id=rp_id,
            user_handle=b64url_decode_lenient(options["user"]["id"]),
            private_key=key,
        )
        numbers = key.public_key().public_numbers()
        cose_key = encode_cbor(
            {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        )
        attested = _AAGUID + len(cred.credential_id).to_bytes(2, "big") + cred.credential_id + cose_key
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([self._flags() | _FLAG_AT])
            + cred.sign_count.to_bytes(4, "big")
            + attested
        )
        attestation = encode_cbor({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        self.credentials.append(cred)
        return {
            "id": b64url_encode(cred.credential_id),
            "rawId": b64url_encode(cred.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url_encode(client_data),
                "attestationObject": b64url_encode(attestation),
                "transports": ["internal"],
            },
        }

    def get(self, options: dict[str, Any], *, origin: str) -> dict[str, Any]:
        """``navigator.credentials.get`` for PublicKeyCredentialRequestOptions JSON."""
        rp_id = options["rpId"]
        allowed = {c["id"] for c in options.get("allowCredentials", [])}
        cred = next(
            (
                c
                for c in self.credentials
                if c.rp_id == rp_id and (not allowed or b64url_encode(c.credential_id) in allowed)
            ),
            None,
        )
        if cred is None:
            raise LookupError("no credential for this relying party")
        cred.sign_count += 1
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest() + bytes([self._flags()]) + cred.sign_count.to_bytes(4, "big")
        )
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = cred.private_key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return {
            "id": b64url_encode(cred.credential_id),
            "rawId": b64url_encode(cred.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url_encode(client_data),
                "authenticatorData": b64url_encode(auth_data),
                "signature": b64url_encode(signature),
                "userHandle": b64url_encode(cred.user_handle),
            },
        }
