"""ES256 R||S to DER (RFC 7518 3.4), and keys bound to the algorithm they verify."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ciba_service.jose import VerificationKey, raw_to_der


def _expected(raw: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


@pytest.mark.parametrize(
    "raw",
    [
        bytes(64),  # both zero
        b"\x01" * 64,  # short header both
        b"\x80" * 64,  # high bit: a leading zero both
        b"\x7f" + bytes(31) + b"\xff" * 32,  # one of each
        bytes(1) + b"\x80" + bytes(30) + b"\x01" * 32,  # r shorter, then high bit
        bytes(31) + b"\x05" + bytes(20) + b"\x90" * 12,  # r one byte, s shorter with high bit
        b"\x01" * 32 + bytes(32),  # s zero
    ],
)
def test_raw_to_der_edges(raw: bytes) -> None:
    assert raw_to_der(raw) == _expected(raw)


def test_raw_to_der_random() -> None:
    for _ in range(2000):
        raw = bytearray(os.urandom(64))
        raw[0] &= raw[1]  # zero first bytes now and then
        raw[32] &= raw[33]
        assert raw_to_der(bytes(raw)) == _expected(bytes(raw))


def test_raw_to_der_verifies_a_real_signature() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for _ in range(50):
        der = key.sign(b"data", ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        verification = VerificationKey(kid="k", alg="ES256", key=key.public_key())
        assert verification.verify(b"data", raw)
        assert not verification.verify(b"other", raw)
        assert not verification.verify(b"data", raw[:63])  # R||S is 64 bytes, no more, no less


def test_a_key_is_bound_to_its_algorithm() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(ValueError, match="cannot verify"):
        VerificationKey(kid="k", alg="RS256", key=ec_key)
    with pytest.raises(ValueError, match="cannot verify"):
        VerificationKey(kid="k", alg="ES256", key=rsa_key)
