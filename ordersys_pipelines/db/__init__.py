"""Database layer: schema, engine and migrations."""
