"""The binding document (DESIGN.md "The approval, precisely"): its fields, its JCS preimage and
the challenge a passkey signs, checked against a known vector. The documents of live requests,
as the approval page shows them, are in tests/server/test_approval.py."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
import rfc8785

from ciba_service.core import binding
from ciba_service.core.model import BackchannelRequest
from ciba_service.core.security import b64url_encode
from tests.support.service import ACTION, BASE

FIXED_REQUEST = BackchannelRequest(
    request_id="req-0001",
    auth_req_id_hash="not-part-of-the-document",
    approval_id="not-part-of-the-document",
    client_id="agent-1",
    client_name="Agent One",
    user_id="user-123",
    scope="openid",
    binding_message="BM-1",
    authorization_details=[
        # deliberately not in JCS key order
        {
            "type": "iam_policy",
            "actions": ["update"],
            "identifier": "policy-42",
            "locations": ["https://iam.example.test/"],
        }
    ],
    created_at=1_800_000_000,
    expires_at=1_800_000_300,
    interval=2,
    nonce="nonce-abc",
)
FIXED_PREIMAGE = (
    b'{"authorization_details":[{"actions":["update"],"identifier":"policy-42",'
    b'"locations":["https://iam.example.test/"],"type":"iam_policy"}],"binding_message":"BM-1",'
    b'"client_id":"agent-1","exp":1800000300,"iss":"http://localhost:8000","nonce":"nonce-abc",'
    b'"request_id":"req-0001","sub":"user-123","v":1}'
)
FIXED_SHA256_HEX = "74635650c18f983f7710a0f6e430dfc715b4417a17cfca30f7995cc4b1c23fb4"
FIXED_CHALLENGE_B64URL = "dGNWUMGPmD93EKD25DDfxxW0QXoXz8ow95lcxLHCP7Q"


def test_binding_document_fields() -> None:
    document = binding.binding_document(request=FIXED_REQUEST, issuer=BASE)
    assert document == {
        "v": 1,
        "iss": BASE,
        "client_id": "agent-1",
        "sub": "user-123",
        "request_id": "req-0001",
        "binding_message": "BM-1",
        "authorization_details": FIXED_REQUEST.authorization_details,
        "exp": 1_800_000_300,
        "nonce": "nonce-abc",
    }


def test_challenge_known_vector() -> None:
    document = binding.binding_document(request=FIXED_REQUEST, issuer=BASE)
    # computed independently of the package: rfc8785 + hashlib
    assert rfc8785.dumps(document) == FIXED_PREIMAGE
    assert hashlib.sha256(FIXED_PREIMAGE).hexdigest() == FIXED_SHA256_HEX
    # and by the package
    preimage = binding.canonical_preimage(document)
    assert preimage == FIXED_PREIMAGE
    challenge = binding.challenge_for(preimage)
    assert challenge.hex() == FIXED_SHA256_HEX
    assert b64url_encode(challenge) == FIXED_CHALLENGE_B64URL


def test_null_binding_message_is_part_of_the_document() -> None:
    request = dataclasses.replace(FIXED_REQUEST, binding_message=None)
    preimage = binding.canonical_preimage(binding.binding_document(request=request, issuer=BASE))
    assert b'"binding_message":null,' in preimage
    assert binding.challenge_for(preimage).hex() != FIXED_SHA256_HEX


@pytest.mark.parametrize(
    "change",
    [
        {"authorization_details": [{**ACTION[0], "actions": ["delete"]}]},
        {"authorization_details": [{**ACTION[0], "identifier": "policy-43"}]},
        {"binding_message": "BM-2"},
        {"client_id": "agent-2"},
        {"user_id": "user-124"},
        {"request_id": "req-0002"},
        {"expires_at": 1_800_000_301},
        {"nonce": "nonce-abd"},
    ],
    ids=["action", "identifier", "binding_message", "client_id", "sub", "request_id", "exp", "nonce"],
)
def test_every_field_changes_the_challenge(change: dict[str, Any]) -> None:
    request = dataclasses.replace(FIXED_REQUEST, **change)
    preimage = binding.canonical_preimage(binding.binding_document(request=request, issuer=BASE))
    assert binding.challenge_for(preimage).hex() != FIXED_SHA256_HEX


def test_fields_outside_the_document_do_not_change_the_challenge() -> None:
    request = dataclasses.replace(FIXED_REQUEST, client_name="Renamed", scope="openid profile", interval=9)
    preimage = binding.canonical_preimage(binding.binding_document(request=request, issuer=BASE))
    assert binding.challenge_for(preimage).hex() == FIXED_SHA256_HEX


def test_jcs_key_order_and_number_form() -> None:
    document = {
        "b": 1.0,
        "a": [1e21, 0.1, -0.0, 1e-7, 100, 4.5e15],
        "\u20ac": "€",
        "\u00e9": '\n\u2028"',
        "\U0001f600": 1,  # UTF-16 D83D DE00: sorts before U+FB01, unlike code point order
        "\ufb01": 2,
        "10": 3,
        "1": 4,
    }
    assert binding.canonical_preimage(document) == (
        '{"1":4,"10":3,"a":[1e+21,0.1,0,1e-7,100,4500000000000000],"b":1,'
        '"é":"\\n\u2028\\"","€":"€","\U0001f600":1,"\ufb01":2}'
    ).encode("utf-8")
