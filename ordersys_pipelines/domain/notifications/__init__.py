"""Customer notifications: the outbox, templates, channels and dispatch."""
