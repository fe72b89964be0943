"""`keras-resnet evaluate MODEL_OR_RUN`: metrics, calibration and an error gallery with
Grad-CAM, as metrics.json, PNGs and one self-contained report.html."""

from __future__ import annotations

import sys

from keras_resnet import checks

SPLITS = ("test", "validation")


def register(subparsers):
    """Adds the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate", help="see what a model learned: metrics, calibration, Grad-CAM of mistakes",
        description="Streams a data split through a model batch by batch and writes a report "
                    "directory: metrics.json (top-1/top-5 accuracy, loss, per-class precision/"
                    "recall/F1, confusion matrix, calibration), PNG pictures and report.html "
                    "(self-contained). With --server, each batch is also sent to a served "
                    "model and the largest difference to the local answers is reported.")
    parser.add_argument("model", metavar="MODEL_OR_RUN",
                        help="a .keras file or a run directory (runs/NAME)")
    parser.add_argument("--data", default=None, metavar="digits|cifar10|synthetic|PATH",
                        help="data source as `train` takes it (default: the run's)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="which split to evaluate (default: test)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="report directory (default: RUN/evaluation, or FILE-evaluation "
                             "beside a .keras file)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per batch (default: the run's)")
    parser.add_argument("--mistakes", type=int, default=16,
                        help="how many confident mistakes the gallery shows (default: 16)")
    parser.add_argument("--server", default=None, metavar="URL",
                        help="also ask this TF Serving / `keras-resnet serve` REST URL and "
                             "report the largest |served - local| probability")
    parser.add_argument("--served-model", default=None, metavar="NAME",
                        help="the served model's name (default: the run's name)")
    parser.add_argument("--grpc", default=None, metavar="HOST:PORT",
                        help="with --server: use its gRPC API at HOST:PORT instead of REST")
    parser.set_defaults(func=run)


def run(args):
    """Evaluates and prints the headline numbers and where the report went."""
    checks.optional_positive_int(args.batch_size, "--batch-size")
    checks.positive_int(args.mistakes, "--mistakes", minimum=0, maximum=256)
    from keras_resnet.evaluation import evaluate

    result = evaluate(args.model, args.data, split=args.split, out_dir=args.out,
                      batch_size=args.batch_size, mistakes=args.mistakes, server=args.server,
                      served_model=args.served_model, grpc=args.grpc,
                      verbose=1 if sys.stdout.isatty() else 2)
    calibration = result["calibration"]
    print(f"{result['images']} images of {result['data']} ({result['split']}): "
          f"top-1 {result['top1_accuracy']:.4f}, top-5 {result['top5_accuracy']:.4f}, "
          f"loss {result['loss']:.4f}, ECE {calibration['expected_calibration_error']:.4f}")
    if result["server"] is not None:
        print(f"  served vs local  max |difference| {result['server']['max_abs_difference']:.3g}")
    print(f"  report           {result['out_dir']}/report.html")
    return 0
