"""A resource whose fields are a domain config dataclass's fields: each setting is declared once
(name, type, default) in domain/, and the resource (what the UI shows and Dagster configures)
is derived from it."""

from __future__ import annotations

import dataclasses
import typing

import dagster as dg


def _field_type(hint):
    # Dagster config has lists, not tuples.
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]
    return hint


def resource_with_fields_of(config_class: type) -> type[dg.ConfigurableResource]:
    """A ConfigurableResource base class with one field per field of `config_class`; a subclass
    gets `config` (the dataclass built from the resource's resolved values)."""
    hints = typing.get_type_hints(config_class)
    namespace: dict = {"__annotations__": {}, "__module__": config_class.__module__}
    for field in dataclasses.fields(config_class):
        namespace["__annotations__"][field.name] = _field_type(hints[field.name])
        if field.default is not dataclasses.MISSING:
            namespace[field.name] = list(field.default) if isinstance(field.default, tuple) else field.default

    def config(self):
        values = {}
        for field in dataclasses.fields(config_class):
            value = getattr(self, field.name)
            values[field.name] = tuple(value) if typing.get_origin(hints[field.name]) is tuple else value
        return config_class(**values)

    namespace["config"] = property(config, doc=f"The resource's values as a {config_class.__name__}.")
    return type(f"{config_class.__name__}Fields", (dg.ConfigurableResource,), namespace)
