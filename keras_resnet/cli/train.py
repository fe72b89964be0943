"""`keras-resnet train`: the main job. Trains a ResNet with the paper's recipe, writes
``runs/<name>/`` and exports the SavedModel; with no arguments, CIFAR ResNet-20 on digits."""

from __future__ import annotations

import logging
import sys

from keras_resnet.cli.arguments import add_reproducibility_arguments
from keras_resnet.constants import DEFAULT_TRAIN_WORKER_TIMEOUT
from keras_resnet.constants import (CROPS, DEFAULT_BATCH_SIZE, DEFAULT_CACHE_MB, DEFAULT_DATA,
                                    DEFAULT_EPOCHS, DEFAULT_EXPORT_DIR,
                                    DEFAULT_FINE_TUNE_LEARNING_RATE,
                                    DEFAULT_HEAD_LEARNING_RATE, DEFAULT_INITIALIZER,
                                    DEFAULT_LABEL_SMOOTHING, DEFAULT_LEARNING_RATE,
                                    DEFAULT_MODEL, DEFAULT_PRECISION, DEFAULT_RECIPE,
                                    DEFAULT_RUNS_DIR, DEFAULT_SHUFFLE_BUFFER,
                                    DEFAULT_STRATEGY, DEFAULT_WEIGHT_DECAY, JIT_COMPILE,
                                    JIT_COMPILE_FLAGS, MODEL_NAMES, PRECISIONS, RECIPE_NAMES,
                                    SCHEDULES, STRATEGIES)


def register(subparsers):
    """Adds the `train` subcommand."""
    parser = subparsers.add_parser(
        "train", help="train a ResNet with the paper's recipe (default: ResNet-20 on digits)",
        description="Trains with a named recipe (default cifar: SGD momentum 0.9, weight decay "
                    "1e-4, step decay /10 at 50% and 75% of training; --recipe imagenet), "
                    "augmentation in the input pipeline, or fine-tunes --weights; writes "
                    "OUT/NAME/ (model.keras, best.keras, history.csv, curves.png, metrics.json, "
                    "logs/) and exports a SavedModel version under EXPORT/NAME/. Run the same "
                    "command again after a crash to resume from the last backup (every epoch, or "
                    "every --backup-every-steps N steps). "
                    "Models: " + ", ".join(MODEL_NAMES))
    _model_arguments(parser)
    _schedule_arguments(parser)
    _training_arguments(parser)
    _data_arguments(parser)
    _fine_tune_arguments(parser)
    _evaluate_argument(parser)
    _output_arguments(parser)
    _distribution_arguments(parser)
    parser.set_defaults(func=run)


def _model_arguments(parser):
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME",
                        help=f"network name (default {DEFAULT_MODEL})")
    parser.add_argument("--data", default=DEFAULT_DATA, metavar="digits|cifar10|synthetic|PATH",
                        help="data set, a folder with one sub-folder of images per class, or a "
                             "directory of TFRecord shards (keras-resnet prepare's output, "
                             f"ImageNet TFRecords) (default {DEFAULT_DATA})")
    parser.add_argument("--recipe", choices=RECIPE_NAMES, default=DEFAULT_RECIPE,
                        help="named recipe: cifar (He et al. 2015 sec. 4.2, the default) or "
                             "imagenet (batch 256, lr 0.1 x batch/256, 5 warm-up epochs + "
                             "cosine over 90, label smoothing 0.1, zero-init last BN, Inception "
                             "crop) or imagenet-step (the same, /10 at epochs 30, 60, 80 of 90); "
                             "the flags below override its values")


def _schedule_arguments(parser):
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs (cifar recipe {DEFAULT_EPOCHS})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"images per batch (default {DEFAULT_BATCH_SIZE}; imagenet recipe "
                             "256)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"initial learning rate ({DEFAULT_LEARNING_RATE}; imagenet recipe: "
                             "0.1 x batch/256)")
    parser.add_argument("--momentum", type=float, default=None,
                        help="SGD momentum (0.9)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="learning-rate schedule: step (/10 at 50%% and 75%%), cosine, "
                             "constant (cifar recipe step, imagenet cosine)")
    parser.add_argument("--warmup", action="store_true",
                        help="the paper's warm-up: lr 0.01 until training error < 80%%")
    parser.add_argument("--warmup-steps", type=int, default=None, metavar="STEPS",
                        help="with --schedule cosine or step: a linear ramp from 0 over STEPS "
                             "optimizer steps (default 0)")
    parser.add_argument("--warmup-epochs", type=int, default=None, metavar="EPOCHS",
                        help="with --schedule cosine or step: the same ramp over EPOCHS epochs "
                             "(imagenet recipes 5)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help=f"L2 weight decay on kernels, not BN or biases "
                             f"({DEFAULT_WEIGHT_DECAY:g})")
    parser.add_argument("--label-smoothing", type=float, default=None,
                        help=f"label smoothing in [0, 1) (cifar recipe "
                             f"{DEFAULT_LABEL_SMOOTHING:g}, imagenet 0.1)")


