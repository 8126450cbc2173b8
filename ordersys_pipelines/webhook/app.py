"""The payment callback endpoint: POST /payments/callback with the raw event as the body and its
`Ordersys-Signature` header. The signature (and its timestamp) is verified before anything is
trusted; every delivery is stored in the inbox — bad ones as rejected — and settlement applies
the good ones later. 200 for a stored or duplicate event, 400 with the reason otherwise."""

from __future__ import annotations

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ordersys_pipelines.domain.payments.callbacks import SIGNATURE_HEADER, receive
from ordersys_pipelines.domain.payments.config import GatewayConfig

MAX_BODY_BYTES = 64 * 1024


def create_app(engine: Engine, config: GatewayConfig) -> Starlette:
    async def payment_callback(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"status": "rejected", "reason": "body too large"}, status_code=413)
        # A short synchronous transaction, run off the event loop.
        def store():
            with engine.begin() as conn:
                return receive(conn, body, request.headers.get(SIGNATURE_HEADER), "webhook", config)

        receipt = await run_in_threadpool(store)
        if receipt.outcome == "rejected":
            return JSONResponse({"status": "rejected", "reason": receipt.reason}, status_code=400)
        return JSONResponse({"status": receipt.outcome, "event_id": receipt.event_id})

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[
        Route("/payments/callback", payment_callback, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])
