"""Arguments that several subcommands share (imported by their modules, which import no
TensorFlow while the parser is built)."""

from __future__ import annotations

import argparse

from keras_resnet.constants import DEFAULT_DETERMINISTIC, DEFAULT_SEED


def add_reproducibility_arguments(parser, same):
    """``--seed`` and ``--deterministic``, shared by the subcommands that train; ``same`` says
    what the same seed reproduces (e.g. "run")."""
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"random seed ({DEFAULT_SEED})")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                        default=DEFAULT_DETERMINISTIC,
                        help=f"TensorFlow op determinism: the same seed gives the same {same} "
                             "(default on)")
