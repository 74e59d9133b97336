"""storage_key: safe charset, injective encoding, bounded length."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saar.state import InvalidKeyError, storage_key
from saar.state.base import MAX_STORAGE_KEY_CHARS, check_prefix, check_ttl

SAFE = re.compile(r"[A-Za-z0-9._~:%-]*")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("abc-123_x.y~z:w", "p:abc-123_x.y~z:w"),
        ("a/b", "p:a%2Fb"),
        ("%41", "p:%2541"),
        ("{tag}*", "p:%7Btag%7D%2A"),
        ("é", "p:%C3%A9"),
    ],
)
def test_known_encodings(key: str, expected: str) -> None:
    """Safe characters pass through; everything else, '%' included, is percent-encoded."""
    assert expected == storage_key("p:", key)


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_distinct_keys_never_share_a_storage_key(a: str, b: str) -> None:
    """The encoding is injective: different keys give different storage keys."""
    try:
        ea, eb = storage_key("", a), storage_key("", b)
    except InvalidKeyError:
        return  # lone surrogates are rejected, which is also collision-free
    assert (a == b) == (ea == eb)


@given(st.text(min_size=1, max_size=60))
def test_storage_keys_use_only_safe_characters(key: str) -> None:
    """Any accepted key encodes to characters from the safe set only."""
    try:
        encoded = storage_key("", key)
    except InvalidKeyError:
        return
    assert SAFE.fullmatch(encoded)


def test_storage_key_length_is_bounded() -> None:
    """A key whose encoding would exceed the storage limit is rejected."""
    with pytest.raises(InvalidKeyError):
        storage_key("p:", "\U0001f511" * 100)  # 100 chars, 1200 encoded
    assert len(storage_key("p:", "k" * 512)) <= MAX_STORAGE_KEY_CHARS


@pytest.mark.parametrize("prefix", ["", "saar:v1:", "a" * 64])
def test_safe_prefixes_are_accepted(prefix: str) -> None:
    """Empty, default and 64-character safe prefixes pass."""
    assert prefix == check_prefix(prefix)


@pytest.mark.parametrize("prefix", ["a b", "x{y}", "a" * 65, "p*"])
def test_unsafe_prefixes_are_rejected(prefix: str) -> None:
    """Prefixes with unsafe characters or over 64 characters raise ValueError."""
    with pytest.raises(ValueError):
        check_prefix(prefix)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
def test_impossible_ttls_are_rejected(ttl: float) -> None:
    """Zero, negative, NaN and infinite TTLs raise ValueError."""
    with pytest.raises(ValueError):
        check_ttl(ttl)
