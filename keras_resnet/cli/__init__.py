"""`keras-resnet`: the command line. Each subcommand lives in its own module of this package
with ``register(subparsers)``; the modules stay thin and call the library."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommand modules, in the order `keras-resnet --help` lists them.
COMMANDS = ("train", "prepare", "convert", "summary", "export", "serve", "predict", "tune",
            "bench")


def add_reproducibility_arguments(parser, same):
    """``--seed`` and ``--deterministic``, shared by the subcommands that train; ``same`` says
    what the same seed reproduces (e.g. "run")."""
    from keras_resnet.constants import DEFAULT_DETERMINISTIC, DEFAULT_SEED

    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"random seed ({DEFAULT_SEED})")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                        default=DEFAULT_DETERMINISTIC,
                        help=f"TensorFlow op determinism: the same seed gives the same {same} "
                             "(default on)")


def build_parser():
    """Returns the argparse parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="keras-resnet",
        description="Residual networks for Keras 3: build, train, tune, export and serve.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        importlib.import_module(f"keras_resnet.cli.{command}").register(subparsers)
    return parser


def main(argv=None):
    """Entry point of the `keras-resnet` console script; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from keras_resnet._tensorflow import TensorFlowBackendRequired, as_tensorflow_required

    try:
        return args.func(args) or 0
    except (ValueError, TypeError, FileNotFoundError, FileExistsError,
            TensorFlowBackendRequired) as error:
        print(f"keras-resnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        # A TensorFlow-only command without TensorFlow: one line naming the extra.
        missing = as_tensorflow_required(error, f"`keras-resnet {args.command}`")
        if missing is None:
            raise
        print(f"keras-resnet {args.command}: error: {missing}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