def _training_arguments(parser):
    parser.add_argument("--initializer", default=DEFAULT_INITIALIZER,
                        help="kernel initializer: any keras.initializers name "
                             f"(default {DEFAULT_INITIALIZER})")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help=f"{', '.join(PRECISIONS)} (default {DEFAULT_PRECISION})")
    parser.add_argument("--jit-compile", choices=JIT_COMPILE, default="auto",
                        help="XLA compilation (default auto)")
    parser.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                        help="stop after PATIENCE epochs without a better validation loss")
    parser.add_argument("--loop-stages", action="store_true",
                        help="run the repeated blocks of each stage as one loop over stacked "
                             "weights: build and first step no longer grow with depth (same "
                             "function as the unrolled network)")
    parser.add_argument("--recompute-grad", action="store_true",
                        help="with --loop-stages: recompute each looped block in the backward "
                             "pass (gradient checkpointing: less memory, slower steps)")
    parser.add_argument("--classes", type=int, default=None,
                        help="head size; must match the data (default: from the data)")
    parser.add_argument("--backup-every-steps", type=int, default=None, metavar="N",
                        help="back the training state up every N steps instead of every epoch "
                             "(long epochs)")


def _output_arguments(parser):
    parser.add_argument("--out", default=DEFAULT_RUNS_DIR,
                        help=f"parent of the run directory ({DEFAULT_RUNS_DIR})")
    parser.add_argument("--export", default=DEFAULT_EXPORT_DIR, metavar="DIR",
                        help=f"SavedModel base directory ({DEFAULT_EXPORT_DIR})")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--name", default=None, help="run name (default MODEL-DATA)")
    add_reproducibility_arguments(parser, "run")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a "
                             "terminal, else 2)")


def _distribution_arguments(parser):
    parser.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY,
                        help="tf.distribute strategy: multi-worker when TF_CONFIG names several "
                             "tasks, mirrored over several GPUs, else one device "
                             f"(default {DEFAULT_STRATEGY}); --batch-size is the global batch. "
                             "With KERAS_BACKEND=jax: mirrored is keras.distribution."
                             "DataParallel over all local devices (auto: when there are "
                             "several); multi-worker needs the tensorflow backend")
    parser.add_argument("--sync-bn", action="store_true",
                        help="batch normalization with cross-replica statistics (on the jax "
                             "backend they already are: nothing to do)")
    parser.add_argument("--lr-batch-size", type=int, default=None, metavar="N",
                        help="the batch --lr is given for: the rate is scaled linearly to "
                             "--batch-size (e.g. --lr 0.1 --lr-batch-size 128)")
    _worker_timeout_argument(parser)


def _worker_timeout_argument(parser):
    parser.add_argument("--worker-timeout", type=float, default=DEFAULT_TRAIN_WORKER_TIMEOUT,
                        metavar="SECONDS",
                        help="multi-worker: wait this long for every task of TF_CONFIG to start, "
                             "then stop naming the missing ones (default "
                             f"{DEFAULT_TRAIN_WORKER_TIMEOUT:g})")


