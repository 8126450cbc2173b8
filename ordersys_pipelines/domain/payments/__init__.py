"""Payments: the gateway (simulated), signed callbacks and settlement."""
