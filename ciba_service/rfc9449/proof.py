"""RFC 9449 DPoP proofs: creating one (the agent side) and checking one (RFC 9449 section 4.3).

- :func:`create_proof`: one proof per HTTP request (ES256, ``typ: dpop+jwt``, the public key
  in the ``jwk`` header, ``jti``, ``htm``, ``htu``, ``iat``, and ``ath`` when an access token
  goes with the request).
- :func:`verify_proof`: section 4.3, one named check per step, each raising
  :class:`DPoPProofError` (``error = "invalid_dpop_proof"``) or :class:`UseDPoPNonce`
  (``"use_dpop_nonce"``); returns the RFC 7638 thumbprint (``jkt``) of the proof's key.
- :func:`check_proof`: the same checks without spending the proof's ``jti``; the
  :class:`CheckedProof` it returns is spent later with :meth:`CheckedProof.spend` (the
  resource server first checks that the token covers the call, so a proof for a call that is
  refused anyway takes no room in the replay store).

Proofs are parsed as strictly as access tokens: canonical unpadded base64url (RFC 7515 2)
for every segment and for the key's coordinates, and strict RFC 8259 JSON (orjson): no NaN
or Infinity, no number that overflows a double, no lone UTF-16 surrogate, no invalid UTF-8.
Anyone with a key of their own can send a proof (its signature is checked with the key it
carries), so every value in it is hostile until checked, and each failure is a
:class:`DPoPProofError`, never another exception.

Callers map :class:`DPoPProofError` to their protocol error at the edge: the token endpoint
answers 400 ``invalid_dpop_proof`` (RFC 9449 section 5), the resource server 401 with
``WWW-Authenticate: DPoP error="invalid_dpop_proof", algs="ES256"`` (section 7.1).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar
from urllib.parse import quote

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ciba_service.core.replay import ReplayCache
from ciba_service.core.security import b64url_decode, b64url_encode, constant_time_eq, new_id, sha256_b64url
from ciba_service.core.uri import normalize_uri
from ciba_service.jose.jwk import jwk_thumbprint, public_jwk
from ciba_service.jose.signatures import raw_to_der

__all__ = [
    "DPOP_ALGORITHMS",
    "DPOP_TYP",
    "MAX_JTI_LENGTH",
    "MAX_PROOF_BYTES",
    "CheckedProof",
    "DPoPProofError",
    "UseDPoPNonce",
    "access_token_hash",
    "check_proof",
    "create_proof",
    "verify_proof",
]

# RFC 9449 4.3 step 5: an asymmetric algorithm we support and accept. One, so there is nothing
# to confuse: ES256 on P-256 (what the agents and the issuer already use).
DPOP_ALGORITHMS = ("ES256",)
DPOP_TYP = "dpop+jwt"
MAX_PROOF_BYTES = 4096
MAX_JTI_LENGTH = 256
# Epoch seconds beyond any clock this runs on (year 5138): a larger iat is refused as such.
_MAX_IAT = 10**11
_ECDSA = ec.ECDSA(hashes.SHA256())
_B64URL = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
# Printable ASCII but space and backslash: what may stay literal in the server's own URL.
_PRINTABLE_URI_ASCII = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "\\")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 7517/7518: members that only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class DPoPProofError(Exception):
    """A DPoP proof failed one check of RFC 9449 section 4.3."""

    error: ClassVar[str] = "invalid_dpop_proof"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class UseDPoPNonce(DPoPProofError):
    """The server requires a nonce (RFC 9449 section 8) the proof lacks or has wrong."""

    error = "use_dpop_nonce"


def access_token_hash(access_token: str) -> str:
    """The ``ath`` claim: base64url(SHA-256(ASCII of the access token)) (RFC 9449 4.2)."""
    return sha256_b64url(access_token)


@lru_cache(maxsize=512)
def _p256_key(x: str, y: str) -> ec.EllipticCurvePublicKey:
    """Parse once per key: an agent sends the same ``jwk`` with every proof."""
    raw_x, raw_y = b64url_decode(x), b64url_decode(y)  # ValueError unless canonical
    if len(raw_x) != 32 or len(raw_y) != 32:
        raise ValueError("P-256 coordinates are 32 bytes")
    # from_encoded_point refuses a point that is not on the curve (invalid-curve attacks).
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw_x + raw_y)


def _strip_query(url: str) -> str:
    # RFC 9449 4.2: htu is "the HTTP target URI ... without query and fragment parts".
    return url.split("#", 1)[0].split("?", 1)[0]


# the agent side ----------------------------------------------------------------------------
def create_proof(
    private_key: ec.EllipticCurvePrivateKey,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    nonce: str | None = None,
    now: float | None = None,
    jti: str | None = None,
) -> str:
    """A DPoP proof JWT for one HTTP request (RFC 9449 section 4.2)."""
    header = {"typ": DPOP_TYP, "alg": "ES256", "jwk": public_jwk(private_key.public_key())}
    claims: dict[str, Any] = {
        "jti": jti if jti is not None else new_id(16),
        "htm": method,
        "htu": _strip_query(url),
        "iat": int(time.time() if now is None else now),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    signing_input = ".".join(
        b64url_encode(json.dumps(part, separators=(",", ":")).encode("utf-8")) for part in (header, claims)
    )
    r, s = decode_dss_signature(private_key.sign(signing_input.encode("ascii"), _ECDSA))
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# the server side: RFC 9449 section 4.3, one check per step ---------------------------------
def _decode_segment(segment: str, what: str) -> bytes:
    # Canonical unpadded base64url only, as for access tokens: stops a length of 1 mod 4 (which
    # the lenient decoder answers with binascii.Error, a 500) and the many spellings of one
    # signature.
    if not _B64URL.fullmatch(segment):
        raise DPoPProofError(f"DPoP proof {what} is not base64url")
    try:
        return b64url_decode(segment)
    except ValueError:  # binascii.Error is a ValueError
        raise DPoPProofError(f"DPoP proof {what} is not base64url") from None


def _decode_json(segment: str, what: str) -> dict[str, Any]:
    # Strict RFC 8259 (orjson, as for access tokens): stops an iat of hundreds of digits
    # (OverflowError in the arithmetic), NaN/Infinity, and lone surrogates in ath, nonce or
    # jti (UnicodeEncodeError in the comparisons and in the replay store's key). Nesting is
    # limited to 1024 by orjson, and the proof to MAX_PROOF_BYTES before we get here.
    try:
        value = orjson.loads(_decode_segment(segment, what))
    except orjson.JSONDecodeError:
        raise DPoPProofError(f"DPoP proof {what} is not JSON") from None
    if not isinstance(value, dict):
        raise DPoPProofError(f"DPoP proof {what} is not a JSON object")
    return value


def _parse(proof: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    # Step 2: "a single well-formed JWT".
    if len(proof) > MAX_PROOF_BYTES:
        raise DPoPProofError("DPoP proof is too large")
    parts = proof.split(".")
    if len(parts) != 3:
        raise DPoPProofError("DPoP proof is not a compact JWS")
    header = _decode_json(parts[0], "header")
    claims = _decode_json(parts[1], "payload")
    signature = _decode_segment(parts[2], "signature")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def _check_header(header: Mapping[str, Any]) -> Mapping[str, Any]:
    # Step 4: typ. Stops another JWT signed by the agent's key being passed off as a proof.
    if header.get("typ") != DPOP_TYP:
        raise DPoPProofError(f"DPoP proof typ must be {DPOP_TYP!r}")
    # Step 5: an asymmetric algorithm on the allow-list (never none, never HMAC).
    if header.get("alg") not in DPOP_ALGORITHMS:
        raise DPoPProofError(f"DPoP proof algorithm {_shown(header.get('alg'))} is not accepted")
    if "crit" in header:
        raise DPoPProofError("DPoP proof has critical header parameters we do not understand")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise DPoPProofError("DPoP proof has no jwk header")
    # Step 7: the jwk is a public key; a private key here means the agent leaked it.
    if _PRIVATE_MEMBERS & jwk.keys():
        raise DPoPProofError("DPoP proof jwk contains private key material")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise DPoPProofError("DPoP proof jwk is not a P-256 key")
    return jwk


def _public_key(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    x, y = jwk.get("x"), jwk.get("y")
    if not isinstance(x, str) or not isinstance(y, str) or not _B64URL.fullmatch(x + y):
        raise DPoPProofError("DPoP proof jwk is malformed")
    try:
        return _p256_key(x, y)
    except ValueError:  # not canonical base64url, not 32 bytes, not on the curve
        raise DPoPProofError("DPoP proof jwk is not a valid P-256 public key") from None


def _check_signature(key: ec.EllipticCurvePublicKey, signing_input: bytes, signature: bytes) -> None:
    # Step 6: the proof is signed by the key it carries.
    if len(signature) != 64:
        raise DPoPProofError("DPoP proof signature is malformed")
    der = raw_to_der(signature)
    try:
        key.verify(der, signing_input, _ECDSA)
    except InvalidSignature:
        raise DPoPProofError("DPoP proof signature verification failed") from None


def _check_required_claims(claims: Mapping[str, Any], *, with_token: bool) -> None:
    # Step 3: every claim of section 4.2 is present and has its type.
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise DPoPProofError("DPoP proof has no valid jti")
    for name in ("htm", "htu"):
        if not isinstance(claims.get(name), str):
            raise DPoPProofError(f"DPoP proof has no {name}")
    iat: Any = claims.get("iat")
    kind = type(iat)  # bool is an int subclass, not a JSON number
    if not (kind is int or (kind is float and math.isfinite(iat))) or abs(iat) > _MAX_IAT:
        # Bounded as well as finite: the expiry arithmetic stays in range whatever is sent.
        raise DPoPProofError("DPoP proof has no iat")
    if with_token and not isinstance(claims.get("ath"), str):
        raise DPoPProofError("DPoP proof has no ath for the access token")


def _check_htm(claims: Mapping[str, Any], method: str) -> None:
    # Step 8: methods are case-sensitive (RFC 9110 9.1), so compared exactly.
    if claims["htm"] != method:
        raise DPoPProofError("DPoP proof is for another HTTP method")


def _request_uri(url: str) -> str:
    """The server's own request URL, made a URI: frameworks hand over the percent-decoded path
    (Starlette's ``request.url`` for ``/a%20b`` is ``/a b``), so characters a URI cannot hold
    literally are percent-encoded here rather than refused. The proof's ``htu``, which the
    caller wrote, gets no such help: it must be a valid URI (:func:`normalize_uri`)."""
    return quote(_STRAY_PERCENT.sub("%25", url), safe=_PRINTABLE_URI_ASCII, errors="surrogatepass")


def _check_htu(claims: Mapping[str, Any], url: str) -> None:
    # Step 9: compared without query and fragment, after RFC 3986 6.2.2/6.2.3 normalisation.
    # An htu with whitespace or controls is refused, not cleaned up to match (core.uri).
    try:
        same = normalize_uri(_strip_query(claims["htu"])) == normalize_uri(_request_uri(_strip_query(url)))
    except ValueError:
        same = False
    if not same:
        raise DPoPProofError("DPoP proof is for another URL")


def _check_nonce(claims: Mapping[str, Any], expected_nonce: str | Callable[[str], bool] | None) -> None:
    # Step 10: only when the server has handed out a nonce. Checked before the jti is
    # consumed: a proof refused for its nonce spends nothing (the agent retries at once).
    if expected_nonce is None:
        return
    nonce = claims.get("nonce")
    if not isinstance(nonce, str):
        raise UseDPoPNonce("DPoP proof must carry the server-provided nonce")
    accepted = expected_nonce(nonce) if callable(expected_nonce) else constant_time_eq(nonce, expected_nonce)
    if not accepted:
        raise UseDPoPNonce("DPoP proof nonce is stale or unknown; use the server-provided nonce")


def _check_iat(claims: Mapping[str, Any], *, now: float, max_age: int, leeway: int) -> None:
    # Step 11: created recently (a proof is for one request, now), allowing for clock skew.
    iat = claims["iat"]
    if iat > now + leeway:
        raise DPoPProofError("DPoP proof was issued in the future")
    if iat < now - max_age - leeway:
        raise DPoPProofError("DPoP proof is too old")


def _check_ath(claims: Mapping[str, Any], access_token: str | None) -> None:
    # Step 12: bound to the access token it travels with.
    if access_token is not None and not constant_time_eq(claims["ath"], access_token_hash(access_token)):
        raise DPoPProofError("DPoP proof ath does not match the access token")


def _check_jkt(jkt: str, expected_jkt: str | None) -> None:
    # Step 12: signed by the key the access token is bound to (cnf.jkt).
    if expected_jkt is not None and not constant_time_eq(jkt, expected_jkt):
        raise DPoPProofError("DPoP proof key does not match the access token's binding")


@dataclass(frozen=True)
class CheckedProof:
    """A proof that passed every check of section 4.3 except single use: :meth:`spend` it
    (once) when the request it came with is about to be served."""

    jkt: str  # the RFC 7638 thumbprint of the proof's key
    jti: str
    expires_at: int  # how long its jti must be remembered (epoch seconds)

    @property
    def replay_key(self) -> str:
        return f"dpop|{self.jkt}|{self.jti}"

    def spend(self, replay: ReplayCache) -> None:
        """Section 11.1: a proof is used once. Raises :class:`DPoPProofError` if it was."""
        if not replay.consume(self.replay_key, expires_at=self.expires_at, limit=1):
            raise DPoPProofError("DPoP proof has already been used")


def check_proof(
    proof: str,
    *,
    method: str,
    url: str,
    access_token: str | None = None,
    expected_jkt: str | None = None,
    expected_nonce: str | Callable[[str], bool] | None = None,
    max_age: int = 60,
    leeway: int = 30,
    now: float | None = None,
) -> CheckedProof:
    """Every check of :func:`verify_proof` but the last: the proof's ``jti`` is not spent.
    The caller must :meth:`CheckedProof.spend` it before serving the request."""
    header, claims, signing_input, signature = _parse(proof)
    jwk = _check_header(header)
    key = _public_key(jwk)
    _check_signature(key, signing_input, signature)
    _check_required_claims(claims, with_token=access_token is not None)
    _check_htm(claims, method)
    _check_htu(claims, url)
    _check_nonce(claims, expected_nonce)
    _check_iat(claims, now=time.time() if now is None else now, max_age=max_age, leeway=leeway)
    _check_ath(claims, access_token)
    jkt = jwk_thumbprint(jwk)
    _check_jkt(jkt, expected_jkt)
    # Kept as long as its iat would still be accepted.
    return CheckedProof(jkt=jkt, jti=claims["jti"], expires_at=math.ceil(claims["iat"]) + max_age + leeway + 1)


def verify_proof(
    proof: str,
    *,
    method: str,
    url: str,
    replay: ReplayCache,
    access_token: str | None = None,
    expected_jkt: str | None = None,
    expected_nonce: str | Callable[[str], bool] | None = None,
    max_age: int = 60,
    leeway: int = 30,
    now: float | None = None,
) -> str:
    """Check a DPoP proof against the request it came with (RFC 9449 section 4.3).

    ``method`` and ``url`` are the request's (``url`` may carry a query: it is ignored);
    ``access_token`` when one is presented (the proof's ``ath`` must hash it);
    ``expected_jkt`` the token's ``cnf.jkt``; ``expected_nonce`` the nonce the server issued,
    or a predicate accepting the nonces it currently honours (``DPoPNonces(...).is_valid``).
    The proof's ``jti`` is consumed in ``replay``, so a proof works once. Returns the proof
    key's thumbprint (``jkt``); raises :class:`DPoPProofError` otherwise.
    """
    checked = check_proof(
        proof,
        method=method,
        url=url,
        access_token=access_token,
        expected_jkt=expected_jkt,
        expected_nonce=expected_nonce,
        max_age=max_age,
        leeway=leeway,
        now=now,
    )
    checked.spend(replay)
    return checked.jkt


def _shown(value: Any) -> str:
    # Values from the proof appear in error descriptions: bounded, printable.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
