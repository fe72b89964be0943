"""`keras-resnet train`: the main job. Trains a ResNet with the paper's recipe, writes
``runs/<name>/`` and exports the SavedModel; with no arguments, CIFAR ResNet-20 on digits."""

from __future__ import annotations

import argparse
import logging
import sys

from keras_resnet import presets
from keras_resnet.constants import (DEFAULT_BATCH_SIZE, DEFAULT_DATA, DEFAULT_DETERMINISTIC,
                                    DEFAULT_EPOCHS,
                                    DEFAULT_EXPORT_DIR, DEFAULT_INITIALIZER,
                                    DEFAULT_LABEL_SMOOTHING, DEFAULT_LEARNING_RATE,
                                    DEFAULT_MODEL, DEFAULT_PRECISION, DEFAULT_RUNS_DIR,
                                    DEFAULT_SCHEDULE, DEFAULT_SEED, DEFAULT_WEIGHT_DECAY,
                                    JIT_COMPILE, JIT_COMPILE_FLAGS, PRECISIONS, SCHEDULES)


def register(subparsers):
    """Adds the `train` subcommand."""
    parser = subparsers.add_parser(
        "train", help="train a ResNet with the paper's recipe (default: ResNet-20 on digits)",
        description="Trains with SGD (momentum 0.9, weight decay 1e-4), step decay /10 at 50% "
                    "and 75% of training, augmentation in the input pipeline; writes "
                    "OUT/NAME/ (model.keras, best.keras, history.csv, curves.png, metrics.json, "
                    "logs/) and exports a SavedModel version under EXPORT/NAME/. Run the same "
                    "command again after a crash to resume from the last finished epoch. "
                    "Models: " + ", ".join(presets.MODEL_PRESETS))
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME",
                        help=f"network name (default {DEFAULT_MODEL})")
    parser.add_argument("--data", default=DEFAULT_DATA, metavar="digits|cifar10|synthetic|PATH",
                        help="data set or a folder with one sub-folder of images per class "
                             f"(default {DEFAULT_DATA})")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"training epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"images per batch (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--lr", type=float, default=DEFAULT_LEARNING_RATE,
                        help=f"initial learning rate ({DEFAULT_LEARNING_RATE})")
    parser.add_argument("--schedule", choices=SCHEDULES, default=DEFAULT_SCHEDULE,
                        help="learning-rate schedule: step (/10 at 50%% and 75%%), cosine, "
                             "constant (default step)")
    parser.add_argument("--warmup", action="store_true",
                        help="the paper's warm-up: lr 0.01 until training error < 80%%")
    parser.add_argument("--warmup-steps", type=int, default=0, metavar="STEPS",
                        help="with --schedule cosine: a linear ramp from 0 over STEPS optimizer "
                             "steps before the decay (default 0)")
    parser.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY,
                        help=f"L2 weight decay on kernels ({DEFAULT_WEIGHT_DECAY:g})")
    parser.add_argument("--label-smoothing", type=float, default=DEFAULT_LABEL_SMOOTHING,
                        help=f"label smoothing in [0, 1) (default {DEFAULT_LABEL_SMOOTHING:g})")
    parser.add_argument("--initializer", default=DEFAULT_INITIALIZER,
                        help="kernel initializer: any keras.initializers name "
                             f"(default {DEFAULT_INITIALIZER})")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help=f"{', '.join(PRECISIONS)} (default {DEFAULT_PRECISION})")
    parser.add_argument("--jit-compile", choices=JIT_COMPILE, default="auto",
                        help="XLA compilation (default auto)")
    parser.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                        help="stop after PATIENCE epochs without a better validation loss")
    parser.add_argument("--classes", type=int, default=None,
                        help="head size; must match the data (default: from the data)")
    parser.add_argument("--out", default=DEFAULT_RUNS_DIR,
                        help=f"parent of the run directory ({DEFAULT_RUNS_DIR})")
    parser.add_argument("--export", default=DEFAULT_EXPORT_DIR, metavar="DIR",
                        help=f"SavedModel base directory ({DEFAULT_EXPORT_DIR})")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--name", default=None, help="run name (default MODEL-DATA)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"random seed ({DEFAULT_SEED})")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                        default=DEFAULT_DETERMINISTIC,
                        help="TensorFlow op determinism: the same seed gives the same run "
                             "(default on)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a "
                             "terminal, else 2)")
    parser.set_defaults(func=run)


def run(args):
    """Trains, then prints where everything went."""
    from keras_resnet.training import train

    _log_to_stdout()
    model_options = {} if args.classes is None else {"classes": args.classes}
    result = train(
        args.model, args.data, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, schedule=args.schedule, warmup=args.warmup,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        initializer=args.initializer, precision=args.precision,
        jit_compile=JIT_COMPILE_FLAGS[args.jit_compile], early_stopping=args.early_stopping,
        out_dir=args.out, export_dir=None if args.no_export else args.export, name=args.name,
        seed=args.seed, deterministic=args.deterministic,
        verbose=(1 if sys.stdout.isatty() else 2) if args.verbose is None else args.verbose,
        model_options=model_options)
    _print_result(result)
    return 0


def _log_to_stdout():
    """Shows the library's progress messages (``Resuming ...``) on stdout."""
    logger = logging.getLogger("keras_resnet")
    if not any(getattr(h, "keras_resnet_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.keras_resnet_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _print_result(result):
    metrics = result.metrics
    print(f"\n{metrics['model']} on {metrics['data']}: test accuracy "
          f"{metrics['test_accuracy']:.2%} (loss {metrics['test_loss']:.4f}) after "
          f"{metrics['epochs']} epochs, {metrics['parameters']:,} parameters, "
          f"{metrics['wall_time_seconds']:.0f} s")
    print(f"  run directory  {result.run_dir}/")
    print(f"  model          {result.model_path}  (best validation: {result.best_model_path})")
    print(f"  history        {result.history_path}")
    print(f"  curves         {result.curves_path}")
    print(f"  metrics        {result.metrics_path}")
    print(f"  TensorBoard    tensorboard --logdir {result.logs_dir}")
    if result.export_path:
        print(f"  SavedModel     {result.export_path}")
