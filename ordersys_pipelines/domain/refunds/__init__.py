"""Refunds: idempotent requests, gateway calls keyed by reference, batched processing."""
