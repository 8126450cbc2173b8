"""Callback signatures: HMAC-SHA256 over the timestamp and the raw payload.

The signature header reads `t=<epoch seconds>,v1=<hex digest>[,v1=<hex digest>...]`, where each
digest covers `"<t>." + raw payload`. As in Stripe's scheme a header may carry several `v1`
values and the receiver may know several secrets (the current one and those being rotated
out): the callback is genuine when any `v1` matches any accepted secret. Every comparison is
constant-time and none stops early, and the timestamp must lie within the tolerance, so a
captured callback cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

# Lower-case or upper-case hex of a SHA-256 digest, and a timestamp of at most 12 digits: anything
# else (signs, spaces, underscores, non-ASCII) is malformed before any comparison is made.
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
MAX_SIGNATURES = 8


class SignatureError(ValueError):
    """A callback whose signature or timestamp cannot be trusted."""


def _digest(payload: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={_digest(payload, secret, timestamp)}"


def parse_header(header: str) -> tuple[int, list[str]]:
    """The signed timestamp and the `v1` digests; other schemes (`v0=`...) are ignored, as Stripe's
    receivers do. SignatureError for anything else."""
    malformed = SignatureError(f"malformed signature header {header.encode('ascii', 'backslashreplace').decode()!r}")
    if not (header.isascii() and header.isprintable()):
        raise malformed
    timestamps, digests = [], []
    for item in header.split(","):
        name, sep, value = item.partition("=")
        if not sep:
            raise malformed
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            digests.append(value)
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]) or not digests:
        raise malformed
    if len(digests) > MAX_SIGNATURES or not all(_DIGEST.fullmatch(d) for d in digests):
        raise malformed
    return int(timestamps[0]), [d.lower() for d in digests]


def verify(
    payload: bytes, header: str, secrets: str | Sequence[str], tolerance_seconds: int, now: float | None = None
) -> int:
    """Return the signed timestamp, or raise SignatureError saying what is wrong. `secrets` is the
    secret, or the accepted secrets (current first, then the ones being rotated out)."""
    timestamp, digests = parse_header(header)
    accepted = [secrets] if isinstance(secrets, str) else [s for s in secrets if s]
    matched = False
    for secret in accepted:
        expected = _digest(payload, secret, timestamp).encode()
        for digest in digests:
            matched |= hmac.compare_digest(expected, digest.encode())
    if not matched:
        raise SignatureError("signature does not match the payload")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError(
            f"signature timestamp {timestamp} is {int(abs(now - timestamp))} s from now "
            f"(tolerance {tolerance_seconds} s)"
        )
    return timestamp
