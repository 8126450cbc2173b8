"""Callback signatures: HMAC-SHA256 over the timestamp and the raw payload.

The signature header reads `t=<epoch seconds>,v1=<hex digest>`, where the digest covers
`"<t>." + raw payload`. Verification compares in constant time and checks the timestamp lies
within the tolerance, so a captured callback cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time


class SignatureError(ValueError):
    """A callback whose signature or timestamp cannot be trusted."""


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def parse_header(header: str) -> tuple[int, str]:
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        return int(parts["t"]), parts["v1"]
    except (ValueError, KeyError):
        raise SignatureError(f"malformed signature header {header!r}") from None


def verify(payload: bytes, header: str, secret: str, tolerance_seconds: int, now: float | None = None) -> int:
    """Return the signed timestamp, or raise SignatureError saying what is wrong."""
    timestamp, digest = parse_header(header)
    expected = sign(payload, secret, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, digest):
        raise SignatureError("signature does not match the payload")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError(
            f"signature timestamp {timestamp} is {int(abs(now - timestamp))} s from now "
            f"(tolerance {tolerance_seconds} s)"
        )
    return timestamp
