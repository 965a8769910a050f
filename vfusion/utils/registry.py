"""Lazy registries: CLI sub-commands from optional modules, and name -> "module:attr" tables."""

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


def load_entry(target: str):
    """The object named by ``"package.module:attribute"`` (imported on first use)."""
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def choose(registry: dict, name: str, key: str):
    """``registry[name]``, or a :class:`vfusion.errors.UserError` naming the config key and the choices."""
    if name not in registry:
        from vfusion.errors import UserError

        raise UserError(f"{key} is '{name}'; expected one of {', '.join(registry)}")
    return registry[name]
