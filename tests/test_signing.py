"""Callback signatures."""

from __future__ import annotations

import pytest

from ordersys_pipelines.domain.payments.signing import SignatureError, sign, verify

PAYLOAD = b'{"event_id":"e1","amount_cents":500}'


def test_valid_signature_returns_its_timestamp():
    header = sign(PAYLOAD, "s3cret", timestamp=1_700_000_000)
    assert verify(PAYLOAD, header, "s3cret", 300, now=1_700_000_100) == 1_700_000_000


@pytest.mark.parametrize(
    ("payload", "secret", "now", "message"),
    [
        (PAYLOAD + b" ", "s3cret", 1_700_000_000, "does not match"),
        (PAYLOAD, "other", 1_700_000_000, "does not match"),
        (PAYLOAD, "s3cret", 1_700_000_301, "tolerance 300 s"),
    ],
)
def test_forged_or_stale_signatures_are_refused(payload, secret, now, message):
    header = sign(PAYLOAD, "s3cret", timestamp=1_700_000_000)
    with pytest.raises(SignatureError, match=message):
        verify(payload, header, secret, 300, now=now)


def test_malformed_header_is_refused():
    with pytest.raises(SignatureError, match="malformed"):
        verify(PAYLOAD, "sha256=abc", "s3cret", 300)
