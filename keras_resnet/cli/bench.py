"""`keras-resnet bench`: runs the benchmark suite of a source checkout (``benchmarks/bench.py``).

The benchmarks are a development tool and are not installed with the package; this entry only
finds the script next to the package and runs it in a fresh Python process.
"""

from __future__ import annotations

import os
import subprocess
import sys

from keras_resnet.constants import BENCHMARKS

# Where a source checkout keeps the suite: <checkout>/benchmarks/bench.py beside keras_resnet/.
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "benchmarks", "bench.py")


def register(subparsers):
    """Adds the `bench` subcommand."""
    parser = subparsers.add_parser(
        "bench", help="benchmarks against keras.applications, float32 and the GEMM roofline "
                      "(source checkout only)",
        description="Runs benchmarks/bench.py of the source checkout: each benchmark with "
                    "warm-up and interleaved repeats, then a table whose last column is the "
                    "ratio (higher is better).")
    parser.add_argument("benchmarks", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats; every benchmark still runs")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the results to this JSON file")
    parser.set_defaults(func=run)


def run(args):
    """Runs the script; returns its exit status.

    Raises:
        FileNotFoundError: this installation has no source checkout beside it.
        TensorFlowRequired: TensorFlow is not installed.
    """
    if not os.path.isfile(SCRIPT):
        raise FileNotFoundError(
            f"the benchmarks are not installed with the package; they live in a source checkout "
            f"as benchmarks/bench.py (looked for {SCRIPT}). Clone the repository and run "
            "`python benchmarks/bench.py --help`")
    from keras_resnet._tensorflow import require_tensorflow

    require_tensorflow("`keras-resnet bench` (benchmarks/bench.py)")
    argv = [*args.benchmarks, *(["--quick"] if args.quick else []),
            *(["--json", args.json] if args.json else [])]
    return subprocess.run([sys.executable, SCRIPT, *argv], check=False).returncode
