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


def test_any_v1_value_matching_any_accepted_secret_verifies():
    signed = sign(PAYLOAD, "new", timestamp=1_700_000_000)
    t, v1 = signed.split(",")
    header = f"{t},v1={'a' * 64},v1={v1.removeprefix('v1=').upper()},v0=ignored"
    assert verify(PAYLOAD, header, ["old", "new"], 300, now=1_700_000_000) == 1_700_000_000
    assert verify(PAYLOAD, sign(PAYLOAD, "old", 1_700_000_000), ("new", "old"), 300, now=1_700_000_000)
    with pytest.raises(SignatureError, match="does not match"):
        verify(PAYLOAD, header, ["old", "other"], 300, now=1_700_000_000)


@pytest.mark.parametrize(
    "header",
    ["t=1,v1=éé", "t=+1,v1=" + "0" * 64, "t=1_0,v1=" + "0" * 64, "t= 1,v1=" + "0" * 64, "t=1,t=2,v1=" + "0" * 64,
     "t=1", "t=1,v1=" + "0" * 63, "t=1,v1=" + "0" * 64 + "\x00", "t=1," + ",".join(["v1=" + "0" * 64] * 9),
     "t=" + "9" * 13 + ",v1=" + "0" * 64],
    ids=["non-ascii", "plus", "underscore", "space", "two-t", "no-v1", "short-digest", "nul", "nine-v1", "huge-t"],
)
def test_headers_outside_the_scheme_are_malformed_before_any_comparison(header):
    with pytest.raises(SignatureError, match="malformed signature header"):
        verify(PAYLOAD, header, "s3cret", 300)