def _data_arguments(parser):
    group = parser.add_argument_group("data pipeline (folders and TFRecord shards)")
    group.add_argument("--image-size", default=None, metavar="N|HxW",
                       help="image size the pipelines produce (default: dataset.json's, or the "
                            "first image's)")
    group.add_argument("--crop", choices=CROPS, default=None,
                       help="training crop: inception (random-resized crop + flip) or pad "
                            "(pad + random crop + flip) (default: inception from 64 pixels)")
    group.add_argument("--crop-fraction", type=float, default=None, metavar="F",
                       help="evaluation center crop (default 0.875 with inception, else 1)")
    group.add_argument("--rand-augment", action="store_true",
                       help="add Keras' RandAugment layer after the crop")
    group.add_argument("--mixup", type=float, default=None, metavar="ALPHA",
                       help="Keras' MixUp on training batches, Beta(ALPHA, ALPHA) weights (e.g. "
                            "0.2; default 0: off); labels become one-hot, the loss categorical")
    group.add_argument("--cutmix", type=float, default=None, metavar="F",
                       help="Keras' CutMix(factor=F) in [0, 1] on training batches (e.g. 1.0; "
                            "default 0: off); with --mixup the batches take turns")
    group.add_argument("--label-offset", type=int, default=None, metavar="N",
                       help="subtracted from stored labels (ImageNet TPU TFRecords: 1; "
                            "default: dataset.json's, else 0)")
    group.add_argument("--num-classes", type=int, default=None, metavar="N",
                       help="classes of a TFRecord directory without a dataset.json (labels "
                            "0..N-1 after --label-offset; a label outside stops training)")
    group.add_argument("--shuffle-buffer", type=int, default=None, metavar="N",
                       help=f"records in a TFRecord stream's shuffle buffer "
                            f"({DEFAULT_SHUFFLE_BUFFER})")
    group.add_argument("--cache-mb", type=float, default=None, metavar="MB",
                       help=f"largest folder whose file bytes stay in memory "
                            f"({DEFAULT_CACHE_MB} MiB)")
    group.add_argument("--strict", action="store_true",
                       help="an image folder with undecodable files is an error (default: "
                            "they are skipped and listed)")


def _evaluate_argument(parser):
    parser.add_argument("--evaluate", action="store_true",
                        help="after training, run `keras-resnet evaluate` on the run: its "
                             "report goes to OUT/NAME/evaluation/")


def _fine_tune_arguments(parser):
    group = parser.add_argument_group("pretrained weights (two-phase fine-tuning)")
    group.add_argument("--weights", default=None, metavar="PATH",
                       help="start from this weights file: a torchvision/timm checkpoint "
                            "(.safetensors, .pth) builds its own network; .keras, .weights.h5 "
                            "load into --model. Phase 1 trains the new head (backbone frozen), "
                            "phase 2 (with --fine-tune-from) the top stages too")
    group.add_argument("--fine-tune-from", default=None, metavar="STAGE",
                       help="lowest stage unfrozen in phase 2 (conv5 or 5, conv4, ...)")
    group.add_argument("--head-epochs", type=int, default=None, metavar="N",
                       help="epochs of phase 1 (default: all epochs, or half with "
                            "--fine-tune-from); phase 2 trains the rest of --epochs")
    group.add_argument("--head-lr", type=float, default=None, metavar="LR",
                       help=f"Adam learning rate of phase 1 ({DEFAULT_HEAD_LEARNING_RATE:g})")
    group.add_argument("--fine-tune-lr", type=float, default=None, metavar="LR",
                       help=f"Adam learning rate of phase 2 "
                            f"({DEFAULT_FINE_TUNE_LEARNING_RATE:g})")


def parse_image_size(text):
    """``"64"`` -> 64, ``"160x128"`` -> (160, 128); ValueError otherwise."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(part.isdigit() for part in parts):
        sizes = [int(part) for part in parts]
        return sizes[0] if len(sizes) == 1 else tuple(sizes)
    raise ValueError(f"--image-size must be N or HxW (e.g. 64 or 160x128); got {text!r}")


def _given(args, names):
    """{option: value} of the flags given (not None), under TrainConfig's names."""
    return {option: getattr(args, flag) for flag, option in names.items()
            if getattr(args, flag) is not None}


_RECIPE_FLAGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "learning_rate",
                 "momentum": "momentum", "schedule": "schedule", "warmup_steps": "warmup_steps",
                 "warmup_epochs": "warmup_epochs", "weight_decay": "weight_decay",
                 "label_smoothing": "label_smoothing", "early_stopping": "early_stopping",
                 "backup_every_steps": "backup_every_steps", "weights": "weights",
                 "fine_tune_from": "fine_tune_from", "head_epochs": "head_epochs",
                 "head_lr": "head_lr", "fine_tune_lr": "fine_tune_lr"}
