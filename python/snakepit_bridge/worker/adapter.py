"""Loading the adapter: ``package.module:Class``, imported and instantiated
once per worker, with its @tool methods."""

from __future__ import annotations

import importlib

from ..base_adapter import BaseAdapter


class AdapterError(Exception):
    """The adapter cannot be loaded; the message says why (the worker exits 3)."""


def adapter_class(path: str) -> type:
    """Import ``package.module:Class`` and return the class (not instantiated).

    AdapterError if the path is malformed, the module does not import, or
    the attribute is missing or not a class.
    """
    if ":" not in path:
        raise AdapterError(f"adapter path {path!r} must look like 'package.module:Class'")
    mod_name, _, cls_name = path.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:
        raise AdapterError(f"cannot import adapter module {mod_name!r}: {e!r}") from e
    cls = module
    for part in cls_name.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise AdapterError(f"module {mod_name!r} has no attribute {cls_name!r}")
    if not isinstance(cls, type):
        raise AdapterError(f"{path!r} is not a class")
    return cls


def load_adapter(path: str):
    """Import ``package.module:Class`` and instantiate it (one instance per worker).

    Returns ``(instance, tools)``: the tools by name. AdapterError if the
    module or class is missing, the class cannot be created, or has no tools.
    """
    cls = adapter_class(path)
    try:
        instance = cls()
    except Exception as e:
        raise AdapterError(f"creating adapter {path!r} raised {e!r}") from e
    tools = BaseAdapter.tools(instance)
    if not tools:
        raise AdapterError(f"adapter {path!r} defines no @tool methods")
    return instance, tools
