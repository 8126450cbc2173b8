"""HTTP endpoints that receive events from outside (the payment gateway's callbacks)."""
