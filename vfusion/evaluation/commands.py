"""CLI: ``vfusion evaluate`` and ``vfusion weights {fetch,check}``."""

from vfusion.utils.registry import register_from


def register(subparsers) -> None:
    register_from(("vfusion.evaluation.weights_cli", "vfusion.evaluation.evaluate_cli"), subparsers)
