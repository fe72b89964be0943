"""`keras-resnet bench`: benchmarks measured side by side against their references."""

from __future__ import annotations

from keras_resnet import bench


def register(subparsers):
    """Adds the `bench` subcommand."""
    parser = subparsers.add_parser(
        "bench", help="benchmarks against keras.applications, float32 and the GEMM roofline",
        description="Runs each benchmark with warm-up and interleaved repeats and prints a "
                    "table whose last column is the ratio (higher is better).")
    parser.add_argument("benchmarks", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(bench.BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats; every benchmark still runs")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the results to this JSON file")
    parser.set_defaults(func=run)


def run(args):
    """Runs the benchmarks."""
    bench.run(args.benchmarks or None, quick=args.quick, json_path=args.json)
    return 0
