"""How much the resource-server verifier costs beyond the signature check itself.

Measures, on one ES256 access token as the service mints it:

(a) a raw ECDSA P-256 signature verification with ``cryptography`` (the floor);
(b) PyJWT's ``jwt.decode`` of the same token (key, algorithms, audience, issuer);
(c) ``TokenVerifier.verify``: structure, header, signature, claims, the action matched against
    ``authorization_details``, single use recorded in memory. Each iteration uses a token with
    a fresh ``jti`` (minted beforehand, outside the timing), so single use never refuses.

For information, (c') is (c) plus building the ``RequestedAction`` in every call, as a FastAPI
dependency does (a frozen dataclass costs a few microseconds to construct).

Each call is timed on its own; ``--rounds`` rounds of ``--iterations`` calls per operation,
interleaved in chunks of 100 calls; reported is the median over rounds of each round's median
call time. The last line is machine-readable:
``full_vs_raw=R1 full_vs_pyjwt=R2``.

    .venv/bin/python scripts/bench_verify.py [--rounds 5] [--iterations 2000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ciba_service.core.security import b64url_decode
from ciba_service.rs import RequestedAction, StaticKeys, TokenVerifier
from ciba_service.server.tokens import SigningKey, mint_access_token

CHUNK = 100
ISSUER = "https://ciba.example.test"
AUDIENCE = "resource-api"
LOCATION = "https://iam.example.test/"
ENTRY = {"type": "iam_policy", "actions": ["update"], "identifier": "policy-42", "locations": [LOCATION]}


def _mint(key: SigningKey, now: int) -> str:
    token, _ = mint_access_token(
        key=key,
        issuer=ISSUER,
        subject="user-1",
        audience=AUDIENCE,
        client_id="agent-1",
        scope="openid",
        authorization_details=[ENTRY],
        approval={"receipt": "r-0123456789abcdef", "challenge": "c" * 43},
        auth_time=now,
        now=now,
        lifetime=300,
    )
    return token


def _round(operations: dict[str, Callable[[int], object]], iterations: int, first_index: int) -> dict[str, float]:
    """One round: ``iterations`` calls of each operation, each call timed on its own, the
    operations interleaved in chunks of ``CHUNK`` calls so a change in machine load weighs on
    all of them alike. Returns each operation's median call time in the round: a call
    interrupted by the scheduler or another process is an outlier, not the verifier's cost."""
    samples: dict[str, list[int]] = {name: [] for name in operations}
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        end = first_index + iterations
        for start in range(first_index, end, CHUNK):
            for name, operation in operations.items():
                record = samples[name].append
                for i in range(start, min(start + CHUNK, end)):
                    begin = clock()
                    operation(i)
                    record(clock() - begin)
    finally:
        gc.enable()
    return {name: statistics.median(values) / 1e9 for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    rounds, iterations = args.rounds, args.iterations

    key = SigningKey(private_key=ec.generate_private_key(ec.SECP256R1()), kid="bench")
    public = key.private_key.public_key()
    now = int(time.time())
    # one token per (c) iteration, plus warm-up: fresh jti each, so single use never refuses
    tokens = [_mint(key, now) for _ in range(2 * rounds * iterations + 100)]
    token = tokens[0]
    header, payload, signature = token.split(".")
    signing_input = f"{header}.{payload}".encode("ascii")
    raw = b64url_decode(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    ecdsa = ec.ECDSA(hashes.SHA256())
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=StaticKeys(key.jwks()))

    def raw_verify(_: int) -> None:
        public.verify(der, signing_input, ecdsa)

    def pyjwt_decode(_: int) -> object:
        return jwt.decode(token, public, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)

    action = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[LOCATION])

    def full_verify(i: int) -> object:
        return verifier.verify(tokens[i], action)

    def full_verify_building_the_action(i: int) -> object:
        built = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[LOCATION])
        return verifier.verify(tokens[i], built)

    # warm-up (caches, branch predictors, lazy imports)
    spare = 2 * rounds * iterations
    for i in range(100):
        raw_verify(i), pyjwt_decode(i), full_verify(spare + i)

    # (c) and (c') index fresh tokens: each call of either consumes its own jti
    operations = {
        "raw": raw_verify,
        "pyjwt": pyjwt_decode,
        "full": lambda i: full_verify(2 * i),
        "built": lambda i: full_verify_building_the_action(2 * i + 1),
    }
    times: dict[str, list[float]] = {name: [] for name in operations}
    for r in range(rounds):
        for name, per_call in _round(operations, iterations, r * iterations).items():
            times[name].append(per_call)
    median = {name: statistics.median(values) for name, values in times.items()}

    print(f"token: {len(token)} bytes, ES256; {rounds} rounds x {iterations} iterations; median per call")
    print(f"(a) raw ECDSA P-256 verify (cryptography): {median['raw'] * 1e6:8.1f} us")
    print(f"(b) PyJWT jwt.decode:                      {median['pyjwt'] * 1e6:8.1f} us")
    print(f"(c) TokenVerifier.verify (full):           {median['full'] * 1e6:8.1f} us")
    print(f"(c') (c) building the RequestedAction too:  {median['built'] * 1e6:8.1f} us")
    print(f"(c)/(a) = {median['full'] / median['raw']:.2f}   (c)/(b) = {median['full'] / median['pyjwt']:.2f}")
    print(f"full_vs_raw={median['full'] / median['raw']:.2f} full_vs_pyjwt={median['full'] / median['pyjwt']:.2f}")


if __name__ == "__main__":
    main()
