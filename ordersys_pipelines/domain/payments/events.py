"""A callback event read strictly: what the gateway sends is a flat JSON object in UTF-8 with
printable ASCII identifiers, so anything else (NUL bytes, invalid UTF-8, repeated keys, NaN,
deep nesting, amounts beyond BIGINT, control characters) is refused with a reason before any of
it reaches the database or a display.
"""

from __future__ import annotations

import json
import re
from typing import Any

STATUSES = ("approved", "declined")
MAX_DEPTH = 8  # of nested arrays/objects in an event (a real one is flat)
MAX_AMOUNT_CENTS = 2**63 - 1  # BIGINT
REJECTED_PREFIX = "rejected-"  # synthetic ids of rejected deliveries; no event may claim one
# Identifiers are printable ASCII without spaces: no NUL or other control character can reach a
# key column (PostgreSQL refuses NUL in text), and a display never shows invisible differences.
_IDENTIFIER = re.compile(r"[!-~]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class CallbackError(ValueError):
    """A callback payload that cannot be used; the message is the rejection reason."""


def printable(text: str, limit: int) -> str:
    """`text` safe to store and show: control characters and lone surrogates (from undecodable
    command-line bytes) escaped, at most `limit` characters."""
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise CallbackError(f"duplicate key {key[:40]!r} in a JSON object")
        seen.add(key)
    return dict(pairs)


def _refuse_constant(name: str):
    raise CallbackError(f"payload is not valid JSON: {name} is not a number")


def _depth(value: Any) -> int:
    """Nesting depth of arrays and objects, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def decode_json(raw: bytes | str) -> Any:
    """Strict JSON: UTF-8 without NUL, unique keys, no NaN/Infinity, bounded nesting."""
    if isinstance(raw, bytes):
        if b"\x00" in raw:
            raise CallbackError("payload contains a NUL byte")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CallbackError(f"payload is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    except RecursionError:
        raise CallbackError(f"payload nests deeper than {MAX_DEPTH} levels") from None
    except CallbackError:
        raise
    except ValueError:  # JSONDecodeError, and integers longer than Python converts
        raise CallbackError("payload is not valid JSON") from None
    if _depth(value) > MAX_DEPTH:
        raise CallbackError(f"payload nests deeper than {MAX_DEPTH} levels")
    return value


def is_identifier(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and _IDENTIFIER.fullmatch(value) is not None


def _identifier(event: dict[str, Any], name: str, limit: int) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise CallbackError(f"{name} missing or not a string of at most {limit} characters")
    if not _IDENTIFIER.fullmatch(value):
        raise CallbackError(f"{name} {value[:60]!r} has characters other than printable ASCII")
    return value


def parse_event(raw: bytes | str) -> dict[str, Any]:
    """The callback's fields, checked; CallbackError names what is wrong."""
    event = decode_json(raw)
    if not isinstance(event, dict):
        raise CallbackError("payload is not a JSON object")
    event_id = _identifier(event, "event_id", 100)
    if event_id.startswith(REJECTED_PREFIX):
        raise CallbackError(f"event_id prefix {REJECTED_PREFIX!r} is reserved for rejected deliveries")
    _identifier(event, "payment_ref", 64)
    if event.get("status") not in STATUSES:
        raise CallbackError(f"status {repr(event.get('status'))[:60]} is not one of {', '.join(STATUSES)}")
    amount = event.get("amount_cents")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= MAX_AMOUNT_CENTS:
        raise CallbackError(f"amount_cents {repr(amount)[:40]} is not a non-negative integer (cents) of at most 2^63-1")
    reason = event.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 200 or not reason.isprintable()):
        raise CallbackError("reason is not a printable string of at most 200 characters")
    return event
