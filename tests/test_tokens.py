"""Signed link tokens: they verify, and nothing else does."""

from __future__ import annotations

import pytest

from pipeline.audience.tokens import Signer
from pipeline.errors import ConfigError

KEY = "k" * 32


def test_a_token_verifies_for_its_purpose_only() -> None:
    signer = Signer(KEY)
    token = signer.sign("unsubscribe", 42, 7)
    claim = signer.verify("unsubscribe", token)
    assert claim is not None and (claim.subscriber_id, claim.issue_id) == (42, 7)
    assert signer.verify("preferences", token) is None
    assert Signer("another-key-of-length").verify("unsubscribe", token) is None


@pytest.mark.parametrize(
    "forged",
    ["43.7.{mac}", "42.8.{mac}", "42.7.", "42.7", "x.7.{mac}", "42.7.{mac}x", "", "../../etc"],
)
def test_changed_or_malformed_tokens_are_refused(forged: str) -> None:
    signer = Signer(KEY)
    mac = signer.sign("unsubscribe", 42, 7).rsplit(".", 1)[1]
    assert signer.verify("unsubscribe", forged.format(mac=mac)) is None


def test_tokens_are_url_safe_and_short() -> None:
    token = Signer(KEY).sign("unsubscribe", 10**9, 10**6)
    assert len(token) < 50
    assert all(c.isalnum() or c in "-_." for c in token)


def test_a_missing_or_short_secret_says_where_to_set_it() -> None:
    with pytest.raises(ConfigError, match="LETTERPRESS_SECRET_KEY"):
        Signer("")
    with pytest.raises(ConfigError, match="shorter than 16"):
        Signer("short")


def test_a_rotated_key_still_verifies_what_it_signed() -> None:
    old, new = "old-key-of-enough-length", "new-key-of-enough-length"
    token = Signer(old).sign("unsubscribe", 42, 7)
    rotated = Signer(new, [old])
    claim = rotated.verify("unsubscribe", token)
    assert claim is not None and (claim.subscriber_id, claim.ref) == (42, 7)
    assert rotated.sign("unsubscribe", 42, 7) == Signer(new).sign("unsubscribe", 42, 7)
    assert Signer(old).verify("unsubscribe", rotated.sign("unsubscribe", 42, 7)) is None
    assert Signer(new).verify("unsubscribe", token) is None  # the old key dropped: refused
    assert rotated.verify("preferences", token) is None
    with pytest.raises(ConfigError, match="LETTERPRESS_PREVIOUS_SECRET_KEYS"):
        Signer(new, ["short"])
