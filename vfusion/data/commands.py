"""CLI: ``vfusion data {check,cache}``."""

from vfusion.utils.registry import register_from


def register(subparsers) -> None:
    register_from(("vfusion.data.data_cli",), subparsers)
