"""`keras-resnet train`: the main job. Trains a ResNet with the paper's recipe, writes
``runs/<name>/`` and exports the SavedModel; with no arguments, CIFAR ResNet-20 on digits."""

from __future__ import annotations

import sys

from keras_resnet import presets
# Already imported by the package (it registers Keras objects), so this costs nothing.
from keras_resnet.recipe import PRECISIONS, SCHEDULES

# The same defaults as keras_resnet.training's (a test checks), kept here so that building the
# parser does not import the data and training modules.
DEFAULT_MODEL = "cifar-resnet20"
DEFAULT_DATA = "digits"
DEFAULT_EPOCHS = 30
DEFAULT_BATCH_SIZE = 32


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
    parser.add_argument("--lr", type=float, default=0.1, help="initial learning rate (0.1)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="step",
                        help="learning-rate schedule: step (/10 at 50%% and 75%%), cosine, "
                             "constant (default step)")
    parser.add_argument("--warmup", action="store_true",
                        help="the paper's warm-up: lr 0.01 until training error < 80%%")
    parser.add_argument("--weight-decay", type=float, default=1e-4,
                        help="L2 weight decay on kernels (1e-4)")
    parser.add_argument("--label-smoothing", type=float, default=0.0,
                        help="label smoothing in [0, 1) (default 0)")
    parser.add_argument("--initializer", default="he_normal",
                        help="kernel initializer (default he_normal)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="float32 (default), mixed_bfloat16 or mixed_float16")
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                        help="XLA compilation (default auto)")
    parser.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                        help="stop after PATIENCE epochs without a better validation loss")
    parser.add_argument("--classes", type=int, default=None,
                        help="head size; must match the data (default: from the data)")
    parser.add_argument("--out", default="runs", help="parent of the run directory (runs)")
    parser.add_argument("--export", default="saved_models", metavar="DIR",
                        help="SavedModel base directory (saved_models)")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--name", default=None, help="run name (default MODEL-DATA)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a "
                             "terminal, else 2)")
    parser.set_defaults(func=run)


def run(args):
    """Trains, then prints where everything went."""
    if args.model not in presets.MODEL_PRESETS:  # before TensorFlow is imported
        raise ValueError(f"unknown model {args.model!r}; valid names: "
                         f"{', '.join(presets.MODEL_PRESETS)}")
    from keras_resnet.training import train

    model_options = {} if args.classes is None else {"classes": args.classes}
    result = train(
        args.model, args.data, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, schedule=args.schedule, warmup=args.warmup,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        initializer=args.initializer, precision=args.precision,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.jit_compile],
        early_stopping=args.early_stopping, out_dir=args.out,
        export_dir=None if args.no_export else args.export, name=args.name, seed=args.seed,
        verbose=(1 if sys.stdout.isatty() else 2) if args.verbose is None else args.verbose,
        model_options=model_options)
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
    return 0
