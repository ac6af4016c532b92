"""The validator's check that an entry has an RFC 8785 form (without serializing it) answers
exactly as rfc8785.dumps does, on every JSON-like value, hostile ones included; and the fast path
for plain entries (_is_plain) skips only walks that would pass."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ciba_service.core.errors import InvalidAuthorizationDetails
from ciba_service.rfc9396.validation import _MAX_DEPTH, _check_text, _depth, _has_jcs_form, _is_plain

_LIMIT = 2**53 - 1
texts = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.sampled_from([_LIMIT, _LIMIT + 1, -_LIMIT, -_LIMIT - 1, 10**400])
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
    | st.sampled_from(["\ud800", "a\udfffb", "é", "日本"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts | st.just("\ud834"), inner, max_size=4),
    max_leaves=20,
)


def _dumps_ok(value: Any) -> bool:
    try:
        rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError):
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(values)
def test_the_check_agrees_with_rfc8785(value: Any) -> None:
    assert _has_jcs_form(value) == _dumps_ok(value)


def test_the_edges() -> None:
    for value, expected in [
        (2**53 - 1, True),
        (2**53, False),
        (-(2**53) + 1, True),
        (-(2**53), False),
        (float("inf"), False),
        (float("nan"), False),
        (1e308, True),
        ("\ud800", False),
        ({"\ud800": 1}, False),
        ({"k": ["\udfff"]}, False),
        ({"ok": [1, "é", None, True, 0.5]}, True),
    ]:
        assert _has_jcs_form(value) is expected, value
        assert _dumps_ok(value) is expected, value


def _text_ok(value: Any) -> bool:
    try:
        for key, item in value.items():
            _check_text(0, key, item)
    except InvalidAuthorizationDetails:
        return False
    return True


entries = st.dictionaries(texts | st.just("\ud834") | st.sampled_from(["type", "actions"]), values, max_size=5)


@settings(max_examples=500, deadline=None)
@given(entries | st.dictionaries(st.sampled_from(["a", "b", "c"]), scalars | st.lists(texts, max_size=3)))
def test_a_plain_entry_passes_the_walks_it_skips(entry: dict[str, Any]) -> None:
    """_is_plain lets _check_entry skip _depth, _check_text and _has_jcs_form: only for entries
    all three would pass."""
    if _is_plain(entry):
        assert _depth(entry) <= _MAX_DEPTH
        assert _text_ok(entry)
        assert _has_jcs_form(entry) and _dumps_ok(entry)


def test_what_is_plain() -> None:
    assert _is_plain({"type": "t", "actions": ["read", "write"], "n": 2**53 - 1, "b": True, "z": None, "e": []})
    for entry in [
        {"n": 2**53},
        {"f": 0.5},
        {"o": {"k": "v"}},
        {"l": [1]},
        {"l": [["x"]]},
        {"s": "é"},
        {"s": "tab\there"},
        {"s": "\u202e"},
        {"k\u200b": "v"},
        {"s": "\ud800"},
    ]:
        assert not _is_plain(entry), entry
