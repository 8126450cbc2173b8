"""The payment callback endpoint: POST /payments/callback with the raw event as the body and its
`Ordersys-Signature` header. The signature (and its timestamp) is verified before anything is
trusted; every delivery is stored in the inbox — a bad one as a bounded rejected record — and
settlement applies the good ones later. 200 for a stored or duplicate event, 4xx with the
reason otherwise, never 500 for anything the sender controls.

The body is never read beyond 64 KB: a larger Content-Length is refused before reading, a body
without one (chunked) or longer than it claims stops being read at the limit, and a body that
does not arrive in full within `body_timeout_seconds` is refused too. A refusal closes the
connection, so the rest of a huge upload is not read either.
"""

from __future__ import annotations

import asyncio
from functools import partial

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ordersys_pipelines.domain.payments.callbacks import (
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    deliver,
    receive,
    record_rejection,
    rejected_entry,
)
from ordersys_pipelines.domain.payments.config import GatewayConfig

SOURCE = "webhook"
JSON_TYPES = ("application/json",)


class BodyRefused(Exception):
    """A delivery refused while its body was read; `received` is what was read of it."""

    def __init__(self, status: int, reason: str, received: bytes = b"", size: int | None = None):
        super().__init__(reason)
        self.status, self.reason, self.received, self.size = status, reason, received, size


def _declared_length(request: Request) -> int | None:
    """The Content-Length, refused before reading when it is not a number or over the limit."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isascii() or not declared.isdigit() or len(declared) > 18:
        raise BodyRefused(400, f"Content-Length {declared[:40]!r} is not a byte count")
    if int(declared) > MAX_BODY_BYTES:
        raise BodyRefused(413, f"Content-Length {int(declared)} exceeds the {MAX_BODY_BYTES}-byte limit",
                          size=int(declared))
    return int(declared)


def _check_content_type(request: Request, body: bytes) -> None:
    """JSON in UTF-8, or no content type at all (a raw event, as `ordersys payments callback` takes)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media_type, _, params = content_type.partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if params.strip() else "utf-8"
    if media_type.strip().lower() not in JSON_TYPES or charset not in ("utf-8", "utf8"):
        raise BodyRefused(415, f"content type {content_type[:80]!r} is not application/json (UTF-8)", body)


async def read_body(request: Request, timeout_seconds: float) -> bytes:
    """The body, at most MAX_BODY_BYTES of it, within `timeout_seconds`; BodyRefused otherwise."""
    _declared_length(request)
    parts: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(timeout_seconds):
            async for chunk in request.stream():
                received += len(chunk)
                if received > MAX_BODY_BYTES:
                    head = b"".join(parts) + chunk
                    raise BodyRefused(413, f"body larger than {MAX_BODY_BYTES} bytes (stopped reading there)",
                                      head[:MAX_BODY_BYTES], received)
                parts.append(chunk)
    except TimeoutError:
        raise BodyRefused(408, f"body not received within {timeout_seconds:g} s ({received} bytes arrived)",
                          b"".join(parts)) from None
    except ClientDisconnect:
        raise BodyRefused(400, f"client disconnected after {received} bytes", b"".join(parts)) from None
    body = b"".join(parts)
    _check_content_type(request, body)
    return body


def create_app(engine: Engine, config: GatewayConfig, *, body_timeout_seconds: float = 10.0) -> Starlette:
    async def payment_callback(request: Request) -> JSONResponse:
        header = request.headers.get(SIGNATURE_HEADER)
        remote = request.client.host if request.client else None
        try:
            body = await read_body(request, body_timeout_seconds)
        except BodyRefused as refused:
            entry = rejected_entry(refused.received, header, refused.reason, size=refused.size, remote_addr=remote)
            await run_in_threadpool(deliver, engine, partial(record_rejection, entry=entry, source=SOURCE), config)
            # Closing the connection stops uvicorn from reading (and discarding) the rest of the body.
            return JSONResponse({"status": "rejected", "reason": refused.reason}, status_code=refused.status,
                                headers={"Connection": "close"})
        # A short synchronous transaction, run off the event loop.
        receipt = await run_in_threadpool(
            deliver, engine, partial(receive, raw_payload=body, signature_header=header, source=SOURCE,
                                     config=config, remote_addr=remote), config,
        )
        if receipt.outcome == "rejected":
            return JSONResponse({"status": "rejected", "reason": receipt.reason}, status_code=400)
        return JSONResponse({"status": receipt.outcome, "event_id": receipt.event_id})

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[
        Route("/payments/callback", payment_callback, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])
