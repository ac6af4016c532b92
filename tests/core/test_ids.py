"""Random identifiers: ``new_ids`` gives what as many ``new_id`` calls would (length, alphabet,
entropy floor), from one read of the random source."""

from __future__ import annotations

import re

import pytest

from ciba_service.core.security import MIN_ID_BYTES, b64url_decode, new_id, new_ids

_URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def test_new_ids_are_shaped_like_new_id() -> None:
    ids = new_ids(32, 16, 32, 16)
    assert [len(i) for i in ids] == [len(new_id(32)), len(new_id(16)), len(new_id(32)), len(new_id(16))]
    assert [len(b64url_decode(i)) for i in ids] == [32, 16, 32, 16]
    assert all(_URLSAFE.fullmatch(i) for i in ids)


def test_new_ids_never_repeat() -> None:
    seen = [i for _ in range(500) for i in new_ids(16, 16, 32)]
    assert len(set(seen)) == len(seen)


def test_new_ids_refuse_too_little_entropy() -> None:
    with pytest.raises(ValueError, match="entropy"):
        new_ids(32, MIN_ID_BYTES - 1)
    assert new_ids() == []
