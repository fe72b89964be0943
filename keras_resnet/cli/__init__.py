"""`keras-resnet`: the command line. Each subcommand lives in its own module of this package
with ``register(subparsers)``; the modules stay thin and call the library."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys

from keras_resnet.cli.arguments import add_reproducibility_arguments  # noqa: F401  (0.1's name)
from keras_resnet.cli.quiet import VERBOSE_ENV, quiet_tensorflow, verbose_requested

# Subcommand modules, in the order `keras-resnet --help` lists them.
COMMANDS = ("train", "evaluate", "prepare", "convert", "summary", "export", "serve", "predict",
            "tune", "bench", "manifest")
# the module of a command whose name another module of the package already has
_MODULES = {"manifest": "tfjob"}  # keras_resnet.distribute.manifest


def build_parser():
    """Returns the argparse parser with every subcommand registered; ``parser.commands`` maps
    each command to its own parser. Building it imports neither TensorFlow nor Keras."""
    parser = argparse.ArgumentParser(
        prog="keras-resnet",
        description="Residual networks for Keras 3: build, train, tune, export and serve.")
    parser.add_argument("--verbose", dest="tensorflow_logs", action="store_true",
                        help="show TensorFlow's own log lines (oneDNN, CPU features, CUDA "
                             f"probing; hidden by default); also {VERBOSE_ENV}=1")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        module = _MODULES.get(command, command)
        importlib.import_module(f"keras_resnet.cli.{module}").register(subparsers)
    parser.commands = subparsers.choices
    return parser


def flag_names(parser) -> dict:
    """{library argument name: the flag that sets it} for a subcommand's parser: each option's
    ``dest`` (``batch_size`` -> ``--batch-size``) plus the names a command module lists in its
    ``LIBRARY_NAMES`` (``learning_rate`` -> ``--lr``)."""
    names = {}
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        longest = max(action.option_strings, key=len, default=None)
        if longest and longest.startswith("--") and action.dest != "help":
            names[action.dest] = longest
    module = sys.modules.get(getattr(parser.get_default("func"), "__module__", ""), None)
    names.update(getattr(module, "LIBRARY_NAMES", {}))
    return names


def as_flags(message: str, names: dict) -> str:
    """``message`` with the library's argument names written as the command's flags
    (``batch_size must be ...`` -> ``--batch-size must be ...``). A name with an underscore is
    replaced wherever it stands alone; a plain word (``workers``) only where it opens a sentence
    as its subject (``workers must``, ``data is``) or is followed by ``=``, so that words stay
    words."""
    for name in sorted(names, key=len, reverse=True):
        alone = rf"(?<![\w\-./'\"]){re.escape(name)}(?![\w\-/'\"])"
        pattern = alone if "_" in name else \
            rf"(?:^|(?<=; )){re.escape(name)}(?= (?:must|and|is|needs?) )|" \
            rf"(?<![\w\-./'\"]){re.escape(name)}(?==)"
        message = re.sub(pattern, names[name], message)
    # "--x (--x N)": the library's own hint, now said once
    return re.sub(r"(--[\w-]+) \(\1( [^)]*)?\)", r"\1\2", message)


def os_error_message(error: OSError, args, names: dict) -> str:
    """One line for a failed file operation: the flag, its path and the reason
    (``--out /proc/x: No such file or directory``); the path that failed follows when it is
    a folder above or below the flag's path."""
    if error.filename is None or error.strerror is None:
        return str(error)
    path = os.path.normpath(os.fsdecode(error.filename))
    for dest, value in vars(args).items():
        if not isinstance(value, str) or not value or dest == "command":
            continue
        given = os.path.normpath(value)
        if path == given or os.path.dirname(path) == os.path.dirname(given) != "":
            return f"{names.get(dest, dest.upper())} {value}: {error.strerror}"
        if given.startswith(path + os.sep) or path.startswith(given + os.sep):
            return f"{names.get(dest, dest.upper())} {value}: {error.strerror}: {path}"
    return f"{path}: {error.strerror}"


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


def parse(parser, argv):
    """``parser.parse_args``; the words after ``--`` become ``args.pod_command`` of a command
    that takes a command (``manifest``)."""
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    rest = argv[split + 1:]
    if split < len(argv):
        if not getattr(args, "takes_command", False):
            parser.error(f"unrecognized arguments: {' '.join(argv[split:])}")
        args.pod_command = rest
    return args


def main(argv=None):
    """Entry point of the `keras-resnet` console script; returns the exit status."""
    parser = build_parser()
    args = parse(parser, list(sys.argv[1:] if argv is None else argv))
    quiet_tensorflow(verbose_requested(args.tensorflow_logs))
    from keras_resnet._tensorflow import TensorFlowBackendRequired, as_tensorflow_required

    def fail(message):
        print(f"keras-resnet {args.command}: error: {message}", file=sys.stderr)
        return 2

    try:
        with cli_logging():
            return args.func(args) or 0
    except (ValueError, TypeError, TensorFlowBackendRequired) as error:
        return fail(as_flags(str(error), flag_names(parser.commands[args.command])))
    except OSError as error:
        return fail(os_error_message(error, args, flag_names(parser.commands[args.command])))
    except ImportError as error:
        # A TensorFlow-only command without TensorFlow: one line naming the extra.
        missing = as_tensorflow_required(error, f"`keras-resnet {args.command}`")
        if missing is None:
            raise
        return fail(missing)


if __name__ == "__main__":
    sys.exit(main())
