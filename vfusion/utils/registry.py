"""Tiny helper for lazily registering CLI sub-commands from optional modules."""

from __future__ import annotations

import importlib


def register_from(modules: tuple[str, ...], subparsers) -> None:
    """Call ``register(subparsers)`` of each module that exists."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.register(subparsers)