_DATA_FLAGS = {"crop": "crop", "crop_fraction": "crop_fraction",
               "label_offset": "label_offset", "num_classes": "num_classes",
               "mixup": "mixup", "cutmix": "cutmix",
               "shuffle_buffer": "shuffle_buffer",
               "cache_mb": "cache_mb"}

# TrainConfig's names that differ from the flags' (keras_resnet.cli.main's messages)
LIBRARY_NAMES = {**{option: f"--{flag.replace('_', '-')}"
                    for flag, option in {**_RECIPE_FLAGS, **_DATA_FLAGS}.items()
                    if flag != option},
                 "out_dir": "--out", "export_dir": "--export"}


def run(args):
    """Trains, then prints where everything went."""
    from keras_resnet.training import train

    _log_to_stdout()
    model_options = {} if args.classes is None else {"classes": args.classes}
    if args.loop_stages:
        model_options["loop_stages"] = True
    if args.recompute_grad:
        model_options["recompute_grad"] = True
    data_options = _given(args, _DATA_FLAGS)
    if args.image_size is not None:
        data_options["image_size"] = parse_image_size(args.image_size)
    if args.rand_augment:
        data_options["rand_augment"] = True
    if args.strict:
        data_options["strict"] = True
    try:
        result = train(
            args.model, args.data, recipe=args.recipe, warmup=args.warmup,
            initializer=args.initializer, precision=args.precision,
            jit_compile=JIT_COMPILE_FLAGS[args.jit_compile],
            out_dir=args.out, export_dir=None if args.no_export else args.export,
            name=args.name, seed=args.seed, deterministic=args.deterministic,
            verbose=(1 if sys.stdout.isatty() else 2) if args.verbose is None else args.verbose,
            model_options=model_options, data_options=data_options,
            strategy=args.strategy, sync_bn=args.sync_bn, lr_batch_size=args.lr_batch_size,
            worker_timeout=args.worker_timeout,
            **_given(args, _RECIPE_FLAGS))
    except ImportError as error:  # --weights x.pth without torch: a usage error, not a crash
        raise ValueError(str(error)) from None
    distribution = result.metrics.get("distribution") or {}
    if not distribution.get("is_chief", True):
        print(f"worker {distribution['task_index']} done; the chief wrote {result.run_dir}/")
        return 0
    _print_result(result)
    if args.evaluate:
        from keras_resnet.evaluation import evaluate

        report = evaluate(result.run_dir, verbose=1 if sys.stdout.isatty() else 2)
        print(f"  evaluation     {report['out_dir']}/report.html")
    return 0


def _log_to_stdout():
    """Shows the library's progress messages (``Resuming ...``) on stdout."""
    logger = logging.getLogger("keras_resnet")
    for handler in [h for h in logger.handlers if getattr(h, "keras_resnet_cli", False)]:
        logger.removeHandler(handler)  # an earlier run's, in one process: its stdout may be gone
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.keras_resnet_cli = True
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _count(number, noun):
    """``1 epoch``, ``2 epochs``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _print_result(result):
    metrics = result.metrics
    split = metrics.get("test_split", "test")
    accuracy = "test accuracy" if split == "test" else \
        split.replace("validation", "validation accuracy", 1)
    print(f"\n{metrics['model']} on {metrics['data']}: {accuracy} "
          f"{metrics['test_accuracy']:.2%} (loss {metrics['test_loss']:.4f}) after "
          f"{_count(metrics['epochs'], 'epoch')}, {metrics['parameters']:,} parameters, "
          f"{metrics['wall_time_seconds']:.0f} s")
    distribution = metrics.get("distribution")
    if distribution:  # fine-tuning runs record none
        engine = f" ({distribution['engine']})" if distribution.get("engine") else ""
        print(f"  strategy       {distribution['strategy']}{engine}: {distribution['replicas']} "
              f"replica(s) on {distribution['workers']} worker(s), learning rate "
              f"{metrics['learning_rate_used']:g}")
    print(f"  run directory  {result.run_dir}/")
    print(f"  model          {result.model_path}  (best validation: {result.best_model_path})")
    print(f"  history        {result.history_path}")
    print(f"  curves         {result.curves_path}")
    print(f"  metrics        {result.metrics_path}")
    print(f"  TensorBoard    tensorboard --logdir {result.logs_dir}")
    if result.export_path:
        print(f"  SavedModel     {result.export_path}")
