"""`keras-resnet`: the command line. Each subcommand lives in its own module of this package
with ``register(subparsers)``; the modules stay thin and call the library."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys

# Subcommand modules, in the order `keras-resnet --help` lists them.
COMMANDS = ("train", "evaluate", "prepare", "convert", "summary", "export", "serve", "predict",
            "tune", "bench")


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


@contextlib.contextmanager
def cli_logging():
    """One format for the command's log lines: the package's records (``keras_resnet.*``) go
    to plain ``%(message)s`` handlers of the package logger, and only there.

    They do not propagate to the root logger while the command runs: TensorFlow logs through
    absl, whose first call gives the root logger Python's default handler (``logging.basicConfig``,
    ``INFO:name:message``) and would print each of our lines a second time in that format.
    INFO lines (shown where a subcommand turns them on: ``train``, ``serve``) go to stdout,
    warnings to stderr. A subcommand may replace these handlers (``train``'s own plain stdout
    handler); the logger's handlers, level and ``propagate`` are restored when it ends.
    """
    package = logging.getLogger("keras_resnet")
    saved = (package.propagate, package.level)
    formatter = logging.Formatter("%(message)s")
    # Progress (INFO) on stdout, warnings on stderr, as before this handler existed.
    for stream, keep in ((sys.stdout, lambda record: record.levelno < logging.WARNING),
                         (sys.stderr, lambda record: record.levelno >= logging.WARNING)):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(keep)
        handler.keras_resnet_cli = True  # the mark subcommands replace (cli/train.py)
        package.addHandler(handler)
    package.propagate = False
    try:
        yield
    finally:
        for old in [h for h in package.handlers if getattr(h, "keras_resnet_cli", False)]:
            package.removeHandler(old)
        package.propagate = saved[0]
        package.setLevel(saved[1])


def main(argv=None):
    """Entry point of the `keras-resnet` console script; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from keras_resnet._tensorflow import TensorFlowBackendRequired, as_tensorflow_required

    try:
        with cli_logging():
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
