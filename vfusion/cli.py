"""The ``vfusion`` command line.

Each area of the package contributes its sub-commands through a ``register``
function in its ``commands`` module (heavy imports stay inside the handlers, so
``vfusion --help`` is quick). Errors the user can fix (bad config, missing data,
wrong checkpoint) are printed as one clear message with exit code 2; any other error as one line with
exit code 1. ``VFUSION_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from vfusion.errors import UserError
from vfusion.utils.registry import register_from

COMMAND_MODULES = (
    "vfusion.training.commands",   # pretrain-base, train, sample, export
    "vfusion.inference.tasks_cli",  # generate (image-to-video, extend, interpolate, edit)
    "vfusion.data.commands",       # data check / data cache
    "vfusion.evaluation.commands",  # evaluate, weights fetch / check
    "vfusion.studies.commands",    # study, pipeline (the main job)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfusion",
        description="Decomposed-noise video diffusion (VideoFusion) and baselines: train, sample, evaluate, study.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_from(COMMAND_MODULES, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vfusion.utils.quiet import quiet_third_party

    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_third_party()
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    debug = os.environ.get("VFUSION_DEBUG", "") not in ("", "0")
    try:
        rc = args.func(args)
    except (UserError, FileNotFoundError) as err:
        if debug:
            raise
        print(f"vfusion {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`vfusion ... | head`): stop quietly, like other tools
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        kept = getattr(args, "on_interrupt", "checkpoints written so far are intact; rerun with --resume")
        print(f"vfusion {args.command}: interrupted ({kept})", file=sys.stderr)
        return 130
    except Exception as err:  # not a recognised user mistake: one line, the traceback on request
        if debug:
            raise
        print(f"vfusion {args.command}: internal error: {type(err).__name__}: {_one_line(err)} — rerun with "
              f"VFUSION_DEBUG=1 for the traceback (please report it if your input looks right)", file=sys.stderr)
        return 1
    return int(rc or 0)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:1000] if text else type(err).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout is not a real file (tests, embedding)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
