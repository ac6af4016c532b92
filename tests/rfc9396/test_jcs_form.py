"""The validator's check that an entry has an RFC 8785 form (without serializing it) answers
exactly as rfc8785.dumps does, on every JSON-like value, hostile ones included."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ciba_service.rfc9396.validation import _has_jcs_form

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
